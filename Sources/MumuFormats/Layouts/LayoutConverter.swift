/// Converts a model between layouts (sgm single file <-> flat diffusers names) lazily: the result is a
/// `TensorSource` that makes each target tensor from the source's tensors when asked, so a 7 GB model
/// converts holding one or two tensors at a time. sgm -> diffusers -> sgm gives back the same names,
/// shapes, dtypes and bytes.
public struct LayoutConverter: Sendable {
    /// Name maps to use; nil sizes them from each source's names.
    public var keyMaps: KeyMaps?

    public init(keyMaps: KeyMaps? = nil) { self.keyMaps = keyMaps }

    /// `source` in `layout`. The source's own layout is detected from its names. Throws when it cannot
    /// be told, or when a tensor's shape does not fit its mapping; unknown names do not throw: they are
    /// left out and listed in the result's `unmapped`.
    public func convert(source: TensorSource, to layout: Layout) throws -> ConvertedSource {
        guard let (flat, from) = StoredLayout.detect(source.names).flattened(source) else {
            throw FormatError.unsupported(
                "\(source.path): cannot tell the layout: no tensor name starts with an sgm prefix (model.diffusion_model., first_stage_model., conditioner.embedders.N.) or a diffusers one (unet., vae., text_encoder., text_encoder_2.)")
        }
        return try convert(source: flat, from: from, to: layout)
    }

    /// `source`, whose names are in layout `from`, in layout `to`.
    public func convert(source: TensorSource, from: Layout, to: Layout) throws -> ConvertedSource {
        let plan = ConversionPlan(names: source.names, from: from, to: to, keyMaps: keyMaps)
        return try ConvertedSource(source: source, plan: plan)
    }
}

/// A model seen through a conversion plan: its names and tensors are the plan's targets, made from the
/// underlying source on demand. Renames and reshapes point into the source's bytes; fused q/k/v rows
/// are sliced without a copy; concatenations and transposes get a new buffer.
public final class ConvertedSource: TensorSource {
    public let source: TensorSource
    public let plan: ConversionPlan
    public let tensors: [TensorInfo]
    public var path: String { source.path }
    public var metadata: [String: String] { source.metadata }
    /// Source tensors the conversion leaves out, with reasons.
    public var unmapped: [UnmappedTensor] { plan.unmapped }

    /// For each target name: its mapping's index in the plan and its index among the mapping's targets.
    private let targetIndex: [String: (mapping: Int, target: Int)]
    private let infoByTarget: [String: TensorInfo]

    /// Checks every mapping against the source's shapes and dtypes; reads no tensor data.
    public init(source: TensorSource, plan: ConversionPlan) throws {
        self.source = source
        self.plan = plan
        let sourceInfo = source.infoByName
        var tensors: [TensorInfo] = []
        var index: [String: (Int, Int)] = [:]
        for (m, mapping) in plan.mappings.enumerated() {
            let inputs = try mapping.sources.map { name -> TensorInfo in
                guard let info = sourceInfo[name] else { throw FormatError.missingTensor(path: source.path, tensor: name) }
                return info
            }
            let outputs = try mapping.transform.targetInfos(sources: inputs, targets: mapping.targets, path: source.path)
            for (t, info) in outputs.enumerated() { index[info.name] = (m, t) }
            tensors += outputs
        }
        self.tensors = tensors
        self.targetIndex = index
        self.infoByTarget = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    public func tensor(_ name: String) throws -> TensorData {
        guard let (m, t) = targetIndex[name], let info = infoByTarget[name] else {
            throw FormatError.missingTensor(path: path, tensor: name)
        }
        let mapping = plan.mappings[m]
        let inputs = try mapping.sources.map { try source.tensor($0) }
        return try mapping.transform.apply(inputs, target: info, index: t, path: path)
    }
}
