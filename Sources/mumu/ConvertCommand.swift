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
            let (opened, _) = try ModelFile.open(input)
            let inputLayout = Layouts.detectLayout(opened.names)
            var source: TensorSource = opened
            switch inputLayout {
            case "diffusers-unet": source = PrefixedSource(opened, diffusers: .unet)
            case "diffusers-vae": source = PrefixedSource(opened, diffusers: .vae)
            default: break
            }
            let from = Layout.detect(names: source.names)
            var to = from
            if let layout {
                guard let l = Layout(rawValue: layout) else { throw ValidationError("unknown layout '\(layout)': use sgm or diffusers") }
                to = l
            }
            if let from, let to, from != to {
                let converted = try LayoutConverter().convert(source: source, from: from, to: to)
                if !converted.unmapped.isEmpty {
                    warn("\(converted.unmapped.count) tensors have no \(to) counterpart and are left out: " +
                         converted.unmapped.prefix(5).map(\.description).joined(separator: "; ") + (converted.unmapped.count > 5 ? "; ..." : ""))
                }
                source = converted
            }
            var converter = ModelConverter(source: source)
            converter.dtype = try parseDType(dtype, allowKeep: true)
            converter.threads = out.threads
            converter.components = components.map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
            let items = try converter.plan()
            let changes = items.contains { $0.output.dtype != source.infoByName[$0.sourceName]?.dtype }
            var metadata = converter.metadata(changesBytes: changes)
            if let to { metadata["modelspec.implementation"] = metadata["modelspec.sai_model_spec"] == nil ? nil : to.rawValue }
            let sink: ModelSink
            if to == .diffusers {
                guard maxShardSize == nil else { throw ValidationError("--max-shard-size applies to single-file output, not --layout diffusers") }
                sink = try DiffusersFolderWriter(path: output, tensors: items.map(\.output), metadata: metadata,
                                                 configs: diffusersConfigs(opened), overwrite: out.force)
            } else if let maxShardSize {
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

/// Component configs for a diffusers folder: the input folder's own, else the detected architecture's.
func diffusersConfigs(_ source: TensorSource) -> [ModelComponent: JSONValue] {
    if let folder = source as? DiffusersFolder {
        var configs: [ModelComponent: JSONValue] = [:]
        for c in ModelComponent.allCases { if let cfg = folder.config(for: c) { configs[c] = cfg } }
        return configs
    }
    let layout = Layouts.detectLayout(source.names)
    let detection = ModelDetector.detect(Layouts.sgmView(source, layout: layout), metadata: source.metadata)
    guard let arch = detection.architecture.flatMap(Architectures.named) else {
        warn("architecture unknown (\(detection.notes.first ?? "")): the diffusers folder gets no config.json files")
        return [:]
    }
    var configs: [ModelComponent: JSONValue] = [:]
    for c in ModelComponent.allCases { if let cfg = arch.component(c.rawValue)?.config, cfg != .null { configs[c] = cfg } }
    return configs
}
