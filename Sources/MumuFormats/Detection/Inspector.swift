import MumuTensor

/// Everything `mumu inspect` reports on a model file or folder, as an ordered JSON document
/// (schema in docs/formats.md) and as text.
public struct InspectReport: Sendable {
    public var path: String
    public var format: ModelFile.Format
    public var sizeBytes: Int
    public var layout: String
    public var detection: ModelDetection
    public var lora: LoraDetection?
    public var metadata: [String: String]
    public var hashes: FileHashes?
    public var tensors: [TensorInfo]
    /// Non-tensor entries a `.ckpt` held (skipped).
    public var skipped: [String] = []

    public static let schemaVersion = 1

    public func json(includeKeys: Bool) -> JSONValue {
        func dict(_ d: [String: Int]) -> JSONValue { .object(d.sorted { $0.key < $1.key }.map { ($0.key, .int($0.value)) }) }
        func strings(_ d: [String: String]) -> JSONValue { .object(d.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }) }
        var o: [(String, JSONValue)] = [
            ("schema", .int(Self.schemaVersion)),
            ("path", .string(path)),
            ("format", .string(format.rawValue)),
            ("size_bytes", .int(sizeBytes)),
            ("layout", .string(layout)),
            ("architecture", detection.architecture.map(JSONValue.string) ?? .null),
            ("family", detection.family.map(JSONValue.string) ?? .null),
            ("notes", .array(detection.notes.map(JSONValue.string))),
            ("tensor_count", .int(detection.tensorCount)),
            ("parameters", .int(detection.parameters)),
            ("dtypes", dict(detection.dtypes)),
            ("components", .array(detection.components.map { c in
                .object([("name", .string(c.name)), ("status", .string(c.status)), ("tensors", .int(c.tensors)),
                         ("parameters", .int(c.parameters)), ("dtypes", dict(c.dtypes))])
            })),
            ("prediction", .object([("type", .string(detection.prediction.type)), ("source", .string(detection.prediction.source)),
                                    ("zero_terminal_snr", .bool(detection.prediction.zeroTerminalSNR)), ("edm", .bool(detection.prediction.edm))])),
            ("extra_tensor_count", .int(detection.extraTensors.count)),
            ("extra_tensors", .array(detection.extraTensors.prefix(20).map(JSONValue.string))),
            ("metadata", strings(metadata)),
            ("modelspec", ModelSpec(metadata: metadata).map { strings($0.fields) } ?? .null),
            ("kohya", KohyaMetadata(metadata: metadata).map { strings($0.fields) } ?? .null),
            ("a1111_merge", A1111MergeMetadata(metadata: metadata).map { m in
                .object([("recipe", m.recipe.map(JSONValue.string) ?? .null),
                         ("models", .array(m.models.map { .object([("sha256", .string($0.sha256)), ("name", .string($0.name)), ("legacy_hash", .string($0.legacyHash))]) }))])
            } ?? .null),
        ]
        if let h = hashes {
            o.append(("hashes", .object([("sha256", .string(h.sha256)), ("autov1", .string(h.autoV1)), ("autov2", .string(h.autoV2)),
                                         ("autov3", h.autoV3.map(JSONValue.string) ?? .null),
                                         ("modelspec_hash_sha256", h.modelspecHash.map(JSONValue.string) ?? .null)])))
        } else {
            o.append(("hashes", .null))
        }
        if let l = lora {
            o.append(("lora", .object([
                ("kind", .string(l.kind)), ("kinds", .array(l.kinds.map(JSONValue.string))), ("layout", .string(l.layout)),
                ("rank", l.rank.map(JSONValue.int) ?? .null), ("ranks", .array(l.ranks.map(JSONValue.int))),
                ("alpha", l.alphas.count == 1 ? .double(Double(l.alphas[0])) : .null),
                ("alphas", .array(l.alphas.map { .double(Double($0)) })),
                ("architecture", l.architecture.map(JSONValue.string) ?? .null),
                ("target_count", .int(l.modules.count)), ("targets", dict(l.targets)),
                ("modules", .array(l.modules.map { .string($0.name) })),
                ("notes", .array(l.notes.map(JSONValue.string))),
            ])))
        } else {
            o.append(("lora", .null))
        }
        if !skipped.isEmpty { o.append(("skipped_entries", .array(skipped.map(JSONValue.string)))) }
        if includeKeys {
            o.append(("keys", .array(tensors.map { .array([.string($0.name), .string($0.dtype.rawValue), .array($0.shape.map(JSONValue.int))]) })))
        }
        return .object(o)
    }

    public func text(includeKeys: Bool) -> String {
        var lines: [String] = []
        lines.append("\(path)")
        lines.append("  format        \(format.rawValue), \(formatBytes(sizeBytes)), layout \(layout)")
        if let l = lora {
            lines.append("  lora          \(l.kind) (\(l.layout)), rank \(l.rank.map(String.init) ?? "?")\(l.ranks.count > 1 ? " (ranks \(l.ranks.map(String.init).joined(separator: ", ")))" : ""), alpha \(l.alphas.map { "\($0)" }.joined(separator: ", ").ifEmpty("none"))")
            lines.append("  targets       \(l.modules.count) modules: " + l.targets.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            lines.append("  base          \(l.architecture ?? "unknown")")
            for n in l.notes { lines.append("  note          \(n)") }
        } else {
            lines.append("  architecture  \(detection.architecture ?? "unknown")\(detection.family.map { " (family \($0))" } ?? "")")
            for c in detection.components {
                let dt = c.dtypes.sorted { $0.key < $1.key }.map { "\($0.key) x\($0.value)" }.joined(separator: ", ")
                lines.append("  \(c.name.padding(13))\(c.status), \(c.tensors) tensors, \(groupDigits(c.parameters)) params (\(dt))")
            }
            let p = detection.prediction
            if p.type != "none" { lines.append("  prediction    \(p.type) (\(p.source))\(p.zeroTerminalSNR ? ", zero terminal SNR" : "")\(p.edm ? ", EDM" : "")") }
            if !detection.extraTensors.isEmpty {
                lines.append("  extra         \(detection.extraTensors.count) tensors outside the architecture, first: \(detection.extraTensors[0])")
            }
            for n in detection.notes { lines.append("  note          \(n)") }
        }
        lines.append("  tensors       \(detection.tensorCount), \(groupDigits(detection.parameters)) parameters; " +
                     detection.dtypes.sorted { $0.key < $1.key }.map { "\($0.key) x\($0.value)" }.joined(separator: ", "))
        if let spec = ModelSpec(metadata: metadata) {
            for key in ["title", "architecture", "author", "trigger_phrase", "prediction_type"] {
                if let v = spec[key] { lines.append("  modelspec     \(key): \(v)") }
            }
        }
        if let k = KohyaMetadata(metadata: metadata) {
            lines.append("  kohya         \(k.fields.count) ss_* keys" + (k.baseModelVersion.map { ", base \($0)" } ?? "") + (k.networkDim.map { ", dim \($0)" } ?? ""))
        }
        if let m = A1111MergeMetadata(metadata: metadata) {
            lines.append("  merged        from \(m.models.count) models (A1111 sd_merge_models)")
        }
        let others = metadata.keys.filter { !$0.hasPrefix("modelspec.") && !$0.hasPrefix("ss_") && !$0.hasPrefix("sshs_") }
        if !others.isEmpty { lines.append("  metadata      \(metadata.count) keys: " + others.sorted().prefix(8).joined(separator: ", ") + (others.count > 8 ? ", ..." : "")) }
        if let h = hashes {
            lines.append("  sha256        \(h.sha256)")
            lines.append("  autov2        \(h.autoV2)    autov1 \(h.autoV1)" + (h.autoV3.map { "    autov3 \($0)" } ?? ""))
        }
        if !skipped.isEmpty { lines.append("  skipped       \(skipped.count) non-tensor entries: \(skipped.prefix(5).joined(separator: ", "))") }
        if includeKeys {
            for t in tensors { lines.append("  \(t.name)  \(t.dtype.rawValue) \(t.shape)") }
        }
        return lines.joined(separator: "\n")
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
    func ifEmpty(_ other: String) -> String { isEmpty ? other : self }
}

func groupDigits(_ n: Int) -> String {
    let s = String(n)
    var out = ""
    for (i, c) in s.enumerated() {
        if i > 0 && (s.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return out
}

public enum Inspector {
    /// Inspects a file or folder: headers only, unless `hash` asks for the hashes (cached).
    public static func inspect(_ path: String, hash: Bool, cache: HashCache? = .shared) throws -> InspectReport {
        let (source, format) = try ModelFile.open(path)
        let names = source.tensors
        let lora = try LoraDetector.detect(source)
        let view = try SGMView.view(source, format: format, lenient: true)
        let detection = ModelDetector.detect(view.source.tensors, metadata: source.metadata)
        let layout = lora?.layout ?? (format == .transformers || detection.family == "idefics2" ? "transformers" : view.layout.rawValue)
        var size = 0
        if let sharded = source as? ShardedSafetensors {
            size = sharded.fileBytes          // the whole set (every shard and the index), not the index file
        } else if let folder = source as? TransformersFolder {
            size = folder.weightFileBytes
        } else if isDirectory(path) {
            size = source.tensors.reduce(0) { $0 + $1.byteCount }
        } else {
            size = FileIdentity(path: path)?.size ?? 0
        }
        var hashes: FileHashes?
        if hash {
            guard !isDirectory(path), format != .shardedSafetensors else {
                throw FormatError.unsupported("\(path): --hash applies to single files; hash each file of a folder or sharded set")
            }
            hashes = try (cache ?? HashCache(directory: HashCache.defaultDirectory())).hashes(of: path)
        }
        var report = InspectReport(path: path, format: format, sizeBytes: size, layout: layout, detection: detection,
                                   lora: lora, metadata: source.metadata, hashes: hashes, tensors: names)
        if let ckpt = source as? CheckpointFile { report.skipped = ckpt.skippedEntries }
        return report
    }
}
