import Foundation
import MumuFormats
import MumuStyles
import MumuTensor
import XCTest

/// The lossless delta format on its own: bit-exact round trips, raw and removed tensors, the same bytes
/// whatever the thread count, and damage detected instead of decoded.
final class XorDeltaTests: XCTestCase {
    let dir = StyleRegistryTests.dir

    /// A variant with a tensor the base lacks, one of another dtype, and one of the base's removed.
    func variantAndBase() throws -> (SafetensorsFile, SafetensorsFile) {
        let base = try SafetensorsFile(path: StyleRegistryTests.models["base"]!)
        let ft = try SafetensorsFile(path: StyleRegistryTests.models["ft"]!)
        let path = dir + "/variant.safetensors"
        let dropped = ft.tensors.last!.name
        var infos = ft.tensors.filter { $0.name != dropped }
        let changed = infos[0].name
        infos[0].dtype = .f32
        infos.append(TensorInfo(name: "connector.extra.weight", dtype: .bf16, shape: [3, 5]))
        let w = try SafetensorsWriter(path: path, tensors: infos, metadata: ["note": "variant"], overwrite: true)
        for info in infos {
            if info.name == "connector.extra.weight" {
                let bytes = [UInt8]((0..<30).map { UInt8($0) })
                try bytes.withUnsafeBytes { try w.write(info.name, $0) }
            } else if info.name == changed {
                try w.write(try ft.tensor(info.name).converted(to: .f32))
            } else {
                try w.write(try ft.tensor(info.name))
            }
        }
        try w.finish()
        return (try SafetensorsFile(path: path), base)
    }

    func testRoundTripIsBitExactWhateverTheThreads() throws {
        let (variant, base) = try variantAndBase()
        var files: [Data] = []
        for threads in [1, 3] {
            let out = dir + "/delta-\(threads).mumudelta"
            _ = try XorDelta.encode(variant: variant, base: base, baseSHA256: "abc", to: out, threads: threads, overwrite: true)
            files.append(try Data(contentsOf: URL(fileURLWithPath: out)))
        }
        XCTAssertEqual(files[0], files[1], "the file does not depend on the thread count")
        let reader = try XorDelta.Reader(path: dir + "/delta-1.mumudelta")
        XCTAssertEqual(reader.baseSHA256, "abc")
        XCTAssertEqual(reader.metadata["note"], "variant")
        XCTAssertEqual(reader.removed, [base.tensors.last!.name])
        XCTAssertEqual(Set(reader.order), Set(variant.names))
        for info in variant.tensors {
            let rebuilt = try reader.tensor(info.name, base: base)
            XCTAssertEqual(rebuilt.info, info)
            XCTAssertEqual(Array(rebuilt.bytes), Array(try variant.tensor(info.name).bytes), info.name)
        }
        XCTAssertFalse(reader.entries[variant.tensors[0].name]!.xor, "a tensor of another dtype is stored raw")
        XCTAssertFalse(reader.entries["connector.extra.weight"]!.xor, "a tensor the base lacks is stored raw")
    }

    func testDamageIsDetected() throws {
        let (variant, base) = try variantAndBase()
        let out = dir + "/damaged.mumudelta"
        _ = try XorDelta.encode(variant: variant, base: base, baseSHA256: "abc", to: out, threads: 2, overwrite: true)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: out))
        let reader = try XorDelta.Reader(path: out)
        let victim = reader.entries.values.max { $0.length < $1.length }!
        bytes[victim.offset + victim.length / 2] ^= 0x5A
        bytes[victim.offset + 4] ^= 0x77
        try bytes.write(to: URL(fileURLWithPath: out))
        let damaged = try XorDelta.Reader(path: out)
        do {
            let t = try damaged.tensor(victim.info.name, base: base)
            XCTAssertNotEqual(Array(t.bytes), Array(try variant.tensor(victim.info.name).bytes))
            XCTFail("a damaged frame decoded")
        } catch {
            XCTAssertTrue("\(error)".contains(victim.info.name) || "\(error)".contains("damaged"), "\(error)")
        }
        try Data("not a delta".utf8).write(to: URL(fileURLWithPath: out))
        XCTAssertThrowsError(try XorDelta.Reader(path: out)) { XCTAssertTrue("\($0)".contains("bad magic"), "\($0)") }
    }
}
