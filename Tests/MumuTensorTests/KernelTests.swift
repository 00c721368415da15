import Foundation
import MumuTestSupport
import XCTest
import MumuTensor

/// The f32 kernels (Sources/MumuTensor/Kernels) against torch 2.x CPU outputs saved by
/// scripts/gen_fixtures_kernels.py in Fixtures/kernels/*.safetensors.
final class KernelTests: XCTestCase {
    /// Max abs error allowed against torch for every kernel.
    static let tolerance: Float = 1e-5

    /// Reads an all-F32 safetensors fixture into tensors (a minimal reader, so this target needs only MumuTensor).
    static func fixture(_ name: String) throws -> [String: Tensor] {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("kernels/\(name).safetensors")
        let bytes = try Data(contentsOf: url)
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | (Int($1.element) << (8 * $1.offset)) }
        let header = try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + headerLength))) as! [String: Any]
        var out: [String: Tensor] = [:]
        for (key, value) in header where key != "__metadata__" {
            let entry = value as! [String: Any]
            XCTAssertEqual(entry["dtype"] as? String, "F32", key)
            let shape = (entry["shape"] as! [NSNumber]).map(\.intValue)
            let offsets = (entry["data_offsets"] as! [NSNumber]).map(\.intValue)
            let start = 8 + headerLength + offsets[0], end = 8 + headerLength + offsets[1]
            var values = [Float](repeating: 0, count: (end - start) / 4)
            values.withUnsafeMutableBytes { _ = bytes.copyBytes(to: $0, from: start..<end) }
            out[key] = Tensor(shape: shape, data: values)
        }
        return out
    }

    /// `checkMaxError` at the kernels' tolerance unless told otherwise.
    @discardableResult
    static func check(_ got: Tensor, _ want: Tensor, _ label: String, tolerance: Float = tolerance,
                      file: StaticString = #filePath, line: UInt = #line) -> Float {
        checkMaxError(got, want, "KernelTests " + label, tolerance: tolerance, file: file, line: line)
    }

    /// The fixtures are NCHW (torch); the kernels are channels-last, so inputs go through `NN.nhwc` and
    /// outputs back through `NN.nchw`.
    static func conv(_ f: [String: Tensor], bias: Bool = true, budget: Int = NN.defaultIm2colBudget) -> Tensor {
        let w = f["weight"]!
        let (cout, cin, k) = (w.shape[0], w.shape[1], w.shape[2])
        let reordered = DenseWeight.convWeight(w.data, cout: cout, cin: cin, kh: k, kw: k)
        let dense = bias ? DenseWeight(Tensor(shape: [cout, k * k * cin], data: reordered), bias: f["bias"]!)
                         : DenseWeight(Tensor(shape: [cout, k * k * cin], data: reordered))
        let y = NN.conv2d(NN.nhwc(f["x"]!), weight: dense, kernel: k, stride: Int(f["stride"]!.data[0]),
                          padding: Int(f["padding"]!.data[0]), im2colBudget: budget)
        return NN.nchw(y)
    }

    func testConv2d() throws {
        for name in ["conv_3x3_s2_p1_odd", "conv_3x3_s1_p1", "conv_3x3_s2_p0_odd", "conv_3x3_s1_p0", "conv_1x1_s1", "conv_1x1_s2_odd"] {
            let f = try Self.fixture(name)
            Self.check(Self.conv(f), f["y"]!, name)
            // Banded im2col: a budget of one output row per band gives the same result.
            Self.check(Self.conv(f, budget: 1), f["y"]!, name + " (1-row bands)")
        }
    }

    func testConv2dWithoutBiasAndResidual() throws {
        let f = try Self.fixture("conv_3x3_s1_p1")
        var withBias = Self.conv(f)
        let noBias = Self.conv(f, bias: false)
        let plane = withBias.shape[2] * withBias.shape[3]
        for i in 0..<withBias.count { withBias.data[i] -= f["bias"]!.data[(i / plane) % withBias.shape[1]] }
        Self.check(noBias, withBias, "conv2d without bias")
        // addingInto: out = residual + conv(x).
        let w = f["weight"]!
        let (cout, cin) = (w.shape[0], w.shape[1])
        let dense = DenseWeight(Tensor(shape: [cout, 9 * cin], data: DenseWeight.convWeight(w.data, cout: cout, cin: cin, kh: 3, kw: 3)), bias: f["bias"]!)
        let x = NN.nhwc(f["x"]!)
        let plain = NN.conv2d(x, weight: dense, kernel: 3, padding: 1)
        var residual = Tensor(shape: plain.shape, data: (0..<plain.count).map { Float($0 % 13) - 6 })
        let start = residual
        NN.conv2d(x, weight: dense, kernel: 3, padding: 1, addingInto: &residual)
        var want = plain
        NN.add(&want, start)
        Self.check(residual, want, "conv2d adding into a residual", tolerance: 1e-6)
    }

    func testDenseWeight() {
        // [2, 3] x [4, 3]^T + bias, against a hand computation; accumulate adds to C.
        let w = Tensor(shape: [4, 3], data: [1, 2, 3, 0, 1, 0, -1, 0, 1, 2, 2, 2])
        let dense = DenseWeight(w, bias: Tensor(shape: [4], data: [0.5, 0, -1, 1]))
        let x = Tensor(shape: [2, 3], data: [1, 1, 1, 2, 0, -1])
        let y = dense(x)
        XCTAssertEqual(y.shape, [2, 4])
        XCTAssertEqual(y.data, [6.5, 1, -1, 7, -0.5, 0, -4, 3])
        var acc = Tensor(shape: [2, 4], data: [1, 1, 1, 1, 1, 1, 1, 1])
        dense.apply(x, addingInto: &acc)
        XCTAssertEqual(acc.data, y.data.map { $0 + 1 })
    }

    func testGroupNorm() throws {
        for name in ["groupnorm_g4_eps1e-5", "groupnorm_g4_eps1e-6"] {
            let f = try Self.fixture(name)
            var x = f["x"]!
            if x.rank == 3 { x = x.reshaped([x.shape[0], x.shape[1], 1, x.shape[2]]) }
            let want = f["y"]!
            let y = NN.groupNorm(NN.nhwc(x), groups: Int(f["groups"]!.data[0]), weight: f["weight"]!, bias: f["bias"]!, eps: f["eps"]!.data[0])
            Self.check(NN.nchw(y).reshaped(want.shape), want, name)
            // Fused SiLU equals GroupNorm then SiLU.
            var separate = y
            NN.silu(&separate)
            let fused = NN.groupNorm(NN.nhwc(x), groups: Int(f["groups"]!.data[0]), weight: f["weight"]!, bias: f["bias"]!, eps: f["eps"]!.data[0], silu: true)
            Self.check(fused, separate, name + " + fused SiLU", tolerance: 0)
        }
    }

    func testLayerNorm() throws {
        let f = try Self.fixture("layernorm")
        let y = NN.layerNorm(f["x"]!, weight: f["weight"]!, bias: f["bias"]!, eps: f["eps"]!.data[0])
        Self.check(y, f["y"]!, "layernorm")
    }

    func testActivations() throws {
        let f = try Self.fixture("activations")
        var a = f["x"]!, b = f["x"]!, c = f["x"]!
        NN.silu(&a); NN.gelu(&b); NN.geluTanh(&c)
        Self.check(a, f["silu"]!, "silu")
        Self.check(b, f["gelu"]!, "gelu")
        Self.check(c, f["gelu_tanh"]!, "gelu tanh")
    }

    /// The parallel chunking of the elementwise kernels agrees with the serial result on a large buffer.
    func testActivationsLargeBufferMatchesSmall() throws {
        let n = 300_001
        let values = (0..<n).map { Float(($0 * 7919) % 2001 - 1000) / 100 }
        var big = Tensor(shape: [n], data: values)
        NN.gelu(&big)
        for i in Swift.stride(from: 0, to: n, by: 997) {
            var one = Tensor(shape: [1], data: [values[i]])
            NN.gelu(&one)
            XCTAssertEqual(big.data[i], one.data[0])
        }
    }

    func testUpsampleNearest2x() throws {
        let f = try Self.fixture("upsample")
        Self.check(NN.nchw(NN.upsampleNearest2x(NN.nhwc(f["x"]!))), f["y"]!, "upsample nearest 2x", tolerance: 0)
    }

    /// Within 1e-5 for small t. For large t the error is set by torch, not by this kernel: torch's vectorized f32
    /// `exp` is off by one ulp from the correctly rounded value on 2 of the 160 frequencies (glibc's `expf`, used
    /// here, rounds correctly there), and one ulp of a frequency (<= 2^-23) times t moves the sin/cos argument by
    /// up to t * 1.2e-7 (5.9e-5 measured at t = 999). So each row is held to max(1e-5, 1.2e-7 * t).
    func testTimestepEmbedding() throws {
        let f = try Self.fixture("timestep")
        let t = f["t"]!.data
        let got = NN.timestepEmbedding(t, dim: 320)
        XCTAssertEqual(got.shape, [t.count, 320])
        for (r, step) in t.enumerated() {
            let row = Tensor(shape: [320], data: Array(got.data[(r * 320)..<((r + 1) * 320)]))
            let want = Tensor(shape: [320], data: Array(f["y"]!.data[(r * 320)..<((r + 1) * 320)]))
            Self.check(row, want, "timestep embedding (dim 320) t=\(step)", tolerance: max(1e-5, 1.2e-7 * step))
        }
    }

    func testSelfAttentionBlocked() throws {
        let f = try Self.fixture("attention_self")
        let heads = Int(f["heads"]!.data[0])
        XCTAssertEqual(f["q"]!.shape, [1, 300, 48])
        // 64 and 128 rows per block (blocks of 300 rows: 5 and 3, the last partial), one block, and the default.
        for block in [64, 128, 300, NN.defaultAttentionBlockRows] {
            let y = NN.attentionBlockedSGEMM(q: f["q"]!, k: f["k"]!, v: f["v"]!, heads: heads, blockRows: block)
            Self.check(y, f["y"]!, "self-attention (blocked sgemm) T=300 heads=\(heads) block=\(block)")
        }
        for path in NN.AttentionPath.allCases where path.isAvailable(.f32) {
            let y = NN.attention(q: f["q"]!, k: f["k"]!, v: f["v"]!, heads: heads, path: path)
            Self.check(y, f["y"]!, "self-attention (fused, \(path.name)) T=300 heads=\(heads)")
        }
    }

    func testCrossAttention() throws {
        let f = try Self.fixture("attention_cross")
        let y = NN.attentionBlockedSGEMM(q: f["q"]!, k: f["k"]!, v: f["v"]!, heads: Int(f["heads"]!.data[0]), blockRows: 50)
        Self.check(y, f["y"]!, "cross-attention (blocked sgemm) B=2 Tq=130 Tk=77 block=50")
        for path in NN.AttentionPath.allCases where path.isAvailable(.f32) {
            let y = NN.attention(q: f["q"]!, k: f["k"]!, v: f["v"]!, heads: Int(f["heads"]!.data[0]), path: path)
            Self.check(y, f["y"]!, "cross-attention (fused, \(path.name)) B=2 Tq=130 Tk=77")
        }
    }

    /// Softmax stays finite with huge logits (the row maximum is subtracted).
    func testSoftmaxStability() {
        var row: [Float] = [1000, 999, -1000, 1000]
        row.withUnsafeMutableBufferPointer { NN.softmaxRows($0.baseAddress!, rows: 1, cols: 4) }
        let e1 = Float(Foundation.exp(-1.0))
        let z = 2 + e1
        XCTAssertEqual(row[0], 1 / z, accuracy: 1e-6)
        XCTAssertEqual(row[1], e1 / z, accuracy: 1e-6)
        XCTAssertEqual(row[2], 0)
        XCTAssertEqual(row[3], 1 / z, accuracy: 1e-6)
    }
}
