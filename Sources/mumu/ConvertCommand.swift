import ArgumentParser
import MumuFormats
import MumuTensor

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Rewrite a model in another dtype, layout or set of components, streamed.",
        discussion: "Reads any format `inspect` reads; writes safetensors (one file, or shards with --max-shard-size).")

    @Argument(help: "Input model.")
    var input: String
    @Argument(help: "Output .safetensors file (or a folder for --layout diffusers).")
    var output: String
    @Option(help: "Output layout: sgm (single file) or diffusers (folder). Default: the input's.")
    var layout: Layout?
    @Option(help: "Output dtype for float tensors: f16, bf16, f32 or keep.")
    var dtype: OutputDType = .keep
    @Option(help: "Comma-separated components to keep (unet, vae, te1, te2, connector).")
    var components: String?
    @Option(help: "Split the output into shards of at most this size (e.g. 2GB, 500MB).")
    var maxShardSize: ByteSize?
    @OptionGroup var out: OutputOptions

    func run() throws {
        try runReportingErrors {
            var request = ConvertJob.Request(input: input, output: output)
            request.layout = layout
            request.dtype = dtype.dtype
            request.components = components.map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
            request.maxShardSize = maxShardSize?.bytes
            request.overwrite = out.force
            request.threads = out.threads
            let job = try ConvertJob(request)
            for note in job.report.notes { warn(note) }
            let bar = ProgressBar("convert", quiet: out.quiet)
            let report = try job.run(progress: bar.update)
            bar.finish()
            if !out.quiet {
                let shards = report.shards.isEmpty ? "" : " in \(report.shards.count) shards"
                print("wrote \(report.written): \(report.tensors) tensors\(shards)")
            }
        }
    }
}
