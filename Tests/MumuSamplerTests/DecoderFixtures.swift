import Foundation
import XCTest
import MumuFormats
import MumuTensor

/// The decoder conformance fixtures (scripts/gen_fixtures_decoder.py): a tiny random SDXL pipeline folder and
/// the f32 reference outputs diffusers / transformers computed from exactly its (f16-stored) weights.
enum DecoderFixtures {
    static var folder: URL { Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("decoder") }
    static var pipeline: String { folder.appendingPathComponent("tiny-sdxl").path }

    /// Every tensor of decoder/`name`.safetensors as f32 (int64 ids converted exactly: they are small).
    static func io(_ name: String) throws -> [String: Tensor] {
        try tensors(folder.appendingPathComponent(name + ".safetensors").path)
    }

    /// Every tensor of a safetensors fixture as f32 (int64 and uint8 converted exactly).
    static func tensors(_ path: String) throws -> [String: Tensor] {
        let file = try SafetensorsFile(path: path)
        var out: [String: Tensor] = [:]
        for info in file.tensors {
            let data = try file.tensor(info.name)
            let values: [Float]
            if info.dtype == .i64 {
                values = withExtendedLifetime(data) { data.bytes.bindMemory(to: Int64.self).map { Float($0) } }
            } else if info.dtype == .u8 {
                values = withExtendedLifetime(data) { data.bytes.map { Float($0) } }
            } else {
                values = try data.floats()
            }
            out[info.name] = Tensor(shape: info.shape, data: values)
        }
        return out
    }

    /// Max abs difference; fails on a shape mismatch or an error not below `tolerance`. Prints the error reached.
    @discardableResult
    static func check(_ got: Tensor, _ want: Tensor, _ label: String, tolerance: Float,
                      file: StaticString = #filePath, line: UInt = #line) -> Float {
        XCTAssertEqual(got.shape, want.shape, label, file: file, line: line)
        guard got.shape == want.shape else { return .infinity }
        var err: Float = 0
        for i in 0..<got.count {
            let e = abs(got.data[i] - want.data[i])
            if !(e <= err) { err = e.isNaN ? .infinity : e }
        }
        XCTAssertLessThan(err, tolerance, "\(label): max abs error \(err)", file: file, line: line)
        print("\(label): max abs error \(err)")
        return err
    }

    /// Writes the tensors of `source` for which `keep` holds into a single safetensors file (sgm names when
    /// `source` is a checkpoint's view).
    static func writeSubset(of source: TensorSource, to path: String, keep: (String) -> Bool = { _ in true }) throws {
        let infos = source.tensors.filter { keep($0.name) }
        let writer = try SafetensorsWriter(path: path, tensors: infos, overwrite: true)
        for info in infos { try writer.write(try source.tensor(info.name)) }
        try writer.finish()
    }

    /// A fresh folder under the system's temporary directory.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("mumu-decoder-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A copy of the tiny pipeline in a temporary folder whose weights `file` has `edit` applied to the tensor
    /// `name` (its values as f32, and its shape); the file keeps its dtype. Returns the copy's path.
    static func editedFolder(_ file: String, tensor name: String, edit: (inout [Int], inout [Float]) -> Void) throws -> String {
        let dir = try temporaryDirectory().appendingPathComponent("tiny-sdxl")
        try FileManager.default.copyItem(atPath: pipeline, toPath: dir.path)
        let original = try SafetensorsFile(path: (pipeline as NSString).appendingPathComponent(file))
        var infos = original.tensors
        let i = try XCTUnwrap(infos.firstIndex { $0.name == name }, "no \(name) in \(file)")
        var shape = infos[i].shape, values = try original.tensor(name).floats()
        edit(&shape, &values)
        // Keep the file's dtype (f16): the view fuses bigG's q / k / v and wants them in one dtype.
        infos[i] = TensorInfo(name: name, dtype: infos[i].dtype, shape: shape)
        let writer = try SafetensorsWriter(path: dir.appendingPathComponent(file).path, tensors: infos, overwrite: true)
        for info in infos {
            if info.name == name {
                try writer.write(TensorData.owned(TensorInfo(name: name, dtype: .f32, shape: shape), bytes: values.withUnsafeBytes { Array($0) }))
            } else {
                try writer.write(try original.tensor(info.name))
            }
        }
        try writer.finish()
        return dir.path
    }
}
