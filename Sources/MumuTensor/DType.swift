/// Element types of the tensors mumu reads and writes: every dtype the safetensors format knows.
/// The raw value is the safetensors spelling.
public enum DType: String, CaseIterable, Sendable, Codable {
    case f4 = "F4"
    case f6e2m3 = "F6_E2M3", f6e3m2 = "F6_E3M2"
    case bool = "BOOL", u8 = "U8", i8 = "I8"
    case f8e5m2 = "F8_E5M2", f8e4m3 = "F8_E4M3", f8e8m0 = "F8_E8M0"
    case f8e4m3fnuz = "F8_E4M3FNUZ", f8e5m2fnuz = "F8_E5M2FNUZ"
    case i16 = "I16", u16 = "U16", f16 = "F16", bf16 = "BF16"
    case i32 = "I32", u32 = "U32", f32 = "F32"
    case c64 = "C64", f64 = "F64", i64 = "I64", u64 = "U64"

    /// Bits per element.
    public var bits: Int {
        switch self {
        case .f4: return 4
        case .f6e2m3, .f6e3m2: return 6
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz: return 8
        case .i16, .u16, .f16, .bf16: return 16
        case .i32, .u32, .f32: return 32
        case .c64, .f64, .i64, .u64: return 64
        }
    }

    /// Bytes per element, for the dtypes of whole bytes; nil for the sub-byte ones.
    public var byteSize: Int? { bits % 8 == 0 ? bits / 8 : nil }

    /// Natural alignment used when laying out a file (sub-byte dtypes align to 1).
    public var alignment: Int { max(1, bits / 8) }

    /// Floating-point types that mumu converts to and from f32 (the ones models ship in).
    public var isConvertibleFloat: Bool {
        switch self {
        case .f16, .bf16, .f32, .f64, .f8e4m3, .f8e5m2: return true
        default: return false
        }
    }

    /// Any floating-point type, including the exotic ones mumu only carries through.
    public var isFloatingPoint: Bool {
        switch self {
        case .bool, .u8, .i8, .i16, .u16, .i32, .u32, .i64, .u64: return false
        default: return true
        }
    }

    /// Parses the user-facing spellings: `f16`, `fp16`, `float16`, `half`, `bf16`, `f32`, ... or a safetensors name.
    public init?(userName: String) {
        let lowered = userName.lowercased()
        switch lowered {
        case "f16", "fp16", "float16", "half": self = .f16
        case "bf16", "bfloat16": self = .bf16
        case "f32", "fp32", "float32", "float": self = .f32
        case "f64", "fp64", "float64", "double": self = .f64
        case "f8", "fp8", "f8_e4m3", "f8e4m3", "float8_e4m3fn", "e4m3": self = .f8e4m3
        case "f8_e5m2", "f8e5m2", "float8_e5m2", "e5m2": self = .f8e5m2
        default:
            guard let d = DType(rawValue: userName.uppercased()) else { return nil }
            self = d
        }
    }

    /// Byte count of `count` elements, or nil when it overflows or is not a whole number of bytes.
    public func byteCount(elements count: Int) -> Int? {
        let (bitsTotal, overflow) = count.multipliedReportingOverflow(by: bits)
        guard !overflow, bitsTotal % 8 == 0 else { return nil }
        return bitsTotal / 8
    }
}

/// Element count of a shape, or nil on overflow or a negative dimension.
public func elementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, o) = n.multipliedReportingOverflow(by: d)
        if o { return nil }
        n = p
    }
    return n
}
