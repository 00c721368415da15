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
        """)

    @Option(help: "Architecture: \(Architectures.all.filter { !$0.detectionOnly }.map(\.name).joined(separator: ", ")).")
    var arch: String
    @Option(help: "f16, bf16 or f32.")
    var dtype: OutputDType = .f16
    @Option(help: "Random seed.")
    var seed: UInt64 = 0
    @Option(help: "Comma-separated components (default: all required ones; name an optional one such as 'connector' to add it).")
    var components: String?
    @Option(help: "A model to perturb (same architecture).")
    var perturb: String?
    @Option(help: "Relative size of the perturbation noise.")
    var scale: Float = 0.01
    @Option(name: .shortAndLong, help: "Output .safetensors file.")
    var output: String
    @OptionGroup var out: OutputOptions

    func run() throws {
        try runReportingErrors {
            guard let descriptor = Architectures.named(arch) else {
                throw ValidationError("unknown architecture '\(arch)': known are \(Architectures.names.joined(separator: ", "))")
            }
            var synth = Synthesizer(architecture: descriptor)
            guard let d = dtype.dtype else { throw ValidationError("--dtype keep: synthesized tensors need a dtype (f16, bf16, f32, f8_e4m3, f8_e5m2)") }
            synth.dtype = d
            synth.seed = seed
            synth.threads = out.threads
            synth.components = components.map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
            if let perturb {
                guard scale >= 0, scale.isFinite else { throw ValidationError("--scale must be a non-negative number") }
                synth.perturb = (try ModelFile.open(perturb).source, scale)
            }
            let bar = ProgressBar("synth", quiet: out.quiet)
            let size = try synth.write(toFile: output, overwrite: out.force, progress: bar.update)
            bar.finish()
            if !out.quiet { print("wrote \(output): \(descriptor.name), \(try synth.plan().count) tensors, \(formatBytes(size))") }
        }
    }
}
