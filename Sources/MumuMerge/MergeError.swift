import MumuFormats

/// What can be wrong with a merge, found before any compute where it can be. Each message names
/// the recipe, file, model, key or argument concerned.
public enum MergeError: Error, CustomStringConvertible, Equatable {
    /// The recipe document (its path, and what is wrong).
    case recipe(String, String)
    /// An input model (its name in the recipe, and what is wrong).
    case input(String, String)
    /// The inputs do not fit together (architectures, shapes, key sets).
    case incompatible(String)
    /// A value that cannot be written (non-finite, out of range).
    case output(String)

    public var description: String {
        switch self {
        case let .recipe(origin, reason): return "\(origin): \(reason)"
        case let .input(name, reason): return "model '\(name)': \(reason)"
        case let .incompatible(reason): return reason
        case let .output(reason): return reason
        }
    }
}
