import MumuFormats

/// Why a model could not be loaded or run. Every case names the file and, where there is one, the tensor.
public enum DecoderError: Error, CustomStringConvertible, Equatable {
    /// The checkpoint has no tensors of a component the caller asked for (e.g. a UNet-only file asked for its text encoders).
    case missingComponent(path: String, component: String, detail: String)
    case missingTensor(path: String, tensor: String)
    case wrongShape(path: String, tensor: String, expected: [Int], found: [Int])
    case nonFinite(path: String, tensor: String, count: Int)
    /// The model's configuration could not be read or inferred, or is not one this code runs.
    case config(path: String, reason: String)
    /// An input to a forward pass does not fit the model.
    case input(String)

    public var description: String {
        switch self {
        case let .missingComponent(path, component, detail):
            return "\(path): no \(component) in this checkpoint (\(detail))"
        case let .missingTensor(path, tensor):
            return "\(path): tensor \(tensor) is missing"
        case let .wrongShape(path, tensor, expected, found):
            return "\(path): tensor \(tensor) has shape \(found), the model needs \(expected)"
        case let .nonFinite(path, tensor, count):
            return "\(path): tensor \(tensor) holds \(count) NaN or infinite value\(count == 1 ? "" : "s"); the model would produce garbage"
        case let .config(path, reason):
            return "\(path): \(reason)"
        case let .input(reason):
            return reason
        }
    }
}
