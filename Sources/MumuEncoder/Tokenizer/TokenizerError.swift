/// What can go wrong loading a `tokenizer.json` or encoding with it. Each case names the file.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case invalidJSON(path: String, reason: String)
    /// A field the tokenizer needs is absent.
    case missingField(path: String, field: String)
    /// A field is present with a value of the wrong kind or out of range.
    case invalidField(path: String, field: String, reason: String)
    /// A component (normalizer, pre_tokenizer, model, post_processor, decoder) of a type this reader does not implement.
    case unsupported(path: String, field: String, type: String)
    /// The added tokens lack one MUMU's prompts need.
    case missingToken(path: String, token: String)
    /// Text with a character neither in the vocabulary nor representable by byte fallback.
    case unencodable(path: String, character: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason):
            return "cannot read tokenizer \(path): \(reason)"
        case let .invalidJSON(path, reason):
            return "tokenizer \(path) is not valid JSON: \(reason)"
        case let .missingField(path, field):
            return "tokenizer \(path) has no \(field)"
        case let .invalidField(path, field, reason):
            return "tokenizer \(path): \(field) \(reason)"
        case let .unsupported(path, field, type):
            return "tokenizer \(path): \(field) of type \"\(type)\" is not supported (this reader implements the "
                + "sentencepiece-style BPE of Mistral/Llama tokenizer.json files)"
        case let .missingToken(path, token):
            return "tokenizer \(path) has no added token \(token) (an Idefics2 tokenizer adds <fake_token_around_image>, "
                + "<image> and <end_of_utterance>)"
        case let .unencodable(path, character):
            return "tokenizer \(path) cannot encode \(character.unicodeScalars.map { "U+" + String($0.value, radix: 16, uppercase: true) }.joined(separator: " ")): "
                + "not in the vocabulary and no byte fallback"
        }
    }
}
