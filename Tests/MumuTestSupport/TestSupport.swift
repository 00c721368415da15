import Foundation
import MumuFormats
import MumuTensor
import XCTest

// Helpers every test target shares. A test-support library (not a test target), so each helper exists once.

/// The one folder this test process writes in: `$TMPDIR/mumu-tests-<pid>`, removed when the process exits, so a
/// run leaves nothing behind (the suite writes about 1 GB of tiny models per run). `MUMU_KEEP_TEST_FILES=1` keeps it
/// for a look after a failure. Every test folder is made inside it by the helpers below.
public let testScratchRoot: String = {
    let root = NSTemporaryDirectory() + "mumu-tests-\(getpid())"
    try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    if ProcessInfo.processInfo.environment["MUMU_KEEP_TEST_FILES"] == nil {
        atexit { removeTestScratchRoot() }   // XCTest ends the process with exit(), which runs this
    }
    return root
}()

private func removeTestScratchRoot() { try? FileManager.default.removeItem(atPath: testScratchRoot) }

/// A fresh folder inside `testScratchRoot`.
public func makeTemporaryDirectory(_ label: String = "test") throws -> String {
    try makeTemporaryURL(label).path
}

/// `makeTemporaryDirectory` as a URL.
public func makeTemporaryURL(_ label: String = "test") throws -> URL {
    let url = URL(fileURLWithPath: testScratchRoot).appendingPathComponent("\(label)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// The repository's `Tests/` folder, from this file's path (fixtures one test target owns can be read by another).
public let testsFolder: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()

/// A deterministic generator (SplitMix64), usable as a `RandomNumberGenerator`.
public struct SeededRNG: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A value in [-1, 1) from the top 24 bits.
    public mutating func float() -> Float { Float(Int64(bitPattern: next()) >> 40) / Float(1 << 23) }
    public mutating func floats(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in float() * scale } }
}

/// The largest |got - want| (NaN counts as infinite); fails on a shape mismatch or an error above `tolerance`.
/// Prints the error reached so the logs show the margin.
@discardableResult
public func checkMaxError(_ got: Tensor, _ want: Tensor, _ label: String, tolerance: Float,
                          file: StaticString = #filePath, line: UInt = #line) -> Float {
    XCTAssertEqual(got.shape, want.shape, label, file: file, line: line)
    guard got.shape == want.shape else { return .infinity }
    let err = maxAbsDifference(got.data, want.data)
    XCTAssertLessThanOrEqual(err, tolerance, "\(label): max abs error \(err)", file: file, line: line)
    print("\(label): max abs error \(err)")
    return err
}

/// The largest |a[i] - b[i]|, NaN as infinity.
public func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    var err: Float = 0
    for i in 0..<min(a.count, b.count) {
        let e = abs(a[i] - b[i])
        if !(e <= err) { err = e.isNaN ? .infinity : e }
    }
    return a.count == b.count ? err : .infinity
}

// MARK: safetensors

/// Raw safetensors bytes from a header string and data, for malformed-file tests.
public func rawSafetensors(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    var out = withUnsafeBytes(of: (declaredLength ?? UInt64(h.count)).littleEndian) { Array($0) }
    out += h
    out += data
    return out
}

public func writeFile(_ bytes: [UInt8], _ path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

public func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Writes f32 tensors to a safetensors file with mumu's writer (stored as `dtype`).
public func writeTensors(_ path: String, _ tensors: [(String, [Int], [Float])], dtype: DType = .f32,
                         metadata: [String: String] = [:]) throws {
    let infos = tensors.map { TensorInfo(name: $0.0, dtype: dtype, shape: $0.1) }
    let w = try SafetensorsWriter(path: path, tensors: infos, metadata: metadata, overwrite: true)
    for (name, shape, values) in tensors {
        let bytes = try Convert.fromF32Array(values, dtype)
        try w.write(TensorData.owned(TensorInfo(name: name, dtype: dtype, shape: shape), bytes: bytes))
    }
    try w.finish()
}

/// Every tensor of a safetensors file as f32 (int64 and uint8 converted exactly: fixtures keep them small).
public func readTensors(_ path: String) throws -> [String: Tensor] {
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

/// Writes the tensors of `source` for which `keep` holds into a single safetensors file.
public func writeSubset(of source: TensorSource, to path: String, keep: (String) -> Bool = { _ in true }) throws {
    let infos = source.tensors.filter { keep($0.name) }
    let writer = try SafetensorsWriter(path: path, tensors: infos, overwrite: true)
    for info in infos { try writer.write(try source.tensor(info.name)) }
    try writer.finish()
}

// MARK: tiny models

/// sdxl-tiny checkpoints synthesized once per folder: `synth("ft", seed: 2, perturb: "base")`.
public final class TinyModels: @unchecked Sendable {
    public let dir: String
    public private(set) var paths: [String: String] = [:]

    public init(label: String) {
        dir = testScratchRoot + "/\(label)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    public subscript(_ name: String) -> String { paths[name]! }

    /// A random sdxl-tiny file (`components` nil: all), or `base` perturbed by `scale` when `perturb` names one.
    @discardableResult
    public func synth(_ name: String, seed: UInt64, perturb: String? = nil, scale: Float = 0.01,
                      components: Set<String>? = nil, architecture: String = "sdxl-tiny") throws -> String {
        var s = Synthesizer(architecture: Architectures.named(architecture)!)
        s.seed = seed
        s.components = components
        if let perturb { s.perturb = (try SafetensorsFile(path: paths[perturb]!), scale) }
        let path = dir + "/\(name).safetensors"
        _ = try s.write(toFile: path, overwrite: true)
        paths[name] = path
        return path
    }
}

// MARK: the decoder fixtures

/// The decoder conformance fixtures (scripts/gen_fixtures_decoder.py): a tiny random SDXL pipeline folder and
/// the f32 reference outputs diffusers / transformers computed from exactly its (f16-stored) weights.
public enum DecoderFixtures {
    public static var folder: URL { testsFolder.appendingPathComponent("MumuSamplerTests/Fixtures/decoder") }
    public static var pipeline: String { folder.appendingPathComponent("tiny-sdxl").path }
    /// Whole generations (scripts/gen_fixtures_generate.py).
    public static var generate: URL { testsFolder.appendingPathComponent("MumuSamplerTests/Fixtures/generate") }

    /// Every tensor of decoder/`name`.safetensors as f32.
    public static func io(_ name: String) throws -> [String: Tensor] {
        try readTensors(folder.appendingPathComponent(name + ".safetensors").path)
    }

    /// A copy of the tiny pipeline in a temporary folder whose weights `file` has `edit` applied to the tensor
    /// `name` (its values as f32, and its shape); the file keeps its dtype. Returns the copy's path.
    public static func editedFolder(_ file: String, tensor name: String, edit: (inout [Int], inout [Float]) -> Void) throws -> String {
        let dir = try makeTemporaryURL("decoder").appendingPathComponent("tiny-sdxl")
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
