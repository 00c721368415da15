import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuTensor

/// mumu against files the Python ecosystem wrote (scripts/gen_fixtures_safetensors.py):
/// safetensors.torch.save_file, huggingface_hub's sharded writer, and torch's float8 conversions.
final class InteropTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTemporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    // MARK: - helpers

    private func loadJSON(_ relative: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath(relative)))
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    private func hexBytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var it = hex.makeIterator()
        while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
        return out
    }

    /// The fixture's string encoding of a float: shortest round-trip decimal, or nan / inf / -inf.
    private func parseFloat(_ s: String) -> Double {
        switch s {
        case "nan": return .nan
        case "inf": return .infinity
        case "-inf": return -.infinity
        default: return Double(s)!
        }
    }

    /// Little-endian integers of a tensor's bytes, widened to Int64 (U64 is not in the fixture).
    private func integers(_ bytes: [UInt8], _ dtype: DType) -> [Int64] {
        let size = dtype.byteSize!
        return stride(from: 0, to: bytes.count, by: size).map { i -> Int64 in
            var u: UInt64 = 0
            for k in 0..<size { u |= UInt64(bytes[i + k]) << (8 * UInt64(k)) }
            switch dtype {
            case .i8: return Int64(Int8(truncatingIfNeeded: u))
            case .i16: return Int64(Int16(truncatingIfNeeded: u))
            case .i32: return Int64(Int32(truncatingIfNeeded: u))
            case .i64: return Int64(bitPattern: u)
            default: return Int64(u)            // U8, BOOL
            }
        }
    }

    private func bytes(of t: TensorData) -> [UInt8] { withExtendedLifetime(t) { Array(t.bytes) } }

    // MARK: - (a) a file safetensors.torch.save_file wrote

    func testPythonWrittenFileReadsWithEveryDtypeShapeAndValue() throws {
        let expected = try loadJSON("safetensors/python_written.json")
        let tensors = try XCTUnwrap(expected["tensors"] as? [String: [String: Any]])
        let file = try SafetensorsFile(path: fixturePath("safetensors/python_written.safetensors"))

        XCTAssertEqual(file.file.size, expected["file_bytes"] as? Int)
        XCTAssertEqual(file.header.headerLength, expected["header_len"] as? Int)
        XCTAssertEqual(file.header.dataStart, expected["data_start"] as? Int)
        XCTAssertEqual(file.metadata, expected["metadata"] as? [String: String])
        XCTAssertEqual(file.metadata, ["format": "pt", "note": "written by python"])
        XCTAssertEqual(Set(file.names), Set(tensors.keys))
        XCTAssertEqual(file.tensors.count, 16)

        var dtypesSeen = Set<DType>()
        for (name, e) in tensors.sorted(by: { $0.key < $1.key }) {
            let info = try XCTUnwrap(file.infoByName[name], name)
            let dtype = try XCTUnwrap(DType(rawValue: e["dtype"] as! String))
            dtypesSeen.insert(dtype)
            XCTAssertEqual(info.dtype, dtype, name)
            XCTAssertEqual(info.shape, e["shape"] as? [Int], name)
            let offsets = e["data_offsets"] as! [Int]
            let entry = try XCTUnwrap(file.header.entries.first { $0.info.name == name })
            XCTAssertEqual(entry.range, offsets[0]..<offsets[1], name)

            let data = try file.tensor(name)
            let raw = bytes(of: data)
            XCTAssertEqual(raw, hexBytes(e["raw_hex"] as! String), "\(name): raw bytes")

            let values = e["values"] as! [String]
            XCTAssertEqual(values.count, info.elementCount, name)
            if dtype.isFloatingPoint {
                let got: [Double]
                if dtype == .f64 {
                    got = raw.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
                } else {
                    got = try withExtendedLifetime(data) { try data.floats() }.map(Double.init)
                }
                XCTAssertEqual(got.count, values.count, name)
                for (i, (g, s)) in zip(got, values).enumerated() {
                    let want = parseFloat(s)
                    if want.isNaN {
                        XCTAssertTrue(g.isNaN, "\(name)[\(i)]: \(g), want nan")
                    } else {
                        // exact, sign of zero included
                        XCTAssertEqual(g.bitPattern, want.bitPattern, "\(name)[\(i)]: \(g), want \(s)")
                    }
                }
            } else {
                XCTAssertEqual(integers(raw, dtype), values.map { Int64($0)! }, name)
            }
        }
        XCTAssertEqual(dtypesSeen, [.f32, .f16, .bf16, .f64, .f8e4m3, .f8e5m2, .i64, .i32, .i16, .i8, .u8, .bool])
        // Spot checks that do not depend on the JSON: rank-0 and zero-size tensors.
        XCTAssertEqual(try file.tensor("scalar_f32").floats(), [-2.75])
        XCTAssertEqual(file.infoByName["scalar_f32"]?.shape, [])
        XCTAssertEqual(file.infoByName["empty_f32"]?.shape, [0, 4])
        XCTAssertEqual(try file.tensor("empty_f32").bytes.count, 0)
        XCTAssertEqual(integers(bytes(of: try file.tensor("i64")), .i64), [Int64.min, (1 << 53) + 1, 42])
    }

    // MARK: - (b) mumu's writer reproduces the Python file

    func testWriterReproducesThePythonFile() throws {
        let pythonPath = fixturePath("safetensors/python_written.safetensors")
        let python = try SafetensorsFile(path: pythonPath)
        let out = dir + "/mumu_written.safetensors"
        let w = try SafetensorsWriter(path: out, tensors: python.tensors, metadata: python.metadata)
        for t in python.tensors { try w.write(try python.tensor(t.name)) }
        try w.finish()

        let pyBytes = try readFile(pythonPath)
        let ourBytes = try readFile(out)
        let mumu = try SafetensorsFile(path: out)

        // The tensor entries: same order in the data buffer, same dtypes, shapes and offsets.
        XCTAssertEqual(mumu.header.entries, python.header.entries)
        XCTAssertEqual(mumu.metadata, python.metadata)
        // The data section, byte for byte.
        XCTAssertEqual(Array(ourBytes[mumu.header.dataStart...]), Array(pyBytes[python.header.dataStart...]))
        XCTAssertEqual(mumu.header.headerLength, python.header.headerLength)

        // The metadata has two keys ("format", "note"). safetensors serialises __metadata__ from a
        // Rust HashMap, so its key order may vary between runs; mumu writes keys sorted. The committed
        // fixture has them in sorted order (the generator keeps an existing file that differs only in
        // that order), so the whole file must be identical. Should a regenerated fixture come with the
        // other order, the checks above (entries, data section, header length) still hold and only
        // this whole-file comparison is skipped.
        let sortedMetadataPrefix = Array("{\"__metadata__\":{\"format\":\"pt\",\"note\":\"written by python\"},".utf8)
        if Array(pyBytes[8..<(8 + sortedMetadataPrefix.count)]) == sortedMetadataPrefix {
            XCTAssertEqual(ourBytes.count, pyBytes.count)
            XCTAssertTrue(ourBytes == pyBytes, "mumu's file differs from safetensors.torch.save_file's")
            if let i = zip(ourBytes, pyBytes).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
                XCTFail("first difference at byte \(i)")
            }
        }
    }

    /// The reference orders tensors by its `Dtype` enum, descending (`BOOL, F4, F6_E2M3, F6_E3M2, U8, I8,
    /// F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64,
    /// U64` in safetensors/src/tensor.rs). safetensors 0.8.0's `serialize` was observed to give, for one
    /// tensor of each dtype its Python binding takes: U64 I64 F64 C64 F32 U32 I32 BF16 F16 U16 I16
    /// F8_E5M2FNUZ F8_E4M3FNUZ F8_E8M0 F8_E4M3 F8_E5M2 I8 U8 F4 BOOL (F6 has no Python dtype; its place
    /// comes from the enum). BOOL is last, below the sub-byte floats.
    func testWriterOrdersDtypesAsTheReferenceEnum() throws {
        let reference: [DType] = [.u64, .i64, .f64, .c64, .f32, .u32, .i32, .bf16, .f16, .u16, .i16,
                                  .f8e5m2fnuz, .f8e4m3fnuz, .f8e8m0, .f8e4m3, .f8e5m2, .i8, .u8, .f6e3m2, .f6e2m3, .f4, .bool]
        XCTAssertEqual(Set(reference), Set(DType.allCases), "every dtype has its place")
        // Names in reverse alphabetical order, so the order cannot come from the names.
        let infos = DType.allCases.enumerated().map { i, d in
            TensorInfo(name: String(UnicodeScalar(UInt8(0x7A - i))) + "_" + d.rawValue.lowercased(), dtype: d, shape: [8])
        }
        XCTAssertEqual(SafetensorsWriter.order(infos).map(\.dtype), reference)
        let path = dir + "/all_dtypes.safetensors"
        let w = try SafetensorsWriter(path: path, tensors: infos)
        for t in infos { try [UInt8](repeating: 0, count: t.byteCount).withUnsafeBytes { try w.write(t.name, $0) } }
        try w.finish()
        XCTAssertEqual(try SafetensorsFile(path: path).tensors.map(\.dtype), reference)
    }

    // MARK: - (c) a sharded set huggingface_hub wrote

    func testShardedSetOpensThroughTheIndexAndThroughAShard() throws {
        let folder = fixturePath("safetensors/sharded")
        let indexPath = folder + "/model.safetensors.index.json"
        let index = try loadJSON("safetensors/sharded/model.safetensors.index.json")
        let weightMap = try XCTUnwrap(index["weight_map"] as? [String: String])
        let totalSize = try XCTUnwrap((index["metadata"] as? [String: Any])?["total_size"] as? Int)
        XCTAssertEqual(weightMap.count, 6)

        // Every tensor, read from the shard the index names, as the reference per-shard contents.
        var shards: [String: SafetensorsFile] = [:]
        for shard in Set(weightMap.values) { shards[shard] = try SafetensorsFile(path: folder + "/" + shard) }
        XCTAssertEqual(Set(shards.keys), ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
        XCTAssertEqual(Set(shards.values.flatMap(\.names)), Set(weightMap.keys), "the shards hold exactly the indexed tensors")

        for path in [indexPath, folder + "/model-00001-of-00002.safetensors", folder + "/model-00002-of-00002.safetensors"] {
            let (source, format) = try ModelFile.open(path)
            XCTAssertEqual(format, .shardedSafetensors, path)
            XCTAssertEqual(Set(source.names), Set(weightMap.keys), path)
            XCTAssertEqual(source.tensors.count, 6, path)
            XCTAssertEqual(source.metadata, ["format": "pt"], path)
            XCTAssertEqual(source.tensors.reduce(0) { $0 + $1.byteCount }, totalSize, path)
            for (name, shard) in weightMap {
                let want = try shards[shard]!.tensor(name)
                let got = try source.tensor(name)
                XCTAssertEqual(got.info, want.info, name)
                XCTAssertEqual(bytes(of: got), bytes(of: want), name)
            }
        }
        let (set, _) = try ModelFile.open(indexPath)
        XCTAssertEqual(set.infoByName["head.weight"], TensorInfo(name: "head.weight", dtype: .bf16, shape: [2, 4]))
        XCTAssertEqual(set.infoByName["encoder.layers.1.weight"], TensorInfo(name: "encoder.layers.1.weight", dtype: .f16, shape: [4, 4]))
        XCTAssertEqual(set.infoByName["encoder.embed.weight"], TensorInfo(name: "encoder.embed.weight", dtype: .f32, shape: [8, 4]))
    }

    // MARK: - (d) float8 against torch

    private func f8Reference() throws -> SafetensorsFile {
        try SafetensorsFile(path: fixturePath("dtypes/f8_reference.safetensors"))
    }

    func testFloat8DecodingOfAllPatternsMatchesTorch() throws {
        let ref = try f8Reference()
        let patterns = (0...255).map { UInt8($0) }
        for (dtype, name) in [(DType.f8e4m3, "e4m3_decoded"), (.f8e5m2, "e5m2_decoded")] {
            let torch = try ref.tensor(name).floats()
            XCTAssertEqual(torch.count, 256)
            let ours = try patterns.withUnsafeBytes { try Convert.toF32Array($0, dtype) }
            var nans = 0
            for b in 0..<256 {
                if torch[b].isNaN {
                    nans += 1
                    XCTAssertTrue(ours[b].isNaN, "\(dtype.rawValue) 0x\(String(b, radix: 16)): \(ours[b]), torch nan")
                } else {
                    XCTAssertEqual(ours[b].bitPattern, torch[b].bitPattern, "\(dtype.rawValue) 0x\(String(b, radix: 16)): \(ours[b]), torch \(torch[b])")
                }
            }
            // e4m3fn: NaN only at 0x7F / 0xFF; e5m2: 3 NaN mantissas per sign.
            XCTAssertEqual(nans, dtype == .f8e4m3 ? 2 : 6, dtype.rawValue)
        }
    }

    func testFloat8EncodingMatchesTorchBitForBit() throws {
        let ref = try f8Reference()
        let probe = try ref.tensor("probe").floats()
        XCTAssertEqual(probe.count, Int(ref.metadata["probe_count"] ?? ""))
        XCTAssertTrue(probe.contains { $0.isNaN } && probe.contains(.infinity) && probe.contains(-.infinity))
        for (dtype, name) in [(DType.f8e4m3, "probe_e4m3"), (.f8e5m2, "probe_e5m2")] {
            let torch = bytes(of: try ref.tensor(name))
            let ours = try Convert.fromF32Array(probe, dtype)
            XCTAssertEqual(ours.count, torch.count)
            var bad = 0
            for i in 0..<probe.count where ours[i] != torch[i] {
                bad += 1
                if bad <= 10 {
                    XCTFail("\(dtype.rawValue): \(probe[i]) (0x\(String(probe[i].bitPattern, radix: 16))) -> 0x\(String(ours[i], radix: 16)), torch 0x\(String(torch[i], radix: 16))")
                }
            }
            XCTAssertEqual(bad, 0, "\(dtype.rawValue): \(bad) of \(probe.count) encodings differ from torch")

            // The same through the generic conversion entry point and a TensorData.
            let t = try ref.tensor("probe")
            let converted = try t.converted(to: dtype)
            let viaTensor = bytes(of: converted)
            XCTAssertEqual(viaTensor.count, torch.count)
            XCTAssertEqual(zip(viaTensor, torch).filter { $0 != $1 }.count, 0, "\(dtype.rawValue) via TensorData.converted")
        }
    }

    func testFloat8EdgeCasesRecordedInTheFixtureMetadata() throws {
        let ref = try f8Reference()
        let observed = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(ref.metadata["observed"]!.utf8)) as? [String: Int])
        func enc(_ x: Float, _ d: DType) throws -> Int { Int(try Convert.fromF32Array([x], d)[0]) }
        XCTAssertEqual(try enc(448, .f8e4m3), observed["e4m3_448"])
        XCTAssertEqual(try enc(464, .f8e4m3), observed["e4m3_464"])
        XCTAssertEqual(try enc(1e9, .f8e4m3), observed["e4m3_1e9"])
        XCTAssertEqual(try enc(.infinity, .f8e4m3), observed["e4m3_inf"])
        XCTAssertEqual(try enc(.nan, .f8e4m3), observed["e4m3_nan"])
        XCTAssertEqual(try enc(57344, .f8e5m2), observed["e5m2_57344"])
        XCTAssertEqual(try enc(61439, .f8e5m2), observed["e5m2_61439"])
        XCTAssertEqual(try enc(61440, .f8e5m2), observed["e5m2_61440"])
        XCTAssertEqual(try enc(.infinity, .f8e5m2), observed["e5m2_inf"])
        XCTAssertEqual(try enc(.nan, .f8e5m2), observed["e5m2_nan"])
        // Saturation is symmetric and keeps NaN NaN.
        XCTAssertEqual(try enc(-.infinity, .f8e4m3), 0xFE)
        XCTAssertEqual(try enc(-479.9, .f8e4m3), 0xFE)
        XCTAssertEqual(try enc(-500, .f8e4m3), 0xFE)
        XCTAssertEqual(try enc(-.infinity, .f8e5m2), 0xFC)
        let nanByte = [UInt8(try enc(.nan, .f8e4m3))]
        XCTAssertTrue(try nanByte.withUnsafeBytes { try Convert.toF32Array($0, .f8e4m3) }[0].isNaN)
    }

    func testFloat8EveryFinitePatternRoundTrips() throws {
        for dtype in [DType.f8e4m3, .f8e5m2] {
            let patterns = (0...255).map { UInt8($0) }
            let decoded = try patterns.withUnsafeBytes { try Convert.toF32Array($0, dtype) }
            let encoded = try Convert.fromF32Array(decoded, dtype)
            for b in 0..<256 where !decoded[b].isNaN {
                XCTAssertEqual(encoded[b], UInt8(b), "\(dtype.rawValue) 0x\(String(b, radix: 16)) -> \(decoded[b]) -> 0x\(String(encoded[b], radix: 16))")
            }
        }
    }
}
