import MumuTensor

/// The globals a checkpoint's pickle may name: container types, torch's tensor-rebuilding
/// functions, storage and dtype names, and a few inert data types found in real Lightning
/// checkpoints. Each is interpreted by Swift code in the unpickler; nothing is ever looked up
/// or executed. Every other name is refused with `FormatError.forbiddenGlobal` when read.
public enum PickleGlobal: Sendable, Hashable {
    /// `collections.OrderedDict`: builds a dict.
    case orderedDict
    /// `torch._utils._rebuild_tensor`, `_rebuild_tensor_v2`, `_rebuild_tensor_v3`.
    case rebuildTensor, rebuildTensorV2, rebuildTensorV3
    /// `torch._utils._rebuild_parameter`, `_rebuild_parameter_with_state`: the tensor inside.
    case rebuildParameter, rebuildParameterWithState
    /// `torch._tensor._rebuild_from_type_v2(func, type, args, state)`: `func(*args)`.
    case rebuildFromTypeV2
    /// `torch.Tensor`, `torch.nn.parameter.Parameter`: only as the type argument above.
    case tensorType, parameterType
    /// `torch.FloatStorage` and the other typed storages: the type slot of a persistent id.
    case typedStorage(DType)
    /// `torch.storage.UntypedStorage` (with `_rebuild_tensor_v3`).
    case untypedStorage
    /// `torch.float16` and the other dtypes.
    case dtype(DType)
    /// `torch.Size(seq)`: a tuple.
    case torchSize
    /// `builtins.set` / `builtins.frozenset` (protocol 2 writes sets this way).
    case set, frozenset
    /// `_codecs.encode(str, 'latin1')`: how protocol 2 writes `bytes`; a pure data conversion.
    case codecsEncode
    /// `numpy.core.multiarray.scalar(dtype, bytes)`: a number (Lightning's global_step).
    case numpyScalar
    /// `numpy.dtype(descr, align, copy)`: an inert dtype object.
    case numpyDType
    /// `numpy.core.multiarray._reconstruct`: an inert array placeholder.
    case numpyReconstruct
    /// Classes kept as inert placeholders: `numpy.ndarray`, Lightning's `ModelCheckpoint`,
    /// `torch.nn.modules.container.ParameterDict`.
    case inert(String)

    /// The allow-listed global called `module.name`, or nil.
    public init?(module: String, name: String) {
        switch (module, name) {
        case ("collections", "OrderedDict"): self = .orderedDict
        case ("torch._utils", "_rebuild_tensor"): self = .rebuildTensor
        case ("torch._utils", "_rebuild_tensor_v2"): self = .rebuildTensorV2
        case ("torch._utils", "_rebuild_tensor_v3"): self = .rebuildTensorV3
        case ("torch._utils", "_rebuild_parameter"): self = .rebuildParameter
        case ("torch._utils", "_rebuild_parameter_with_state"): self = .rebuildParameterWithState
        case ("torch._tensor", "_rebuild_from_type_v2"): self = .rebuildFromTypeV2
        case ("torch", "Tensor"), ("torch._tensor", "Tensor"): self = .tensorType
        case ("torch.nn.parameter", "Parameter"), ("torch.nn", "Parameter"): self = .parameterType
        case ("torch.storage", "UntypedStorage"), ("torch", "UntypedStorage"): self = .untypedStorage
        case ("torch", "Size"): self = .torchSize
        case ("builtins", "set"), ("__builtin__", "set"): self = .set
        case ("builtins", "frozenset"), ("__builtin__", "frozenset"): self = .frozenset
        case ("_codecs", "encode"): self = .codecsEncode
        case ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"): self = .numpyScalar
        case ("numpy", "dtype"): self = .numpyDType
        case ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"):
            self = .numpyReconstruct
        case ("numpy", "ndarray"),
             ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
             ("lightning.pytorch.callbacks.model_checkpoint", "ModelCheckpoint"),
             ("torch.nn.modules.container", "ParameterDict"):
            self = .inert("\(module).\(name)")
        case ("torch", _), ("torch.cuda", _):
            if let d = Self.storageTypes[name] {
                self = .typedStorage(d)
            } else if module == "torch", let d = Self.dtypes[name] {
                self = .dtype(d)
            } else {
                return nil
            }
        default:
            return nil
        }
    }

