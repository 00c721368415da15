import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuTensor

final class SafetensorsTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTemporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    // MARK: reading and writing

    func testRoundTripPreservesNamesShapesBytesAndMetadata() throws {
        let path = dir + "/a.safetensors"
        try writeTensors(path, [("b.weight", [2, 3], [1, 2, 3, 4, 5, 6]), ("a.bias", [3], [-1, 0.5, 7]),
                                ("scalar", [], [42]), ("empty", [0, 4], [])],
                         dtype: .f16, metadata: ["format": "pt", "modelspec.title": "Ünïcode \"title\"\n"])
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.metadata, ["format": "pt", "modelspec.title": "Ünïcode \"title\"\n"])
        XCTAssertEqual(Set(f.names), ["a.bias", "b.weight", "scalar", "empty"])
        XCTAssertEqual(try f.tensor("b.weight").floats(), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try f.tensor("b.weight").info.shape, [2, 3])
        XCTAssertEqual(try f.tensor("a.bias").floats(), [-1, 0.5, 7])
        XCTAssertEqual(try f.tensor("scalar").info.shape, [])
        XCTAssertEqual(try f.tensor("scalar").floats(), [42])
        XCTAssertEqual(try f.tensor("empty").bytes.count, 0)
        XCTAssertEqual(f.header.dataStart % 8, 0, "header padded to a multiple of 8")
        XCTAssertThrowsError(try f.tensor("nope")) { XCTAssertEqual($0 as? FormatError, .missingTensor(path: path, tensor: "nope")) }
    }

    func testWriterOrdersByDtypeThenNameSoEveryTensorIsAligned() throws {
        let infos = [TensorInfo(name: "z", dtype: .u8, shape: [3]), TensorInfo(name: "b", dtype: .f32, shape: [1]),
                     TensorInfo(name: "a", dtype: .f16, shape: [1]), TensorInfo(name: "c", dtype: .i64, shape: [1]),
                     TensorInfo(name: "a2", dtype: .f32, shape: [2])]
        let layout = try SafetensorsWriter.layout(infos, metadata: [:])
        XCTAssertEqual(layout.entries.map(\.info.name), ["c", "a2", "b", "a", "z"])
        for e in layout.entries { XCTAssertEqual(e.range.lowerBound % e.info.dtype.alignment, 0, e.info.name) }
        XCTAssertEqual(layout.prefix.count % 8, 0)
    }

    func testUnfinishedWriterLeavesNoFileAndRefusesToOverwrite() throws {
        let path = dir + "/out.safetensors"
        do {
            let w = try SafetensorsWriter(path: path, tensors: [TensorInfo(name: "x", dtype: .f32, shape: [1])])
            XCTAssertThrowsError(try w.finish())   // x never written
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "no temporary file left behind")
        try writeTensors(path, [("x", [1], [1])])
        XCTAssertThrowsError(try SafetensorsWriter(path: path, tensors: [])) { error in
            XCTAssertTrue("\(error)".contains("already exists"), "\(error)")
        }
        let w = try SafetensorsWriter(path: path, tensors: [TensorInfo(name: "y", dtype: .f32, shape: [1])], overwrite: true)
        try w.write(TensorData.owned(TensorInfo(name: "y", dtype: .f32, shape: [1]), bytes: [0, 0, 128, 63]))
        try w.finish()
        XCTAssertEqual(try SafetensorsFile(path: path).names, ["y"])
    }

    func testWriterRejectsWrongSizesAndDoubleWrites() throws {
        let w = try SafetensorsWriter(path: dir + "/o.safetensors", tensors: [TensorInfo(name: "x", dtype: .f32, shape: [2])])
        defer { w.abort() }
        let eight = [UInt8](repeating: 0, count: 8)
        XCTAssertThrowsError(try eight.withUnsafeBytes { try w.write("x", UnsafeRawBufferPointer(rebasing: $0[0..<4])) })
        XCTAssertThrowsError(try eight.withUnsafeBytes { try w.write("y", $0) })
        try eight.withUnsafeBytes { try w.write("x", $0) }
        XCTAssertThrowsError(try eight.withUnsafeBytes { try w.write("x", $0) })
    }

    func testShardedWriteAndRead() throws {
        let tensors: [(String, [Int], [Float])] = (0..<7).map { ("layer.\($0).weight", [4, 4], (0..<16).map { Float($0) * 0.25 }) }
        let infos = tensors.map { TensorInfo(name: $0.0, dtype: .f32, shape: $0.1) }
        let w = try ShardedSafetensorsWriter(path: dir + "/model.safetensors", tensors: infos, metadata: ["format": "pt"], maxShardSize: 150)
        for t in tensors { try w.write(TensorData.owned(TensorInfo(name: t.0, dtype: .f32, shape: t.1), bytes: try Convert.fromF32Array(t.2, .f32))) }
        try w.finish()
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        XCTAssertEqual(files, ["model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                               "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors",
                               "model.safetensors.index.json"])
        let set = try ShardedSafetensors(indexPath: dir + "/model.safetensors.index.json")
        XCTAssertEqual(Set(set.names), Set(infos.map(\.name)))
        XCTAssertEqual(try set.tensor("layer.6.weight").floats(), tensors[6].2)
        XCTAssertEqual(set.metadata["format"], "pt")
        XCTAssertEqual(ShardedSafetensors.indexPath(forShard: dir + "/model-00002-of-00004.safetensors"), dir + "/model.safetensors.index.json")
        let index = try JSONParser.parse(String(decoding: try readFile(dir + "/model.safetensors.index.json"), as: UTF8.self))
        XCTAssertEqual(index["metadata"]?["total_size"], .int(7 * 64))
    }

    func testShardedIndexNamingAMissingShardOrTensorIsAnError() throws {
        try writeTensors(dir + "/s1.safetensors", [("a", [1], [1])])
        try writeFile(Array(#"{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}"#.utf8), dir + "/m.safetensors.index.json")
        XCTAssertThrowsError(try ShardedSafetensors(indexPath: dir + "/m.safetensors.index.json")) { XCTAssertTrue("\($0)".contains("s2.safetensors"), "\($0)") }
        try writeFile(Array(#"{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}}"#.utf8), dir + "/m.safetensors.index.json")
        XCTAssertThrowsError(try ShardedSafetensors(indexPath: dir + "/m.safetensors.index.json")) { XCTAssertTrue("\($0)".contains("'b"), "\($0)") }
        try writeFile(Array(#"{"weight_map":{"a":"../s1.safetensors"}}"#.utf8), dir + "/m.safetensors.index.json")
        XCTAssertThrowsError(try ShardedSafetensors(indexPath: dir + "/m.safetensors.index.json")) { XCTAssertTrue("\($0)".contains("plain file name"), "\($0)") }
    }

    // MARK: the malformed corpus: one file per rule, each with its own error

    private func expectRejected(_ bytes: [UInt8], _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        let path = dir + "/bad-\(UUID().uuidString).safetensors"
        XCTAssertNoThrow(try writeFile(bytes, path))
        XCTAssertThrowsError(try SafetensorsFile(path: path), file: file, line: line) { error in
            XCTAssertTrue(error is FormatError, "\(error)", file: file, line: line)
            XCTAssertTrue("\(error)".contains(fragment), "expected '\(fragment)' in: \(error)", file: file, line: line)
            XCTAssertTrue("\(error)".contains(path), "error names the file: \(error)", file: file, line: line)
        }
    }

    private let f32x2 = #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#

    func testMalformedCorpus() {
        expectRejected([], "too short")
        expectRejected([1, 2, 3, 4, 5], "too short")
        expectRejected(rawSafetensors(header: "{}", declaredLength: 200_000_000), "exceeds the 100,000,000-byte limit")
        expectRejected(rawSafetensors(header: "{}", declaredLength: 64), "runs past the end of the file")
        expectRejected(rawSafetensors(header: f32x2, data: [0, 0, 0, 0]), "truncated")                    // data cut short
        var nonUTF8 = rawSafetensors(header: "{\"\u{00}\": 1}"); nonUTF8[10] = 0xFF
        expectRejected(nonUTF8, "not valid UTF-8")
        expectRejected(rawSafetensors(header: "[1, 2]"), "not a JSON object")
        expectRejected(rawSafetensors(header: "{\"t\": "), "not valid JSON")
        expectRejected(rawSafetensors(header: "{}\0\0\0\0\0\0"), "not valid JSON")                        // NUL padding
        expectRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                                      data: .init(repeating: 0, count: 12)), "a gap")
        expectRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                                      data: .init(repeating: 0, count: 8)), "an overlap")
        expectRejected(rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: .init(repeating: 0, count: 8)), "a gap")
        expectRejected(rawSafetensors(header: f32x2, data: .init(repeating: 0, count: 9)), "1 trailing bytes")
        expectRejected(rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8)), "needs 12 bytes")
        expectRejected(rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8)), "more elements than fit")
        expectRejected(rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8)), "too large to address")
        expectRejected(rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[99999999999999999999999],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8)), "not a non-negative 64-bit integer")
        expectRejected(rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8)), "not a non-negative")
        expectRejected(rawSafetensors(header: #"{"t":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8)), "unknown dtype 'Q4_K'")
        expectRejected(rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8)), "appears twice")
        expectRejected(rawSafetensors(header: #"{"t\u0000hidden":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8)), "NUL byte")
        expectRejected(rawSafetensors(header: #"{"__metadata__":{"a":1},"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8)), "is not a string")
        expectRejected(rawSafetensors(header: #"{"__metadata__":[],"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8)), "__metadata__ is not an object")
        expectRejected(rawSafetensors(header: #"{"t":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#, data: [0]), "not a whole number of bytes")
        expectRejected(rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: .init(repeating: 0, count: 8)), "end before they begin")
        expectRejected(rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[2]}}"#, data: .init(repeating: 0, count: 8)), "data_offsets")
        expectRejected(rawSafetensors(header: String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)), "nesting deeper")
    }

    func testAcceptedEdgeCases() throws {
        // Leading and trailing spaces, rank-0 and zero-size tensors, sub-byte dtypes of whole bytes.
        let header = #"  {"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"q":{"dtype":"F4","shape":[4],"data_offsets":[4,6]}}    "#
        let path = dir + "/ok.safetensors"
        try writeFile(rawSafetensors(header: header, data: [0, 0, 128, 63, 0x12, 0x34]), path)
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(try f.tensor("s").floats(), [1])
        XCTAssertEqual(try f.tensor("e").info.shape, [0, 3])
        XCTAssertEqual(Array(try f.tensor("q").bytes), [0x12, 0x34])
    }

    func testRandomCorruptionNeverCrashes() throws {
        let path = dir + "/good.safetensors"
        try writeTensors(path, [("a", [3, 5], (0..<15).map(Float.init)), ("b", [7], (0..<7).map(Float.init))], dtype: .bf16, metadata: ["k": "v"])
        let good = try readFile(path)
        var rng = SystemRandomNumberGenerator()
        var rejected = 0
        for trial in 0..<600 {
            var bytes = good
            if trial < 150 {
                bytes = Array(bytes[..<Int.random(in: 0..<bytes.count, using: &rng)])
            } else {
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    bytes[Int.random(in: 0..<min(bytes.count, 200), using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            let p = dir + "/m.safetensors"
            try writeFile(bytes, p)
            do {
                let f = try SafetensorsFile(path: p)
                for n in f.names { _ = try f.tensor(n).bytes.count }
            } catch is FormatError { rejected += 1 }
        }
        XCTAssertGreaterThan(rejected, 150, "truncations are always rejected")
    }
}
