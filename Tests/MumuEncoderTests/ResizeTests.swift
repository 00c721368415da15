import Foundation
import MumuEncoder
import MumuSampler
import XCTest

final class ResizeTests: XCTestCase {
    /// Against Pillow 13's Image.resize(size, BILINEAR) on random and smooth images, up and down, odd sizes,
    /// one axis at a time. Tolerance 0: the arithmetic (double coefficients, 22-bit fixed point, rounding) is
    /// Pillow's own; the bound is 1/255.
    func testBilinearMatchesPIL() throws {
        let manifest = try EncoderFixtures.json(EncoderFixtures.image("manifest.json"))
        let cases = try XCTUnwrap(manifest["resize"]?.arrayValue)
        var worst = 0
        for c in cases {
            let w = try XCTUnwrap(c["width"]?.intValue), h = try XCTUnwrap(c["height"]?.intValue)
            let tw = try XCTUnwrap(c["targetWidth"]?.intValue), th = try XCTUnwrap(c["targetHeight"]?.intValue)
            let input = RGBImage(width: w, height: h, pixels: try EncoderFixtures.bytes(EncoderFixtures.image(c["input"]!.stringValue!)))
            let expected = try EncoderFixtures.bytes(EncoderFixtures.image(c["output"]!.stringValue!))
            let out = try Resample.resize(input, width: tw, height: th)
            XCTAssertEqual([out.width, out.height], [tw, th])
            let d = zip(out.pixels, expected).map { abs(Int($0) - Int($1)) }.max() ?? 0
            worst = max(worst, d)
            XCTAssertEqual(d, 0, "\(w)x\(h) -> \(tw)x\(th): max difference \(d)")
        }
        print("ResizeTests: \(cases.count) cases, max |diff| vs PIL \(worst)/255")
    }

    /// Larger resizes at MUMU's sizes (1920x1080 -> 448x252, portrait 1080x1920 -> 252x448, 640x480 -> 980x742,
    /// upscales, vertical-first cases), compared by the FNV-1a
    /// hash of PIL's output (too big to commit): tolerance 0, as above.
    func testLargeResizesMatchPILByHash() throws {
        let manifest = try EncoderFixtures.json(EncoderFixtures.image("manifest.json"))
        for c in try XCTUnwrap(manifest["resizeHashed"]?.arrayValue) {
            let w = c["width"]!.intValue!, h = c["height"]!.intValue!
            let tw = c["targetWidth"]!.intValue!, th = c["targetHeight"]!.intValue!
            let out = try Resample.resize(RGBImage(width: w, height: h, pixels: Self.formula(w, h)), width: tw, height: th)
            var hash: UInt64 = 0xCBF2_9CE4_8422_2325
            for b in out.pixels { hash = (hash ^ UInt64(b)) &* 0x100_0000_01B3 }
            XCTAssertEqual(String(hash, radix: 16).leftPadded(16), c["fnv1a64"]?.stringValue, "\(w)x\(h) -> \(tw)x\(th)")
        }
    }

    /// Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many pixels as the
    /// width (python-pillow#9549); the 8-bit intermediate depends on the order. Cases on both sides of the rule
    /// and on its boundary (100x100 -> 75x49 vertical first, -> 75x50 horizontal first). Tolerance 0.
    func testPassOrderMatchesPIL() throws {
        let manifest = try EncoderFixtures.json(EncoderFixtures.image("manifest.json"))
        var report = [String]()
        for c in try XCTUnwrap(manifest["resizeOrder"]?.arrayValue) {
            let w = c["width"]!.intValue!, h = c["height"]!.intValue!
            let tw = c["targetWidth"]!.intValue!, th = c["targetHeight"]!.intValue!
            let out = try Resample.resize(RGBImage(width: w, height: h, pixels: Self.formula(w, h)), width: tw, height: th)
            let expected = try EncoderFixtures.bytes(EncoderFixtures.image(c["output"]!.stringValue!))
            XCTAssertEqual(out.pixels.count, expected.count)
            let diffs = zip(out.pixels, expected).map { abs(Int($0) - Int($1)) }
            let d = diffs.max() ?? 0
            report.append("\(w)x\(h)->\(tw)x\(th): max \(d), \(diffs.filter { $0 > 0 }.count)/\(diffs.count) samples differ")
            XCTAssertEqual(d, 0, "\(w)x\(h) -> \(tw)x\(th)")
        }
        print("ResizeTests pass-order cases: " + report.joined(separator: "; "))
    }

