/// `{method: lora, model: X, lora: FILE, strength: S}`: bakes a LoRA-family file into X.
extension MergeMethods {
    static let lora: [MethodDefinition] = []
}
