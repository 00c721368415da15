import Foundation
import MumuTestSupport
import XCTest
import MumuSampler
import MumuTensor

/// TorchGenerator against torch.randn on CPU (scripts/gen_fixtures_seeds.py -> Fixtures/seeds.safetensors).
final class TorchGeneratorTests: XCTestCase {
    /// The uniforms are bit-identical; the Box-Muller transform uses glibc's logf/cosf/sinf where torch (on AVX2
    /// CPUs) uses SLEEF's vectorized ones (1 ulp accuracy each), so values may differ by a few ulps: 1e-5 absolute
    /// on values of magnitude <= ~5, far below what changes a sampled image.
    static let tolerance: Float = 1e-5

    func testMatchesTorchRandn() throws {
        let io = try readTensors(DecoderFixtures.folder.deletingLastPathComponent().appendingPathComponent("seeds.safetensors").path)
        func check(_ name: String, seed: UInt64) {
            let want = io[name]!
            var g = TorchGenerator(seed: seed)
            checkMaxError(Tensor(shape: want.shape, data: g.randn(want.count)), want, "randn \(name)", tolerance: Self.tolerance)
        }
        check("seed42_1x4x8x8", seed: 42)
        check("seed0_37", seed: 0)
        check("seed123456789_16", seed: 123_456_789)
        check("seed2p40_1x4x16x16", seed: (1 << 40) + 5)
        // Two successive draws continue one stream (ancestral noise after the initial latents).
        var g = TorchGenerator(seed: 7)
        let a = io["seed7_a"]!, b = io["seed7_b"]!
        checkMaxError(Tensor(shape: a.shape, data: g.randn(a.count)), a, "randn seed 7, first draw", tolerance: Self.tolerance)
        checkMaxError(Tensor(shape: b.shape, data: g.randn(b.count)), b, "randn seed 7, second draw", tolerance: Self.tolerance)
    }

    /// Fewer than 16 values take torch's serial double-precision path (an 8x8 or 16x8 image's latents); the
    /// second value of each pair carries over to the next draw. Tolerance: values computed in double and rounded
    /// to float, so ~1 ulp; 1e-6 absolute.
    func testSmallDrawsMatchTorch() throws {
        let io = try readTensors(DecoderFixtures.folder.deletingLastPathComponent().appendingPathComponent("seeds.safetensors").path)
        for n in 1...15 {
            var g = TorchGenerator(seed: 11)
            let want = io["small_\(n)"]!
            checkMaxError(Tensor(shape: want.shape, data: g.randn(n)), want, "randn \(n) values", tolerance: 1e-6)
        }
        var g = TorchGenerator(seed: 3)
        for k in 0...5 {
            let want = io["small_seq_\(k)"]!
            checkMaxError(Tensor(shape: want.shape, data: g.randn(want.count)), want, "randn sequence draw \(k)", tolerance: Self.tolerance)
        }
    }

    /// The engine is the reference mt19937: its 10,000th output from the default seed 5489 is 4123659995
    /// (C++ [rand.predef]).
    func testMersenneTwisterReferenceValue() {
        var g = TorchGenerator(seed: 5489)
        var last: UInt32 = 0
        for _ in 0..<10_000 { last = g.next32() }
        XCTAssertEqual(last, 4_123_659_995)
    }
}
