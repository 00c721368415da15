import Foundation
import XCTest
import MumuFormats

/// Inputs found while fuzzing (fuzz/README.md) that made a parser misbehave, fed again here.
/// Each is generated in the test (they are megabytes) exactly as fuzz/make_slow_inputs.py writes it.
final class FuzzRegressionTests: XCTestCase {
    private func binunicode(_ bytes: [UInt8]) -> [UInt8] {
        [0x58] + withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { Array($0) } + bytes
    }

    private func binbytes(_ bytes: [UInt8]) -> [UInt8] {
        [0x42] + withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { Array($0) } + bytes
    }

    /// Runs the unpickler and fails if it takes more than `limit` seconds (before the fixes these
    /// inputs took minutes; after, milliseconds).
    private func unpickleTimed(_ bytes: [UInt8], limit: TimeInterval = 10, file: StaticString = #filePath,
                               line: UInt = #line) -> Result<Pickle, Error> {
        let start = Date()
        let result = Result { try Unpickler.unpickle(bytes, path: "fuzz") }
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertLessThan(elapsed, limit, "unpickling \(bytes.count) bytes took \(elapsed) s", file: file, line: line)
        return result
    }

    /// `numpy.core.multiarray.scalar(dtype, data)` called 20,000 times with the same memoized
    /// 500,000-character data (as a str, then as bytes) or with a memoized 500,000-character
    /// descr: each call used to copy the whole string (quadratic time, about a minute here).
    func testNumpyScalarWithAMemoizedLongArgumentIsNotQuadratic() throws {
        let long = [UInt8](repeating: 0x61, count: 500_000)
        let cases: [(descr: [UInt8], data: [UInt8])] = [
            (Array("i8".utf8), binunicode(long)),
            (Array("i8".utf8), binbytes(long)),
            ([UInt8(ascii: "<")] + long, binunicode(Array("\u{1}\0\0\0\0\0\0\0".utf8))),
        ]
        for (n, c) in cases.enumerated() {
            var p: [UInt8] = [0x80, 0x02] + Array("cnumpy.core.multiarray\nscalar\n".utf8) + [0x71, 1, 0x30]
            p += Array("cnumpy\ndtype\n".utf8) + binunicode(c.descr) + [0x85, 0x52, 0x71, 2, 0x30]
            p += c.data + [0x71, 3, 0x30]
            for _ in 0..<20_000 { p += [0x68, 1, 0x68, 2, 0x68, 3, 0x86, 0x52, 0x30] }   // scalar(dtype, data); POP
            p += [0x68, 1, 0x68, 2, 0x68, 3, 0x86, 0x52, 0x2E]                             // the last one is the root
            switch unpickleTimed(p) {
            case .success(let pickle):
                guard case .object = pickle.root else { return XCTFail("case \(n): \(pickle.summary(pickle.root))") }
            case .failure(let error): XCTFail("case \(n): \(error)")
            }
        }
        // Short data still decodes: numpy.int64(5) as protocol 2 writes it (a latin-1 str).
        var p: [UInt8] = [0x80, 0x02] + Array("cnumpy.core.multiarray\nscalar\n".utf8)
        p += Array("cnumpy\ndtype\n".utf8) + binunicode(Array("i8".utf8)) + [0x85, 0x52]
        p += binunicode(Array("\u{5}\0\0\0\0\0\0\0".utf8)) + [0x86, 0x52, 0x2E]
        XCTAssertEqual(try Unpickler.unpickle(p, path: "fuzz").root, .int(5))
    }
}