    static func formula(_ w: Int, _ h: Int) -> [UInt8] {
        var px = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            for x in 0..<w {
                for ch in 0..<3 { px[(y * w + x) * 3 + ch] = UInt8((x * x * 7 + y * 13 + ch * 51 + (x * y) % 97) % 256) }
            }
        }
        return px
    }

    func testSameSizeAndBadSizes() throws {
        let img = RGBImage(width: 5, height: 3, pixels: (0..<45).map { UInt8($0) })
        XCTAssertEqual(try Resample.resize(img, width: 5, height: 3), img)
        XCTAssertThrowsError(try Resample.resize(img, width: 0, height: 3))
        XCTAssertThrowsError(try Resample.resize(img, width: 20000, height: 3))
        XCTAssertThrowsError(try Resample.resize(RGBImage(width: 5, height: 3, pixels: [1, 2]), width: 2, height: 2))
    }

    func testMumuTargetSize() throws {
        func t(_ w: Int, _ h: Int, _ n: Int = 448) throws -> [Int] {
            let s = try MumuImageSize.target(width: w, height: h, imageSize: n)
            return [s.width, s.height]
        }
        XCTAssertEqual(try t(448, 448), [448, 448])
        XCTAssertEqual(try t(100, 100), [448, 448])            // smaller images are scaled up
        XCTAssertEqual(try t(640, 480), [448, 336])            // 480 * 0.7 = 336 = 24 x 14
        XCTAssertEqual(try t(480, 640), [336, 448])
        XCTAssertEqual(try t(300, 1000), [140, 448])           // 134.4 -> 9.6 patches -> 10
        XCTAssertEqual(try t(1000, 10), [448, 14])             // at least one patch
        XCTAssertEqual(try t(448, 21), [448, 28])              // 1.5 patches: halves round up
        XCTAssertEqual(try t(448, 20), [448, 14])              // 1.43 patches
        XCTAssertEqual(try t(1920, 1080, 980), [980, 546])     // 551.25 -> 39.375 -> 39 x 14
        XCTAssertEqual(try MumuImageSize.patchCount(width: 640, height: 480), 32 * 24)
        XCTAssertEqual(try MumuImageSize.patchCount(width: 1, height: 1), 32 * 32)   // 1,024 tokens at most
        for bad in [0, 450, -14, 20000] {
            XCTAssertThrowsError(try MumuImageSize.target(width: 10, height: 10, imageSize: bad)) { e in
                XCTAssertEqual(e as? MumuImageSize.SizeError, .invalidImageSize(bad))
            }
        }
        XCTAssertThrowsError(try MumuImageSize.target(width: 0, height: 10))
        // Already at its size: returned as is, no resampling.
        let img = RGBImage(width: 28, height: 14, pixels: (0..<(28 * 14 * 3)).map { UInt8($0 % 251) })
        XCTAssertEqual(try MumuImageSize.resize(img, imageSize: 28), img)
    }

    /// The whole chain (load, resize, rescale, normalize) against Idefics2ImageProcessorPil's pixel_values.
    /// Tolerance 1e-6: both rescale by 1/255 in double, round to f32, and normalize in f32; the
    /// only freedom is the order numpy applies the f32 operations in.
    func testPixelValuesMatchTheProcessor() throws {
        let manifest = try EncoderFixtures.json(EncoderFixtures.image("manifest.json"))
        for c in try XCTUnwrap(manifest["processor"]?.arrayValue) {
            let file = c["file"]!.stringValue!, w = c["width"]!.intValue!, h = c["height"]!.intValue!
            let img = try Resample.resize(try ImageLoader.load(EncoderFixtures.image(file)), width: w, height: h)
            let values = Resample.pixelValues(img)
            let raw = try EncoderFixtures.bytes(EncoderFixtures.image(c["pixelValues"]!.stringValue!))
            let expected = raw.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            XCTAssertEqual(values.count, 3 * w * h)
            XCTAssertEqual(expected.count, values.count)
            let d = zip(values, expected).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(d, 1e-6, "\(file): max difference \(d)")
        }
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

final class PreparedImageTests: XCTestCase {
    func testPreparedImage() throws {
        let path = EncoderFixtures.image("exif6.jpg")     // 16x11 stored, 11x16 after orientation 6
        let p = try PreparedImage(path: path, imageSize: 28)
        XCTAssertEqual([p.originalWidth, p.originalHeight], [11, 16])
        XCTAssertEqual([p.width, p.height], [14, 28])      // 11 * 28 / 16 = 19.25 -> 1.375 patches -> 1
        XCTAssertEqual(p.patchGrid.rows, 2)
        XCTAssertEqual(p.patchGrid.columns, 1)
        XCTAssertEqual(p.patchCount, 2)
        XCTAssertEqual(p.pixelValues.count, 3 * 28 * 14)
        XCTAssertEqual(p.sha256.count, 64)
        let direct = Resample.pixelValues(try Resample.resize(try ImageLoader.load(path), width: 14, height: 28))
        XCTAssertEqual(p.pixelValues, direct)
        XCTAssertThrowsError(try PreparedImage(path: path, imageSize: 30))
    }
}
