import XCTest
import MumuTensor
import CMumuKernels

/// Exhaustive checks of the dtype conversions over every bit pattern.
final class ConversionTests: XCTestCase {
    private let allHalf: [UInt16] = (0...0xFFFF).map { UInt16($0) }

    private func isNaN16(_ h: UInt16) -> Bool { (h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0 }

    /// f16 -> f32 agrees with Swift's own Float16 for all 65,536 patterns (NaN: quiet, same sign and payload top).
    func testF16ToF32AllPatterns() throws {
        var out = [Float](repeating: 0, count: allHalf.count)
        allHalf.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { mumu_f16_to_f32(src.baseAddress!, $0.baseAddress!, src.count) } }
        for h in allHalf {
            let got = out[Int(h)]
            let reference = Float(Float16(bitPattern: h))
            if isNaN16(h) {
                XCTAssertTrue(got.isNaN)
                XCTAssertEqual(got.bitPattern & 0x8000_0000, UInt32(h & 0x8000) << 16)
                XCTAssertEqual((got.bitPattern >> 13) & 0x1FF, UInt32(h & 0x1FF), "payload kept")
            } else {
                XCTAssertEqual(got.bitPattern, reference.bitPattern, "0x\(String(h, radix: 16))")
            }
            XCTAssertEqual(mumu_f16_to_f32_scalar(h).bitPattern, got.bitPattern, "scalar and vector paths agree")
        }
    }

