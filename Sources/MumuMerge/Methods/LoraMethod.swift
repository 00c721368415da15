import MumuFormats

/// `{method: lora, model: X, lora: FILE, strength: S}`: bakes a LoRA-family file into X
/// (LoraPatchSet: kohya LoRA / LoCon / LoHa / LoKr, PEFT, DoRA; REFERENCE 3).
extension MergeMethods {
    static let lora: [MethodDefinition] = [
        MethodDefinition(
            name: "lora", summary: "bake a LoRA / LyCORIS / PEFT / DoRA file into a model at a strength",
            inputs: ["model"],
            parameters: [ParameterSpec("lora", .path, "the LoRA file"),
                         ParameterSpec("strength", .number(default: 1, range: nil), "multiplier (A1111's <lora:name:strength>)")],
            prepare: { context in
                guard let path = context.paths["lora"] else { return nil }
                let source: TensorSource
                do { source = try ModelFile.open(path).source } catch {
                    throw MergeError.recipe(path, "cannot read the LoRA: \(error)")
                }
                do { return try LoraPatchSet(source: source, target: context.target) } catch {
                    throw MergeError.incompatible("\(error)")
                }
            }
        ) { args in
            guard let patches = args.prepared as? LoraPatchSet else { return .passthrough(0) }
            let strength = args.float("strength")
            guard strength != 0, patches.patchedKeys.contains(args.key) else { return .passthrough(0) }
            return .kernel(LoraKernel(patches: patches, strength: strength,
                                      whole: patches.wholeTensorKeys.contains(args.key) ? args.info.elementCount : 1))
        },
    ]
}

/// Copies the model's rows and adds the LoRA's patch to them.
final class LoraKernel: MergeKernel {
    let patches: LoraPatchSet, strength: Float
    let granularity: Int
    init(patches: LoraPatchSet, strength: Float, whole: Int) { self.patches = patches; self.strength = strength; granularity = whole }

    func map(inputs: [UnsafePointer<Float>], output: UnsafeMutablePointer<Float>, chunk: Chunk) throws {
        output.update(from: inputs[0], count: chunk.count)
        try patches.apply(key: chunk.key, rows: chunk.rows, values: output, strength: strength)
    }
}
