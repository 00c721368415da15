import Foundation
import XCTest
import MumuFormats
import MumuTensor

/// A fresh temporary folder per test, removed afterwards.
func makeTemporaryDirectory() throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("mumu-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url.path
}

/// The committed fixtures folder.
func fixturePath(_ relative: String) -> String {
    Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent(relative).path
}

/// Builds raw safetensors bytes from a header string and data, for malformed-file tests.
func rawSafetensors(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    var out = withUnsafeBytes(of: (declaredLength ?? UInt64(h.count)).littleEndian) { Array($0) }
    out += h
    out += data
    return out
}

func writeFile(_ bytes: [UInt8], _ path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Writes f32 tensors to a safetensors file with mumu's writer.
func writeTensors(_ path: String, _ tensors: [(String, [Int], [Float])], dtype: DType = .f32,
                  metadata: [String: String] = [:]) throws {
    let infos = tensors.map { TensorInfo(name: $0.0, dtype: dtype, shape: $0.1) }
    let w = try SafetensorsWriter(path: path, tensors: infos, metadata: metadata)
    for (name, shape, values) in tensors {
        let bytes = try Convert.fromF32Array(values, dtype)
        try w.write(TensorData.owned(TensorInfo(name: name, dtype: dtype, shape: shape), bytes: bytes))
    }
    try w.finish()
}
