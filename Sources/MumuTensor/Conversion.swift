import CMumuKernels

/// Errors raised when a conversion is asked between dtypes mumu does not convert.
public struct ConversionError: Error, CustomStringConvertible {
    public let from: DType
    public let to: DType
    public init(from: DType, to: DType) { self.from = from; self.to = to }
    public var description: String { "cannot convert \(from.rawValue) to \(to.rawValue): only F16, BF16, F32, F64, F8_E4M3 and F8_E5M2 convert" }
}

/// Exact, vectorized element conversion between the floating-point dtypes models ship in.
/// Rounding is to nearest even; subnormals, infinities and NaN are preserved (NaN comes out quiet).
public enum Convert {
    /// Decodes `count` elements of `dtype` at `src` into f32 at `dst`.
    public static func toF32(_ src: UnsafeRawPointer, _ dtype: DType, _ dst: UnsafeMutablePointer<Float>, count: Int) throws {
        switch dtype {
        case .f32: dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
        case .f16: mumu_f16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, count)
        case .bf16: mumu_bf16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, count)
        case .f8e4m3: mumu_f8e4m3_to_f32(src.assumingMemoryBound(to: UInt8.self), dst, count)
        case .f8e5m2: mumu_f8e5m2_to_f32(src.assumingMemoryBound(to: UInt8.self), dst, count)
        case .f64:
            let s = src.assumingMemoryBound(to: Double.self)
            for i in 0..<count { dst[i] = Float(s[i]) }
        default: throw ConversionError(from: dtype, to: .f32)
        }
    }

    /// Encodes `count` f32 values at `src` as `dtype` at `dst`.
    public static func fromF32(_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, _ dtype: DType, count: Int) throws {
        switch dtype {
        case .f32: dst.assumingMemoryBound(to: Float.self).update(from: src, count: count)
        case .f16: mumu_f32_to_f16(src, dst.assumingMemoryBound(to: UInt16.self), count)
        case .bf16: mumu_f32_to_bf16(src, dst.assumingMemoryBound(to: UInt16.self), count)
        case .f8e4m3: mumu_f32_to_f8e4m3(src, dst.assumingMemoryBound(to: UInt8.self), count)
        case .f8e5m2: mumu_f32_to_f8e5m2(src, dst.assumingMemoryBound(to: UInt8.self), count)
        case .f64:
            let d = dst.assumingMemoryBound(to: Double.self)
            for i in 0..<count { d[i] = Double(src[i]) }
        default: throw ConversionError(from: .f32, to: dtype)
        }
    }

    /// Converts `count` elements from one dtype to another, in chunks through a small f32 buffer,
    /// with direct kernels for the common 16-bit pairs. Same dtype copies bytes.
    public static func convert(_ src: UnsafeRawPointer, from: DType, to: DType, _ dst: UnsafeMutableRawPointer, count: Int) throws {
        if from == to {
            guard let bytes = from.byteCount(elements: count) else { throw ConversionError(from: from, to: to) }
            dst.copyMemory(from: src, byteCount: bytes)
            return
        }
        guard from.isConvertibleFloat else { throw ConversionError(from: from, to: to) }
        guard to.isConvertibleFloat else { throw ConversionError(from: from, to: to) }
        switch (from, to) {
        case (.f16, .bf16):
            mumu_f16_to_bf16(src.assumingMemoryBound(to: UInt16.self), dst.assumingMemoryBound(to: UInt16.self), count); return
        case (.bf16, .f16):
            mumu_bf16_to_f16(src.assumingMemoryBound(to: UInt16.self), dst.assumingMemoryBound(to: UInt16.self), count); return
        case (_, .f32):
            try toF32(src, from, dst.assumingMemoryBound(to: Float.self), count: count); return
        case (.f32, _):
            try fromF32(src.assumingMemoryBound(to: Float.self), dst, to, count: count); return
        default: break
        }
        let chunk = 4096
        let fromSize = from.byteSize!, toSize = to.byteSize!
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: chunk)
        defer { buffer.deallocate() }
        var i = 0
        while i < count {
            let m = min(chunk, count - i)
            try toF32(src + i * fromSize, from, buffer, count: m)
            try fromF32(buffer, dst + i * toSize, to, count: m)
            i += m
        }
    }

    /// Convenience: decodes a whole byte buffer of `dtype` into a new f32 array.
    public static func toF32Array(_ bytes: UnsafeRawBufferPointer, _ dtype: DType) throws -> [Float] {
        guard let size = dtype.byteSize else { throw ConversionError(from: dtype, to: .f32) }
        let count = bytes.count / size
        return try [Float](unsafeUninitializedCapacity: count) { buf, n in
            if count > 0 { try toF32(bytes.baseAddress!, dtype, buf.baseAddress!, count: count) }
            n = count
        }
    }

    /// Convenience: encodes f32 values as a new byte array of `dtype`.
    public static func fromF32Array(_ values: [Float], _ dtype: DType) throws -> [UInt8] {
        guard let size = dtype.byteSize else { throw ConversionError(from: .f32, to: dtype) }
        return try [UInt8](unsafeUninitializedCapacity: values.count * size) { buf, n in
            try values.withUnsafeBufferPointer { v in
                if !v.isEmpty { try fromF32(v.baseAddress!, buf.baseAddress!, dtype, count: v.count) }
            }
            n = values.count * size
        }
    }

    /// Whether the fast F16C path is active on this CPU.
    public static var hasF16C: Bool { mumu_has_f16c() != 0 }
}
