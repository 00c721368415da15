import MumuFormats

/// `{method: lora, model: X, lora: FILE, strength: S}`: bakes a LoRA-family file into X
/// (LoraPatchSet: kohya LoRA / LoCon / LoHa / LoKr, PEFT, DoRA; docs/merging.md, "LoRA bake-in").
enum LoraBake {
    static let lora = Parameter<String>.path("lora", help: "the LoRA file")
    static let strength = Parameter<Float>("strength", default: 1, help: "multiplier (A1111's <lora:name:strength>)")
    static let definition = MethodDefinition(
        name: "lora", summary: "bake a LoRA / LyCORIS / PEFT / DoRA file into a model at a strength",
        inputs: ["model"], parameters: [lora, strength],
        prepare: { context in
            let path = try context[lora]
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
        let s = try args[strength]
        guard s != 0, patches.patchedKeys.contains(args.key) else { return .passthrough(0) }
        return .kernel(LoraKernel(patches: patches, strength: s,
                                  whole: patches.wholeTensorKeys.contains(args.key) ? args.info.elementCount : 1))
    }
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