    /// f32 -> f16: every f16 value round-trips, and every midpoint between neighbours (and the values
    /// just either side of it) rounds as IEEE round-to-nearest-even says; checked against Swift's Float16.
    func testF32ToF16RoundsToNearestEven() throws {
        var probes: [Float] = []
        for h in allHalf where !isNaN16(h) && (h & 0x7FFF) < 0x7C00 {
            let v = Float(Float16(bitPattern: h))
            probes.append(v)
            let next = Float(Float16(bitPattern: h).nextUp)
            let mid = (Double(v) + Double(next)) / 2
            let m = Float(mid)
            probes += [m, m.nextUp, m.nextDown]
        }
        probes += [.infinity, -.infinity, 65504, 65519.99, 65520, 1e10, -1e10, .leastNonzeroMagnitude, 2.9802322e-08, 2.9802326e-08]
        var out = [UInt16](repeating: 0, count: probes.count)
        probes.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { mumu_f32_to_f16(src.baseAddress!, $0.baseAddress!, src.count) } }
        for (i, p) in probes.enumerated() {
            XCTAssertEqual(out[i], Float16(p).bitPattern, "\(p)")
            XCTAssertEqual(mumu_f32_to_f16_scalar(p), out[i], "scalar and vector paths agree at \(p)")
        }
        // NaN stays NaN with its sign; the quiet bit is set.
        let nans: [Float] = [.nan, -.nan, Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFFC0_1234)]
        for n in nans {
            let h = mumu_f32_to_f16_scalar(n)
            XCTAssertTrue(isNaN16(h)); XCTAssertEqual(h & 0x8000, UInt16(n.bitPattern >> 16) & 0x8000); XCTAssertNotEqual(h & 0x0200, 0)
            var v = n, o: UInt16 = 0
            mumu_f32_to_f16(&v, &o, 1)
            XCTAssertTrue(isNaN16(o))
        }
    }

    /// bf16 -> f32 is exact for all 65,536 patterns, and f32 -> bf16 -> f32 is the identity on them.
    func testBF16AllPatterns() throws {
        let f = try Convert.toF32Array(allHalf.withUnsafeBytes { UnsafeRawBufferPointer($0) }, .bf16)
        for h in allHalf {
            let expected = Float(bitPattern: UInt32(h) << 16)
            if expected.isNaN {
                XCTAssertTrue(f[Int(h)].isNaN)
                XCTAssertEqual(f[Int(h)].bitPattern | 0x0040_0000, f[Int(h)].bitPattern, "quiet")
            } else {
                XCTAssertEqual(f[Int(h)].bitPattern, expected.bitPattern)
            }
        }
        let back = try Convert.fromF32Array(f, .bf16)
        back.withUnsafeBytes { raw in
            let b = raw.bindMemory(to: UInt16.self)
            for h in allHalf where !Float(bitPattern: UInt32(h) << 16).isNaN { XCTAssertEqual(b[Int(h)], h) }
        }
    }

    /// f32 -> bf16 rounding at every midpoint between neighbouring bf16 values (ties to even), using exact arithmetic in Double.
    func testF32ToBF16RoundsToNearestEven() throws {
        var probes: [Float] = []
        var expected: [UInt16] = []
        for h in stride(from: 0, through: 0x7F7E, by: 1) {     // every finite non-negative bf16 whose upper neighbour is finite
            let lo = Float(bitPattern: UInt32(h) << 16), hi = Float(bitPattern: UInt32(h + 1) << 16)
            let mid = Float((Double(lo) + Double(hi)) / 2)        // exact in f32: one more mantissa bit
            probes += [mid, mid.nextUp, mid.nextDown, -mid]
            let even = (h & 1) == 0 ? UInt16(h) : UInt16(h + 1)
            expected += [even, UInt16(h + 1), UInt16(h), even | 0x8000]
        }
        let out = try Convert.fromF32Array(probes, .bf16)
        out.withUnsafeBytes { raw in
            let b = raw.bindMemory(to: UInt16.self)
            for i in probes.indices where b[i] != expected[i] { XCTFail("\(probes[i]): got \(b[i]) expected \(expected[i])"); return }
        }
        let inf = try Convert.fromF32Array([.infinity, -.infinity, Float.greatestFiniteMagnitude], .bf16)
        XCTAssertEqual(inf, [0x80, 0x7F, 0x80, 0xFF, 0x80, 0x7F], "inf stays inf; FLT_MAX rounds to inf")
    }

    /// Direct f16 <-> bf16 kernels equal going through f32.
    func testDirectSixteenBitPairsMatchTheTwoStepPath() throws {
        let raw = allHalf.withUnsafeBytes { Array($0) }
        for (from, to) in [(DType.f16, DType.bf16), (.bf16, .f16)] {
            var direct = [UInt8](repeating: 0, count: raw.count)
            try raw.withUnsafeBytes { s in try direct.withUnsafeMutableBytes { try Convert.convert(s.baseAddress!, from: from, to: to, $0.baseAddress!, count: allHalf.count) } }
            let twoStep = try Convert.fromF32Array(try raw.withUnsafeBytes { try Convert.toF32Array($0, from) }, to)
            XCTAssertEqual(direct, twoStep, "\(from) -> \(to)")
        }
    }

    /// The merge's range check counts |x| >= the limit and NaNs, whatever the sign, at every position (the vector
    /// body and the tail), and agrees with a plain Swift count on every f16 pattern widened to f32.
    func testCountAtLeast() {
        var x = [Float](repeating: 0.5, count: 37)
        x[0] = 65520; x[8] = -65520; x[9] = 65519.99; x[17] = .nan; x[33] = -.infinity; x[36] = -.nan
        XCTAssertEqual(mumu_count_at_least_f32(x, x.count, 65520), 5)
        XCTAssertEqual(mumu_count_at_least_f32(x, x.count, .infinity), 3, "non-finite only")
        XCTAssertEqual(mumu_count_at_least_f32(x, 0, 1), 0)
        let all = allHalf.map { Float(Float16(bitPattern: $0)) }
        for limit: Float in [.infinity, 65504, 1, 0.25, .leastNonzeroMagnitude, 0] {
            let want = all.filter { $0.isNaN || abs($0) >= limit }.count
            XCTAssertEqual(mumu_count_at_least_f32(all, all.count, limit), want, "limit \(limit)")
        }
        XCTAssertEqual(mumu_count_nonfinite_f32(all, all.count), all.filter { !$0.isFinite }.count)
    }

    func testEveryDTypeIsKnownWithItsWidth() {
        XCTAssertEqual(DType.allCases.count, 22)
        let bits = Dictionary(uniqueKeysWithValues: DType.allCases.map { ($0.rawValue, $0.bits) })
        XCTAssertEqual(bits, ["F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
                              "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
                              "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64])
        XCTAssertEqual(DType(userName: "fp16"), .f16)
        XCTAssertEqual(DType(userName: "bfloat16"), .bf16)
        XCTAssertNil(DType(userName: "q4"))
        XCTAssertNil(DType.f4.byteCount(elements: 3))
        XCTAssertEqual(DType.f4.byteCount(elements: 4), 2)
        XCTAssertNil(elementCount([1 << 40, 1 << 40]))
    }
}