    /// The Python name, for messages.
    public var qualifiedName: String {
        switch self {
        case .orderedDict: return "collections.OrderedDict"
        case .rebuildTensor: return "torch._utils._rebuild_tensor"
        case .rebuildTensorV2: return "torch._utils._rebuild_tensor_v2"
        case .rebuildTensorV3: return "torch._utils._rebuild_tensor_v3"
        case .rebuildParameter: return "torch._utils._rebuild_parameter"
        case .rebuildParameterWithState: return "torch._utils._rebuild_parameter_with_state"
        case .rebuildFromTypeV2: return "torch._tensor._rebuild_from_type_v2"
        case .tensorType: return "torch.Tensor"
        case .parameterType: return "torch.nn.parameter.Parameter"
        case .typedStorage(let d):
            return "torch." + (Self.storageTypes.first { $0.value == d }?.key ?? "\(d.rawValue)Storage")
        case .untypedStorage: return "torch.storage.UntypedStorage"
        case .dtype(let d): return "torch." + (Self.dtypeNames[d] ?? d.rawValue)
        case .torchSize: return "torch.Size"
        case .set: return "builtins.set"
        case .frozenset: return "builtins.frozenset"
        case .codecsEncode: return "_codecs.encode"
        case .numpyScalar: return "numpy.core.multiarray.scalar"
        case .numpyDType: return "numpy.dtype"
        case .numpyReconstruct: return "numpy.core.multiarray._reconstruct"
        case .inert(let name): return name
        }
    }

    /// Legacy typed storages and the element type each holds.
    static let storageTypes: [String: DType] = [
        "FloatStorage": .f32, "HalfStorage": .f16, "BFloat16Storage": .bf16, "DoubleStorage": .f64,
        "LongStorage": .i64, "IntStorage": .i32, "ShortStorage": .i16, "CharStorage": .i8,
        "ByteStorage": .u8, "BoolStorage": .bool, "ComplexFloatStorage": .c64,
    ]

    /// torch dtype names (with their aliases) and mumu's dtype.
    static let dtypes: [String: DType] = [
        "float32": .f32, "float": .f32, "float16": .f16, "half": .f16, "bfloat16": .bf16,
        "float64": .f64, "double": .f64, "int64": .i64, "long": .i64, "int32": .i32, "int": .i32,
        "int16": .i16, "short": .i16, "int8": .i8, "uint8": .u8, "bool": .bool,
        "uint16": .u16, "uint32": .u32, "uint64": .u64, "complex64": .c64, "cfloat": .c64,
        "float8_e4m3fn": .f8e4m3, "float8_e5m2": .f8e5m2, "float8_e4m3fnuz": .f8e4m3fnuz,
        "float8_e5m2fnuz": .f8e5m2fnuz, "float8_e8m0fnu": .f8e8m0,
    ]

    static let dtypeNames: [DType: String] = [
        .f32: "float32", .f16: "float16", .bf16: "bfloat16", .f64: "float64", .i64: "int64",
        .i32: "int32", .i16: "int16", .i8: "int8", .u8: "uint8", .bool: "bool", .u16: "uint16",
        .u32: "uint32", .u64: "uint64", .c64: "complex64", .f8e4m3: "float8_e4m3fn",
        .f8e5m2: "float8_e5m2", .f8e4m3fnuz: "float8_e4m3fnuz", .f8e5m2fnuz: "float8_e5m2fnuz",
        .f8e8m0: "float8_e8m0fnu",
    ]
}
