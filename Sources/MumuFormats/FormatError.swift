/// Everything that can be wrong with a file mumu reads or writes. Each case says where
/// (file, tensor, byte offset) and what is wrong, in words a user can act on.
public enum FormatError: Error, CustomStringConvertible, Equatable {
    /// The file is not in the format asked for, or breaks one of its rules.
    case malformed(path: String, reason: String)
    /// A tensor entry is wrong (dtype, shape, offsets).
    case badTensor(path: String, tensor: String, reason: String)
    /// A tensor name that is not in the file.
    case missingTensor(path: String, tensor: String)
    /// A file or folder that cannot be opened, read or written.
    case io(path: String, reason: String)
    /// A `.ckpt` whose pickle asks for something outside the allow-list: never executed.
    case forbiddenGlobal(path: String, global: String)
    /// A diffusers folder or sharded set that lacks a part.
    case missingComponent(path: String, component: String)
    /// A request mumu cannot carry out (unsupported conversion, bad option).
    case unsupported(String)

    public var description: String {
        switch self {
        case let .malformed(path, reason): return "\(path): \(reason)"
        case let .badTensor(path, tensor, reason): return "\(path): tensor '\(tensor)': \(reason)"
        case let .missingTensor(path, tensor): return "\(path): no tensor named '\(tensor)'"
        case let .io(path, reason): return "\(path): \(reason)"
        case let .forbiddenGlobal(path, global):
            return "\(path): refused: the pickle references '\(global)', which is not a tensor or container type; mumu never executes pickle code (convert the file with a tool you trust, or get a .safetensors version)"
        case let .missingComponent(path, component): return "\(path): missing \(component)"
        case let .unsupported(what): return what
        }
    }
}
