/// What can be wrong when a LoRA-family file is matched to a model or baked into it. Each case names
/// the file and the module, and the shapes where shapes are the problem.
public enum LoraError: Error, CustomStringConvertible, Equatable {
    /// A module whose factors make a weight of another shape than the tensor its name targets.
    case shapeMismatch(path: String, module: String, target: String, targetShape: [Int], moduleShape: [Int], reason: String)
    /// A module whose own tensors are incomplete or do not fit each other (rank, dtype, magnitude).
    case badModule(path: String, module: String, reason: String)
    /// `apply` was asked for rows the patch cannot work on.
    case badRows(path: String, key: String, rows: Range<Int>, reason: String)
    /// The file holds no LoRA-family tensor names at all.
    case notALora(path: String)

    public var description: String {
        switch self {
        case let .shapeMismatch(path, module, target, targetShape, moduleShape, reason):
            return "\(path): LoRA module '\(module)' does not fit '\(target)': the model's tensor is \(Self.shape(targetShape)), "
                + "the module makes \(Self.shape(moduleShape)) (\(reason)); is the LoRA for another base model?"
        case let .badModule(path, module, reason):
            return "\(path): LoRA module '\(module)': \(reason)"
        case let .badRows(path, key, rows, reason):
            return "\(path): cannot patch rows \(rows.lowerBound)..<\(rows.upperBound) of '\(key)': \(reason)"
        case let .notALora(path):
            return "\(path): not a LoRA-family file (no lora_unet_ / lora_te / .lora_A. / .lora_down. / .hada_ / .lokr_ tensors)"
        }
    }

    static func shape(_ s: [Int]) -> String { "[" + s.map(String.init).joined(separator: ", ") + "]" }
}
