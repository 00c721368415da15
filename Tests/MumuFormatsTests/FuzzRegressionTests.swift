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

    /// A memoized 1,000,000-character string used as a dict key 10,000 times (SETITEM, DICT,
    /// OrderedDict of a dict, OrderedDict of pairs): every use hashed it whole (about a minute
    /// here). Key bytes are now charged to the unpickler's budget, so this is refused at once.
    func testMemoizedLongDictKeyIsChargedToTheBudget() throws {
        let prefix: [UInt8] = [0x80, 0x02] + binunicode([UInt8](repeating: 0x61, count: 1_000_000)) + [0x71, 0, 0x30]
        let ordered = Array("ccollections\nOrderedDict\n".utf8) + [0x71, 1, 0x30]
        let cases: [(String, [UInt8], [UInt8])] = [
            ("SETITEM", prefix + [0x7D], [0x68, 0, 0x4E, 0x73]),                     // GET key, None, SETITEM
            ("DICT", prefix, [0x28, 0x68, 0, 0x4E, 0x64, 0x30]),                     // MARK key None DICT; POP
            ("OrderedDict(dict)", prefix + ordered + [0x7D, 0x68, 0, 0x4E, 0x73, 0x71, 2, 0x30],
             [0x68, 1, 0x68, 2, 0x85, 0x52, 0x30]),                                  // OrderedDict(d); POP
            ("OrderedDict(pairs)", prefix + ordered + [0x68, 0, 0x4E, 0x86, 0x85, 0x71, 2, 0x30],
             [0x68, 1, 0x68, 2, 0x85, 0x52, 0x30]),                                  // OrderedDict(((key, None),)); POP
        ]
        for (name, head, step) in cases {
            var p = head
            for _ in 0..<10_000 { p += step }
            p += [0x4E, 0x2E]
            switch unpickleTimed(p) {
            case .success: XCTFail("\(name): a long key used 10,000 times is accepted")
            case .failure(let error): XCTAssertTrue("\(error)".contains("decompression bomb"), "\(name): \(error)")
            }
        }
        // Long keys used once each, as in a real state dict, stay well within the budget.
        var p: [UInt8] = [0x80, 0x02, 0x7D, 0x28]
        for i in 0..<1000 { p += binunicode(Array("model.diffusion_model.layer\(i).".utf8) + [UInt8](repeating: 0x62, count: 200)) + [0x4E] }
        p += [0x75, 0x2E]
        XCTAssertEqual(try Unpickler.unpickle(p, path: "fuzz").dicts.first?.count, 1000)
    }
}
