import MumuFormats
import MumuSampler

/// Why MUMU's encoder networks (the Idefics2 folder, the connector) could not be loaded or run. Every case names
/// the file or folder and, where there is one, the config field. Weight problems (a tensor missing, of another
/// shape, not finite) are `WeightReader`'s `DecoderError`s, the same for every network.
public enum EncoderError: Error, CustomStringConvertible, Equatable {
    /// The folder is not an Idefics2 model (another `model_type`, no config.json, no Idefics2 tensors).
    case notIdefics2(path: String, reason: String)
    /// A config.json field is missing, of the wrong type, or has a value this code does not run.
    case config(path: String, field: String, reason: String)
    /// The file has no MUMU connector (`connector.*`), or its tensors do not form one.
    case connector(path: String, reason: String)
    /// An encoder LoRA file (`--encoder-lora`) that cannot be read or does not fit the encoder.
    case lora(path: String, reason: String)
    /// An input to a forward pass does not fit the model (wrong pixel size, token id outside the vocabulary,
    /// image-token count mismatch, sequence too long).
    case input(String)

    public var description: String {
        switch self {
        case let .notIdefics2(path, reason):
            return "\(path): not an Idefics2 encoder folder: \(reason)"
        case let .config(path, field, reason):
            return "\(path): config field \(field): \(reason)"
        case let .connector(path, reason):
            return "\(path): \(reason)"
        case let .lora(path, reason):
            return "\(path): encoder LoRA: \(reason)"
        case let .input(reason):
            return reason
        }
    }
}
