import XCTest
import CBLAS
import CZstd
import CPNG
import CJPEG

/// The four native libraries are found through pkg-config, link, and do real work.
final class SystemLibraryTests: XCTestCase {
    func testOpenBLASMultiplies() {
        let a: [Float] = [1, 2, 3, 4, 5, 6]      // 2x3
        let b: [Float] = [7, 8, 9, 10, 11, 12]   // 3x2
        var c = [Float](repeating: 0, count: 4)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 3, 1, a, 3, b, 2, 0, &c, 2)
        XCTAssertEqual(c, [58, 64, 139, 154])
    }

    func testZstdRoundTrips() {
        let input = [UInt8](repeating: 7, count: 10_000) + Array(0..<200).map { UInt8($0) }
        var compressed = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        let n = ZSTD_compress(&compressed, compressed.count, input, input.count, 3)
        XCTAssertEqual(ZSTD_isError(n), 0)
        XCTAssertLessThan(n, input.count / 10)
        var output = [UInt8](repeating: 0, count: input.count)
        let m = ZSTD_decompress(&output, output.count, compressed, n)
        XCTAssertEqual(m, input.count)
        XCTAssertEqual(output, input)
    }

    func testLibpngIsVersion16() {
        let v = png_access_version_number()
        XCTAssertGreaterThanOrEqual(v, 10600)
    }

    func testLibjpegLinksAndReportsErrorsWithoutExiting() {
        XCTAssertGreaterThanOrEqual(JPEG_LIB_VERSION, 62)
        // Garbage after an SOI marker: libjpeg's error goes through the shim's longjmp, not exit().
        let bad: [UInt8] = [0xFF, 0xD8, 0xFF, 0x00, 0x01, 0x02, 0x03]
        var img = mumu_jpeg_image()
        var err = [CChar](repeating: 0, count: 256)
        XCTAssertEqual(mumu_jpeg_decode(bad, bad.count, 100, 10000, &img, &err, err.count), 1)
        XCTAssertFalse(String(cString: err).isEmpty)
    }
}
