import MumuTensor

/// `mumu convert` as a library call: the input's layout detected, the layout converted when asked, components
/// and dtype chosen, the output checked before any work, and the sink chosen (one file, shards with an index, or a
/// diffusers folder with its configs). `run` then streams the tensors.
public final class ConvertJob {
    public struct Request: Sendable {
        public var input: String
        public var output: String
        /// nil: the input's own layout.
        public var layout: Layout?
        /// nil: each tensor keeps its dtype.
        public var dtype: DType?
        /// nil: every component.
        public var components: Set<String>?
        /// Shards of at most this many bytes (single-file output only).
        public var maxShardSize: Int?
        public var overwrite = false
        public var threads = 2

        public init(input: String, output: String) {
            self.input = input
            self.output = output
        }
    }

    public struct Report: Sendable {
        public var tensors = 0
        /// What was written: the file, the shards' index, or the folder.
        public var written = ""
        public var shards: [String] = []
        /// Things the user should know (tensors left out, configs missing).
        public var notes: [String] = []
    }

    public let request: Request
    public private(set) var report = Report()
    private let converter: ModelConverter
    private let items: [ModelConverter.Item]
    private let sink: ModelSink

    public init(_ request: Request) throws {
        self.request = request
        if let shard = request.maxShardSize, shard <= 0 { throw FormatError.unsupported("the shard size must be positive") }
        if request.layout == .diffusers && request.maxShardSize != nil {
            throw FormatError.unsupported("shards apply to single-file output, not to a diffusers folder")
        }
        try OutputPath.check(request.output, overwrite: request.overwrite, folder: request.layout == .diffusers)
        let (opened, _) = try ModelFile.open(request.input)
        var source: TensorSource = opened
        var from: Layout?
        if let (flat, layout) = StoredLayout.detect(opened.names).flattened(opened) {
            source = flat
            from = layout
        }
        let to = request.layout ?? from
        if let from, let to, from != to {
            let converted = try LayoutConverter().convert(source: source, from: from, to: to)
            if !converted.unmapped.isEmpty {
                report.notes.append("\(converted.unmapped.count) tensors have no \(to) counterpart and are left out: " +
                    converted.unmapped.prefix(5).map(\.description).joined(separator: "; ") + (converted.unmapped.count > 5 ? "; ..." : ""))
            }
            source = converted
        } else if request.layout != nil && from == nil {
            throw FormatError.unsupported("\(request.input): cannot tell its layout, so it cannot be converted to \(request.layout!)")
        }
        var converter = ModelConverter(source: source)
        converter.dtype = request.dtype
        converter.threads = request.threads
        converter.components = request.components
        let items = try converter.plan()
        let changes = items.contains { $0.output.dtype != source.infoByName[$0.sourceName]?.dtype }
        var metadata = converter.metadata(changesBytes: changes)
        if let to { metadata["modelspec.implementation"] = metadata["modelspec.sai_model_spec"] == nil ? nil : to.rawValue }
        let outputs = items.map(\.output)
        if to == .diffusers {
            let (configs, note) = Self.diffusersConfigs(opened)
            if let note { report.notes.append(note) }
            sink = try DiffusersFolderWriter(path: request.output, tensors: outputs, metadata: metadata, configs: configs, overwrite: request.overwrite)
        } else if let size = request.maxShardSize {
            let sharded = try ShardedSafetensorsWriter(path: request.output, tensors: outputs, metadata: metadata, maxShardSize: size, overwrite: request.overwrite)
            report.written = sharded.indexPath
            report.shards = sharded.writers.map(\.path)
            sink = sharded
        } else {
            sink = try SafetensorsWriter(path: request.output, tensors: outputs, metadata: metadata, overwrite: request.overwrite)
        }
        if report.written.isEmpty { report.written = request.output }
        report.tensors = items.count
        self.converter = converter
        self.items = items
    }

    /// Streams every tensor into the output (atomically: nothing at the output path until it is complete).
    @discardableResult
    public func run(progress: ((StreamProgress) -> Void)? = nil) throws -> Report {
        try StreamExecutor.run(converter.jobs(items), into: sink, threads: request.threads, progress: progress)
        return report
    }

    /// Component configs for a diffusers folder: the input folder's own, else the detected architecture's.
    static func diffusersConfigs(_ source: TensorSource) -> ([ModelComponent: JSONValue], note: String?) {
        var configs: [ModelComponent: JSONValue] = [:]
        if let folder = source as? DiffusersFolder {
            for c in ModelComponent.allCases { if let cfg = folder.config(for: c) { configs[c] = cfg } }
            return (configs, nil)
        }
        let view = (try? SGMView.view(source, format: .safetensors, lenient: true))?.source.tensors ?? source.tensors
        let detection = ModelDetector.detect(view, metadata: source.metadata)
        guard let arch = detection.architecture.flatMap(Architectures.named) else {
            return ([:], "architecture unknown (\(detection.notes.first ?? "")): the diffusers folder gets no config.json files")
        }
        for c in ModelComponent.allCases { if let cfg = arch.component(c.rawValue)?.config, cfg != .null { configs[c] = cfg } }
        return (configs, nil)
    }
}
