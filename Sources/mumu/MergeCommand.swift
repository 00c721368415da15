import ArgumentParser
import Foundation
import MumuFormats
import MumuMerge

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge models with a recipe (YAML) or one method inline, streamed in bounded memory.",
        discussion: """
        mumu merge RECIPE.yaml -o OUT.safetensors
        mumu merge --method weighted_sum --a X --b Y --alpha 0.3 -o OUT.safetensors
        mumu merge --method ties --base B --models X,Y --density 0.3 -o OUT.safetensors
        mumu merge --method lora --a MODEL --lora LORA.safetensors --strength 0.8 -o OUT.safetensors
        mumu merge --into-mumu FINETUNE --mumu DECODER --base SDXL_BASE -o OUT.safetensors
        Methods: \(MergeMethods.all.map(\.name).joined(separator: ", ")). Recipes and formulas: docs/merging.md.
        """)

    @Argument(help: "A recipe file (YAML).")
    var recipe: String?
    @Option(name: [.short, .customLong("output")], help: "Output .safetensors file.")
    var output: String?
    @Flag(help: "Print the plan (inputs, hashes, architectures, keys per block, output size) without computing.")
    var dryRun = false
    @Flag(help: "With --dry-run: the plan as JSON.")
    var json = false

    @Option(help: "Inline: the method (weighted_sum, add_difference, ties, ...).")
    var method: String?
    @Option(help: "Inline: model a.") var a: String?
    @Option(help: "Inline: model b.") var b: String?
    @Option(help: "Inline: model c.") var c: String?
    @Option(help: "Inline (and --into-mumu): the base model.") var base: String?
    @Option(help: "Inline: comma-separated models for ties, dare, dare_ties, model_stock.") var models: String?
    @Option(help: "Inline: comma-separated weights, one per --models entry.") var weights: String?
    @Option(help: "Inline: alpha.") var alpha: Double?
    @Option(help: "Inline: beta.") var beta: Double?
    @Option(help: "Inline: density.") var density: Double?
    @Option(help: "Inline: lambda.") var lambda: Double?
    @Option(help: "Inline: seed (DARE).") var seed: Int?
    @Option(help: "Inline: vote (sum or count).") var vote: String?
    @Option(help: "Inline, --method lora: the LoRA file baked into --a (or --base).") var lora: String?
    @Option(help: "Inline, --method lora: the LoRA's strength (default 1).") var strength: Double?

    @Option(help: "A community fine-tune to put under MUMU: UNet = MUMU + (FINETUNE - base), MUMU's VAE and connector kept.")
    var intoMumu: String?
    @Option(help: "With --into-mumu: the MUMU decoder checkpoint.") var mumu: String?

    @Option(help: "Output dtype: f16, bf16, f32 or keep (default: the recipe's, else f16).")
    var dtype: MergeDType?
    @Option(help: "Keys some inputs lack: error (default), keep-first or skip.")
    var missing: String?
    @Flag(help: "Write non-finite output values instead of failing.")
    var allowNonfinite = false
    @Option(help: "ModelSpec title (default: the recipe's, else the output file name).")
    var title: String?
    @OptionGroup var out: OutputOptions

    /// The checks that involve several flags.
    func validate() throws {
        if json && !dryRun { throw ValidationError("--json prints the plan: use it with --dry-run") }
        if !dryRun && output == nil { throw ValidationError("give the output file with -o (or --dry-run)") }
        if intoMumu != nil {
            guard recipe == nil, method == nil else { throw ValidationError("--into-mumu takes no recipe or --method") }
            guard mumu != nil, base != nil else { throw ValidationError("--into-mumu needs --mumu DECODER and --base SDXL_BASE") }
        } else if recipe != nil {
            guard method == nil else { throw ValidationError("give a recipe file or --method, not both") }
        } else if method == nil {
            throw ValidationError("give a recipe file, --method NAME or --into-mumu")
        }
        if method == "lora" {
            guard lora != nil else { throw ValidationError("--method lora needs --lora FILE (and the model, --a or --base)") }
            guard (a != nil) != (base != nil) else { throw ValidationError("--method lora bakes into one model: give --a or --base") }
        } else {
            if lora != nil { throw ValidationError("--lora applies to --method lora") }
            if strength != nil { throw ValidationError("--strength applies to --method lora") }
        }
    }

    func run() throws {
        try runReportingErrors {
            let recipe = try makeRecipe()
            var options = MergeOptions()
            options.threads = max(1, out.threads)
            options.allowNonFinite = allowNonfinite
            if let dtype { options.dtype = dtype.rawValue }
            if let missing {
                guard let p = MissingKeyPolicy(rawValue: missing) else { throw ValidationError("--missing must be error, keep-first or skip") }
                options.missing = p
            }
            if !dryRun {
                guard let output else { throw ValidationError("give the output file with -o (or --dry-run)") }
                try OutputPath.check(output, overwrite: out.force)
            }
            let plan = try MergePlan(recipe: recipe, options: options)
            if !json { for note in plan.notes { warn(note) } }
            if dryRun {
                let hashes = try MergeMetadata.inputHashes(plan)
                if json { print(JSONWriter.write(planJSON(plan, hashes: hashes))) } else { printPlan(plan, hashes: hashes) }
                return
            }
            let bar = ProgressBar("merge", quiet: out.quiet)
            let start = Date()
            // Inputs not in the hash cache are hashed while the merge runs (their hashes go into the header last).
            let result = try MergeRunner.run(plan, to: output!, title: title, overwrite: out.force, inputHashes: InputHashes(plan),
                                             progress: bar.update)
            bar.finish()
            for line in result.nonFiniteInputs.prefix(10) { warn("non-finite values in input \(line)") }
            if !out.quiet {
                let seconds = Date().timeIntervalSince(start)
                print("wrote \(result.output): \(result.tensors) tensors, \(formatBytes(result.bytes)) in \(String(format: "%.1f", seconds)) s; "
                      + "hash_sha256 0x\(result.dataSHA256.prefix(16))…")
            }
        }
    }

    func makeRecipe() throws -> Recipe {
        let cwd = FileManager.default.currentDirectoryPath
        if let intoMumu, let mumu, let base {
            return Recipe.intoMumu(finetune: intoMumu, mumu: mumu, base: base, directory: cwd)
        }
        if let recipe { return try Recipe.load(path: recipe) }
        guard let method else { throw ValidationError("give a recipe file, --method NAME or --into-mumu") }
        var inline = InlineMerge(method: method)
        (inline.a, inline.b, inline.c, inline.base) = (a, b, c, base)
        inline.models = models?.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } ?? []
        inline.weights = try weights.map {
            try $0.split(separator: ",").map { w in
                guard let v = Double(w.trimmingCharacters(in: .whitespaces)) else { throw ValidationError("--weights: '\(w)' is not a number") }
                return v
            }
        }
        (inline.alpha, inline.beta, inline.density, inline.lambda) = (alpha, beta, density, lambda)
        (inline.seed, inline.vote, inline.lora, inline.strength) = (seed, vote, lora, strength)
        return Recipe.inline(inline, directory: cwd)
    }

    /// The plan `printPlan` shows, as JSON (docs/merging.md has the fields).
    func planJSON(_ plan: MergePlan, hashes: [String: FileHashes]) -> JSONValue {
        let inputs: [JSONValue] = plan.inputs.filter { $0.format != "unused" }.map { input in
            .object([("name", .string(input.name)), ("path", .string(input.path)), ("format", .string(input.format)),
                     ("architecture", input.architecture.map(JSONValue.string) ?? .null), ("tensors", .int(input.infos.count)),
                     ("sha256", hashes[input.name].map { .string($0.sha256) } ?? .null),
                     ("autov2", hashes[input.name].map { .string($0.autoV2) } ?? .null)])
        }
        let dtypes = Dictionary(grouping: plan.outputs, by: { $0.dtype.rawValue }).mapValues(\.count)
        return .object([
            ("schema", .int(1)),
            ("inputs", .array(inputs)),
            ("output", .object([("tensors", .int(plan.outputs.count)), ("bytes", .int(plan.outputBytes)),
                                ("architecture", plan.architecture.map { .string($0.name) } ?? .null),
                                ("dtypes", .object(dtypes.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.int($0.value)) }))])),
            ("keys_per_block", .object(plan.keysPerBlock.map { ("\($0.0)", JSONValue.int($0.1)) })),
            ("copied", .int(plan.copied.count)),
            ("left_out", .int(plan.skipped.count)),
            ("input_tensors_read", .int(plan.reads.values.reduce(0) { $0 + $1.count })),
            ("notes", .array(plan.notes.map { .string($0) })),
        ])
    }

    func printPlan(_ plan: MergePlan, hashes: [String: FileHashes]) {
        print("inputs:")
        for input in plan.inputs where input.format != "unused" {
            let h = hashes[input.name].map { "sha256 \($0.sha256.prefix(12))… AutoV2 \($0.autoV2)" } ?? "no file hash (folder or shards)"
            print("  \(input.name): \(input.path)")
            print("    \(input.format), \(input.architecture ?? "unknown architecture"), \(input.infos.count) tensors, \(h)")
        }
        print("output: \(plan.outputs.count) tensors, \(formatBytes(plan.outputBytes)), architecture \(plan.architecture?.name ?? "unknown")")
        let dtypes = Dictionary(grouping: plan.outputs, by: { $0.dtype.rawValue }).mapValues(\.count)
        print("  dtypes: " + dtypes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        print("keys per block: " + plan.keysPerBlock.map { "\($0.0) \($0.1)" }.joined(separator: ", "))
        if !plan.copied.isEmpty { print("copied unmerged: \(plan.copied.count) keys") }
        if !plan.skipped.isEmpty { print("left out: \(plan.skipped.count) keys") }
        let reads = plan.reads.values.reduce(0) { $0 + $1.count }
        print("input tensors read: \(reads)")
    }
}


/// `merge --dtype`: what the merged tensors are stored as (`keep`: each input tensor's own).
enum MergeDType: String, ExpressibleByArgument, CaseIterable {
    case f16, bf16, f32, keep
}
