import MumuFormats
import MumuSampler

/// Why MUMU's encoder networks (the Idefics2 folder, the connector) could not be loaded or run. Every case names
/// the file or folder and, where there is one, the tensor or config field.
public enum EncoderError: Error, CustomStringConvertible, Equatable {
    /// The folder is not an Idefics2 model (another `model_type`, no config.json, no Idefics2 tensors).
    case notIdefics2(path: String, reason: String)
    /// A config.json field is missing, of the wrong type, or has a value this code does not run.
    case config(path: String, field: String, reason: String)
    case missingTensor(path: String, tensor: String)
    case wrongShape(path: String, tensor: String, expected: [Int], found: [Int])
    case nonFinite(path: String, tensor: String, count: Int)
    /// The file has no MUMU connector (`connector.*`), or its tensors do not form one.
    case connector(path: String, reason: String)
    /// An input to a forward pass does not fit the model (wrong pixel size, token id outside the vocabulary,
    /// image-token count mismatch, sequence too long).
    case input(String)

    public var description: String {
        switch self {
        case let .notIdefics2(path, reason):
            return "\(path): not an Idefics2 encoder folder: \(reason)"
        case let .config(path, field, reason):
            return "\(path): config field \(field): \(reason)"
        case let .missingTensor(path, tensor):
            return "\(path): tensor \(tensor) is missing"
        case let .wrongShape(path, tensor, expected, found):
            return "\(path): tensor \(tensor) has shape \(found), the model needs \(expected)"
        case let .nonFinite(path, tensor, count):
            return "\(path): tensor \(tensor) holds \(count) NaN or infinite value\(count == 1 ? "" : "s"); the model would produce garbage"
        case let .connector(path, reason):
            return "\(path): \(reason)"
        case let .input(reason):
            return reason
        }
    }

    /// The same failure from `WeightReader` (which reports `DecoderError`), as an encoder error.
    static func from(_ error: Error) -> Error {
        guard let e = error as? DecoderError else { return error }
        switch e {
        case let .missingTensor(path, tensor): return EncoderError.missingTensor(path: path, tensor: tensor)
        case let .wrongShape(path, tensor, expected, found):
            return EncoderError.wrongShape(path: path, tensor: tensor, expected: expected, found: found)
        case let .nonFinite(path, tensor, count): return EncoderError.nonFinite(path: path, tensor: tensor, count: count)
        default: return e
        }
    }
}

/// Runs `body`, turning `WeightReader`'s `DecoderError`s into `EncoderError`s.
@inline(__always)
func translatingErrors<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch { throw EncoderError.from(error) }
}
