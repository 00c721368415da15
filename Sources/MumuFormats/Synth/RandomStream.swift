/// A fast, seedable stream of uniform floats in [-1, 1) (SplitMix64, two 24-bit floats per step).
/// Each tensor gets its own stream, seeded from the run's seed and the tensor's name, so output does
/// not depend on thread count or order.
public struct RandomStream {
    private var state: UInt64

    public init(seed: UInt64, name: String) {
        // FNV-1a of the name, mixed with the seed.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        state = Self.mix(seed ^ Self.mix(h))
    }

    @inline(__always) static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Fills `out` with uniform values in [-1, 1).
    public mutating func fill(_ out: UnsafeMutableBufferPointer<Float>) {
        let scale: Float = 1.0 / Float(1 << 23)
        var i = 0
        let n = out.count
        while i + 1 < n {
            state &+= 0x9E37_79B9_7F4A_7C15
            let z = Self.mix(state)
            out[i] = Float(Int32(truncatingIfNeeded: z >> 40) - (1 << 23)) * scale
            out[i + 1] = Float(Int32(truncatingIfNeeded: (z >> 8) & 0xFF_FFFF) - (1 << 23)) * scale
            i += 2
        }
        if i < n {
            state &+= 0x9E37_79B9_7F4A_7C15
            out[i] = Float(Int32(truncatingIfNeeded: Self.mix(state) >> 40) - (1 << 23)) * scale
        }
    }
}
