import Foundation
import MumuFormats
import MumuTensor
import MumuTestSupport
import XCTest

/// The encoder-network conformance fixtures (scripts/gen_fixtures_encoder_networks.py): a tiny random Idefics2
/// folder as transformers saves it, two random MUMU connectors, and the f32 reference outputs transformers / torch
/// computed from exactly their (bf16 / f16-stored) weights.
enum NetworkFixtures {
    static var folder: URL { Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("networks") }
    static var idefics2: String { folder.appendingPathComponent("tiny-idefics2").path }
    static func connector(_ name: String) -> String { folder.appendingPathComponent("connector-\(name).safetensors").path }

    /// Every tensor of networks_io.safetensors; int64 tensors separately, as Int.
    static let io: (floats: [String: Tensor], ints: [String: [Int]]) = {
        let file = try! SafetensorsFile(path: folder.appendingPathComponent("networks_io.safetensors").path)
        var floats: [String: Tensor] = [:], ints: [String: [Int]] = [:]
        for info in file.tensors {
            let data = try! file.tensor(info.name)
            if info.dtype == .i64 {
                ints[info.name] = withExtendedLifetime(data) {
                    (0..<info.elementCount).map { Int(data.bytes.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
                }
            } else {
                floats[info.name] = Tensor(shape: info.shape, data: try! data.floats())
            }
        }
        return (floats, ints)
    }()

    static func tensor(_ name: String) throws -> Tensor { try XCTUnwrap(io.floats[name], "no \(name) in networks_io") }
    static func ids(_ name: String) throws -> [Int32] { try XCTUnwrap(io.ints[name], "no \(name) in networks_io").map { Int32($0) } }

    /// Max abs difference relative to max |want|; fails on a shape mismatch or a relative error not below
    /// `tolerance`. Prints and returns the error reached.
    @discardableResult
    static func check(_ got: Tensor, _ want: Tensor, _ label: String, tolerance: Float,
                      file: StaticString = #filePath, line: UInt = #line) -> Float {
        XCTAssertEqual(got.shape, want.shape, label, file: file, line: line)
        guard got.shape == want.shape else { return .infinity }
        var err: Float = 0, scale: Float = 0
        for i in 0..<got.count {
            let e = abs(got.data[i] - want.data[i])
            if !(e <= err) { err = e.isNaN ? .infinity : e }
            scale = max(scale, abs(want.data[i]))
        }
        let relative = err / max(scale, .leastNormalMagnitude)
        XCTAssertLessThan(relative, tolerance, "\(label): max abs error \(err), max |ref| \(scale)", file: file, line: line)
        print("\(label): max abs error \(err) = \(relative) of max |ref| \(scale)")
        return relative
    }

    /// A fresh folder inside the test process's scratch folder.
    static func temporaryDirectory() throws -> URL { try makeTemporaryURL("encoder") }

    /// Writes `infos` (tensor data from `data`) to a safetensors file.
    static func write(_ path: String, _ items: [(TensorInfo, TensorData)]) throws {
        let writer = try SafetensorsWriter(path: path, tensors: items.map(\.0), overwrite: true)
        for (info, data) in items { try writer.write(data.renamed(info.name, shape: info.shape)) }
        try writer.finish()
    }

    /// A copy of the tiny Idefics2 folder in a temporary folder: its tensors renamed / dropped / edited by `edit`
    /// (nil drops the tensor), its config.json replaced by `config` when given, written as one file or as shards
    /// of `shards` files with an index; with `lmHead` an `lm_head.weight` [1, 64] (of a shape no model has, so
    /// reading it would fail) is added. Returns the copy's path.
    /// `values` replaces a tensor's data by f32 values of its shape.
    static func editedFolder(config: String? = nil, shards: Int = 1, lmHead: Bool = false, values: [String: [Float]] = [:],
                             edit: (TensorInfo) -> TensorInfo? = { $0 }) throws -> String {
        let dir = try temporaryDirectory().appendingPathComponent("idefics2")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let original = try SafetensorsFile(path: (idefics2 as NSString).appendingPathComponent("model.safetensors"))
        var items: [(TensorInfo, TensorData)] = []
        for info in original.tensors {
            guard var renamed = edit(info) else { continue }
            if let replacement = values[info.name] {
                renamed.dtype = .f32
                let bytes = replacement.withUnsafeBytes { [UInt8]($0) }
                items.append((renamed, TensorData.owned(renamed, bytes: bytes)))
                continue
            }
            items.append((renamed, try original.tensor(info.name)))
        }
        if lmHead {
            let info = TensorInfo(name: "lm_head.weight", dtype: .f32, shape: [1, 64])
            items.append((info, TensorData.owned(info, bytes: [UInt8](repeating: 0, count: 256))))
        }
        if shards <= 1 {
            try write(dir.appendingPathComponent("model.safetensors").path, items)
        } else {
            var map: [(String, String)] = []
            let per = (items.count + shards - 1) / shards
            for s in 0..<shards {
                let part = Array(items[min(items.count, s * per)..<min(items.count, (s + 1) * per)])
                let name = String(format: "model-%05d-of-%05d.safetensors", s + 1, shards)
                try write(dir.appendingPathComponent(name).path, part)
                map += part.map { ($0.0.name, name) }
            }
            let index = "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {" +
                map.map { "\"\($0.0)\": \"\($0.1)\"" }.joined(separator: ", ") + "}}"
            try index.write(to: dir.appendingPathComponent("model.safetensors.index.json"), atomically: true, encoding: .utf8)
        }
        let configText = try config ?? String(contentsOfFile: (idefics2 as NSString).appendingPathComponent("config.json"), encoding: .utf8)
        try configText.write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        return dir.path
    }
}
