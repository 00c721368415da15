import Foundation
import MumuFormats
import MumuSampler
import MumuTensor
import MumuTestSupport
import XCTest

/// How `WeightReader` turns a checkpoint's matrices into layers.
final class WeightReaderTests: XCTestCase {
    /// A bf16 checkpoint loaded in bf16 goes straight into the packed layout (no f32 copy): the layer holds the
    /// same bits as one loaded from an f32 checkpoint of the same values, and multiplies the same. A non-finite
    /// value is refused, naming the tensor, on both paths.
    func testBF16CheckpointLoadsAsTheSameLayer() throws {
        let dir = try makeTemporaryDirectory("weights")
        let rows = 37, cols = 70
        var rng = SeededRNG(seed: 3)
        // Values exactly representable in bf16, so the f32 file holds the same numbers.
        let w = rng.floats(rows * cols).map { Float(bitPattern: $0.bitPattern & 0xFFFF_0000) }
        let bias = rng.floats(rows).map { Float(bitPattern: $0.bitPattern & 0xFFFF_0000) }
        try writeTensors(dir + "/f32.safetensors", [("l.weight", [rows, cols], w), ("l.bias", [rows], bias)])
        try writeTensors(dir + "/bf16.safetensors", [("l.weight", [rows, cols], w), ("l.bias", [rows], bias)], dtype: .bf16)
        let fromF32 = try WeightReader(source: try SafetensorsFile(path: dir + "/f32.safetensors"), prefix: "", precision: .bf16)
            .linear("l", inputs: cols, outputs: rows)
        let fromBF16 = try WeightReader(source: try SafetensorsFile(path: dir + "/bf16.safetensors"), prefix: "", precision: .bf16)
            .linear("l", inputs: cols, outputs: rows)
        XCTAssertTrue(fromBF16.isBF16)
        let x = Tensor(shape: [5, cols], data: rng.floats(5 * cols))
        XCTAssertEqual(fromF32(x).data, fromBF16(x).data)

        var bad = w
        bad[100] = .infinity
        try writeTensors(dir + "/bad.safetensors", [("l.weight", [rows, cols], bad), ("l.bias", [rows], bias)], dtype: .bf16)
        for precision in [WeightPrecision.bf16, .f32] {
            let reader = WeightReader(source: try SafetensorsFile(path: dir + "/bad.safetensors"), prefix: "", precision: precision)
            XCTAssertThrowsError(try reader.linear("l", inputs: cols, outputs: rows)) {
                XCTAssertTrue("\($0)".contains("l.weight"), "\($0)")
            }
        }
    }
}
