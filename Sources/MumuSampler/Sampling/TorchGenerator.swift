import Foundation

/// PyTorch's CPU random generator (`torch.Generator("cpu").manual_seed(seed)`), so `randn` draws the same
/// normal values torch does: what diffusers uses for SDXL's initial latents and ancestral noise on CPU, so a
/// user reproduces a diffusers image with mumu from its seed (docs/architecture.md, "Seeds as torch draws
/// them").
///
/// The engine is the 32-bit Mersenne Twister (mt19937) seeded with the low 32 bits of the seed, as torch's
/// `CPUGeneratorImpl`. `randn` follows ATen's `normal_fill` for float tensors of at least 16 values: every
/// value first gets a uniform u = (next32 & 0xFFFFFF) · 2^-24; then each block of 16 is transformed by
/// Box-Muller (for j < 8: r = sqrt(-2 ln(1 - u[j])), θ = 2π u[j+8], v[j] = r cos θ, v[j+8] = r sin θ); when the
/// count is not a multiple of 16 the last 16 values are drawn again and transformed again.
public struct TorchGenerator: Sendable {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624
    /// The second value of the last double-precision Box-Muller pair (torch keeps it in the generator).
    private var nextDoubleNormal: Double?

    public init(seed: UInt64) {
        state[0] = UInt32(truncatingIfNeeded: seed)
        for i in 1..<624 {
            state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i)
        }
    }

    /// The next 32-bit output of mt19937.
    public mutating func next32() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    private mutating func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            var v = state[(i + 397) % 624] ^ (y >> 1)
            if y & 1 != 0 { v ^= 0x9908_B0DF }
            state[i] = v
        }
        index = 0
    }

    /// A float uniform in [0, 1) as torch draws it for float tensors (24 random bits).
    public mutating func uniform() -> Float { Float(next32() & 0xFF_FFFF) * (1.0 / 16_777_216.0) }

    /// `count` standard normal values, as `torch.randn(count, generator=g)` (float32). From 16 values on, torch's
    /// vectorized `normal_fill` (f32 Box-Muller over blocks of 16); below 16 (the latents of images under 32x32
    /// pixels), its serial path: one double-precision Box-Muller pair per two values, the second of a pair kept
    /// in the generator for the next draw, as `at::normal_distribution<double>` does.
    public mutating func randn(_ count: Int) -> [Float] {
        if count < 16 { return (0..<count).map { _ in Float(normalDouble()) } }
        var v = (0..<count).map { _ in uniform() }
        v.withUnsafeMutableBufferPointer { p in
            for start in Swift.stride(from: 0, through: count - 16, by: 16) { Self.boxMuller16(p.baseAddress! + start) }
            if count % 16 != 0 {
                let tail = p.baseAddress! + count - 16
                for i in 0..<16 { tail[i] = uniform() }
                Self.boxMuller16(tail)
            }
        }
        return v
    }

    /// A double uniform in [0, 1) from 53 bits of two 32-bit draws (the first is the high word), as ATen's
    /// `uniform_real_distribution<double>`.
    mutating func uniformDouble() -> Double {
        let hi = UInt64(next32()), lo = UInt64(next32())
        return Double(((hi << 32) | lo) & ((1 << 53) - 1)) * 0x1p-53
    }

    /// ATen's `normal_distribution<double>`: a cached second value of the last pair, else a new Box-Muller pair
    /// (u1 for the angle, u2 for the radius, log1p(-u2)).
    mutating func normalDouble() -> Double {
        if let cached = nextDoubleNormal {
            nextDoubleNormal = nil
            return cached
        }
        let u1 = uniformDouble(), u2 = uniformDouble()
        let r = (-2 * Foundation.log1p(-u2)).squareRoot()
        let theta = 2 * Double.pi * u1
        nextDoubleNormal = r * Foundation.sin(theta)
        return r * Foundation.cos(theta)
    }

    /// ATen's `normal_fill_16` (mean 0, std 1), in f32 as torch computes it.
    private static func boxMuller16(_ d: UnsafeMutablePointer<Float>) {
        for j in 0..<8 {
            let u1 = 1 - d[j], u2 = d[j + 8]
            let radius = (-2 * Foundation.log(u1)).squareRoot()
            let theta = 2 * Float.pi * u2
            d[j] = radius * Foundation.cos(theta)
            d[j + 8] = radius * Foundation.sin(theta)
        }
    }
}
