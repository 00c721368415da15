import MumuTensor

/// Rewrites a model tensor by tensor: another dtype, a subset of components, another layout,
/// shards. Streams: each output tensor is produced in parts straight from the (memory-mapped) input.
public struct ModelConverter {
    public var source: TensorSource
    /// Output float dtype (nil keeps each tensor's own). Integer tensors are always kept.
    public var dtype: DType?
    /// Components to keep (nil keeps everything).
    public var components: Set<String>?
    public var threads = 2

    public init(source: TensorSource) { self.source = source }

    /// One output tensor and where its bytes come from.
    public struct Item {
        public var output: TensorInfo
        public var sourceName: String
    }

    /// The output tensors (the source's names: layout conversion happens in the source, see `LayoutConverter`).
    public func plan() throws -> [Item] {
        var names = source.tensors
        if let components {
            let known: Set<String> = ["unet", "vae", "te1", "te2", "connector"]
            for c in components where !known.contains(c) {
                throw FormatError.unsupported("unknown component '\(c)': use \(known.sorted().joined(separator: ", "))")
            }
            names = names.filter { componentOf($0.name).map(components.contains) ?? false }
            guard !names.isEmpty else {
                throw FormatError.unsupported("\(source.path): none of the components \(components.sorted().joined(separator: ", ")) is present")
            }
        }
        return names.map { t in
            var out = t
            if let dtype, t.dtype.isConvertibleFloat { out.dtype = dtype }
            return Item(output: out, sourceName: t.name)
        }
    }

    /// The output metadata: the input's, minus hashes that no longer describe the bytes.
    public func metadata(changesBytes: Bool) -> [String: String] {
        var m = source.metadata
        if changesBytes {
            m["modelspec.hash_sha256"] = nil
            m["sshs_model_hash"] = nil
            m["sshs_legacy_hash"] = nil
        }
        return m
    }

    public func jobs(_ items: [Item]) -> [StreamJob] {
        items.map { item in
            StreamJob(output: item.output) { emit in
                let data = try source.tensor(item.sourceName)
                try withExtendedLifetime(data) { try StreamExecutor.converting(data, to: item.output.dtype)(emit) }
            }
        }
    }
}

/// The component a tensor belongs to, from its sgm or flat diffusers prefix (nil when neither).
public func componentOf(_ name: String) -> String? {
    if let sgm = SGMPrefix.split(name) { return sgm.prefix.component.rawValue }
    if let d = ModelComponent.splitDiffusers(name) { return d.component.rawValue }
    if name.hasPrefix("connector.") { return "connector" }
    return nil
}
