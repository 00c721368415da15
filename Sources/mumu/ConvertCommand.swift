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
    var layout: String?
    @Option(help: "Output dtype for float tensors: f16, bf16, f32 or keep.")
    var dtype = "keep"
    @Option(help: "Comma-separated components to keep (unet, vae, te1, te2, connector).")
    var components: String?
    @Option(help: "Split the output into shards of at most this size (e.g. 2GB, 500MB).")
    var maxShardSize: String?
    @OptionGroup var out: OutputOptions

    func run() throws {
        try runReportingErrors {
            let (source, _) = try ModelFile.open(input)
            var converter = ModelConverter(source: source)
            converter.dtype = try parseDType(dtype, allowKeep: true)
            converter.threads = out.threads
            converter.components = components.map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
            if let layout, layout != Layouts.detectLayout(source.names) {
                throw ValidationError("layout conversion to '\(layout)' is not available in this build")
            }
            let items = try converter.plan()
            let changes = items.contains { $0.output.dtype != source.infoByName[$0.sourceName]?.dtype }
            let metadata = converter.metadata(changesBytes: changes)
            let sink: ModelSink
            if let maxShardSize {
                sink = try ShardedSafetensorsWriter(path: output, tensors: items.map(\.output), metadata: metadata,
                                                    maxShardSize: try parseSize(maxShardSize), overwrite: out.force)
            } else {
                sink = try SafetensorsWriter(path: output, tensors: items.map(\.output), metadata: metadata, overwrite: out.force)
            }
            let bar = ProgressBar("convert", quiet: out.quiet)
            try StreamExecutor.run(converter.jobs(items), into: sink, threads: out.threads, progress: bar.update)
            bar.finish()
            if !out.quiet { print("wrote \(output): \(items.count) tensors") }
        }
    }
}
