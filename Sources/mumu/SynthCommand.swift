import ArgumentParser
import MumuFormats
import MumuTensor

struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Write a random-weight model with exactly an architecture's keys and shapes.",
        discussion: """
        For tests and benchmarks. With --perturb BASE --scale S it writes a "fine-tune" of BASE:
        base + seeded noise whose RMS is S times each tensor's RMS. The same options give the same bytes.
        An encoder architecture (idefics2-8b, idefics2-tiny) is written as a transformers folder (-o DIR):
        config.json, preprocessor_config.json, the weights in shards of at most --max-shard-size
        (model-0000i-of-0000n.safetensors + model.safetensors.index.json), bf16 by default, and the
        --tokenizer file as tokenizer.json.
        """)

    @Option(help: "Architecture: \(Architectures.all.filter { !$0.detectionOnly }.map(\.name).joined(separator: ", ")).")
    var arch: String
    @Option(help: "f16, bf16 or f32 (default: f16; bf16 for an encoder).")
    var dtype: OutputDType?
    @Option(help: "Random seed.")
    var seed: UInt64 = 0
    @Option(help: "Comma-separated components (default: all required ones; name an optional one such as 'connector' to add it).")
    var components: String?
    @Option(help: "A model to perturb (same architecture).")
    var perturb: String?
    @Option(help: "Relative size of the perturbation noise.")
    var scale: Float = 0.01
    @Option(name: .shortAndLong, help: "Output .safetensors file (a folder for an encoder architecture).")
    var output: String
    @Option(help: "Encoder only: a tokenizer.json to put in the folder (mumu encode needs one).")
    var tokenizer: String?
    @Option(help: "Encoder only: the largest shard, e.g. 5GB (the default, as transformers).")
    var maxShardSize: ByteSize?
    @Option(help: "Encoder only: mumu_image_size written to preprocessor_config.json (a multiple of 14).")
    var imageSize: Int = 448
    @OptionGroup var out: OutputOptions

    func run() throws {
        try runReportingErrors {
            guard let descriptor = Architectures.named(arch) else {
                throw ValidationError("unknown architecture '\(arch)': known are \(Architectures.names.joined(separator: ", "))")
            }
            var synth = Synthesizer(architecture: descriptor)
            let encoder = descriptor.kind == .encoder
            let chosen = dtype ?? (encoder ? .bf16 : .f16)
            guard let d = chosen.dtype else { throw ValidationError("--dtype keep: synthesized tensors need a dtype (f16, bf16, f32, f8_e4m3, f8_e5m2)") }
            synth.dtype = d
            synth.seed = seed
            synth.threads = out.threads
            synth.components = components.map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
            if let perturb {
                guard scale >= 0, scale.isFinite else { throw ValidationError("--scale must be a non-negative number") }
                synth.perturb = (try ModelFile.open(perturb).source, scale)
            }
            if !encoder {
                if tokenizer != nil || maxShardSize != nil { throw ValidationError("--tokenizer and --max-shard-size apply to encoder architectures (idefics2-*) only") }
            } else {
                guard imageSize >= 14, imageSize % 14 == 0 else { throw ValidationError("--image-size must be a positive multiple of 14 (got \(imageSize))") }
                let bar = ProgressBar("synth", quiet: out.quiet)
                let (files, bytes) = try synth.write(toFolder: output, overwrite: out.force, maxShardSize: maxShardSize?.bytes ?? 5_000_000_000,
                                                     tokenizer: tokenizer, imageSize: imageSize, progress: bar.update)
                bar.finish()
                if !out.quiet {
                    print("wrote \(output): \(descriptor.name), \(try synth.plan().count) tensors, \(formatBytes(bytes)) (\(d.rawValue)); files: \(files.joined(separator: ", "))")
                    if tokenizer == nil { print("note: no tokenizer.json in the folder: `mumu encode` needs one (give --tokenizer FILE, or copy it in)") }
                }
                return
            }
            let bar = ProgressBar("synth", quiet: out.quiet)
            let size = try synth.write(toFile: output, overwrite: out.force, progress: bar.update)
            bar.finish()
            if !out.quiet { print("wrote \(output): \(descriptor.name), \(try synth.plan().count) tensors, \(formatBytes(size))") }
        }
    }
}
