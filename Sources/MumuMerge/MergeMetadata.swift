import CBLAS
import Foundation
import MumuFormats

/// The metadata a merged file carries: ModelSpec (architecture, title, merged_from, hash_sha256
/// filled after the data is written), the canonical recipe with the inputs' SHA-256 (`mumu_recipe`),
/// and A1111's `sd_merge_recipe` / `sd_merge_models` lineage, nested from the inputs' own.
public enum MergeMetadata {
    /// Whole-file hashes of the inputs (nil for folders and sharded sets, which have no single file; the cache's
    /// `wholeFileHashes`: one SHA-256 pass per file, since the metadata names inputs by their whole file).
    public static func inputHashes(_ plan: MergePlan, cache: HashCache = .shared) throws -> [String: FileHashes] {
        var out: [String: FileHashes] = [:]
        for (name, path) in hashedInputs(plan) { out[name] = try cache.wholeFileHashes(of: path) }
        return out
    }

    /// The inputs that have a whole-file hash: (name, path) of each single file the merge reads.
    static func hashedInputs(_ plan: MergePlan) -> [(name: String, path: String)] {
        plan.inputs.compactMap { input in
            var isDir: ObjCBool = false
            guard input.format != "unused", FileManager.default.fileExists(atPath: input.path, isDirectory: &isDir),
                  !isDir.boolValue, !input.path.hasSuffix(".index.json") else { return nil }
            return (input.name, input.path)
        }
    }

    /// The recipe in canonical JSON (sorted keys; model paths reduced to file names, with hashes).
    public static func canonicalRecipe(_ plan: MergePlan, hashes: [String: FileHashes]) -> String {
        let recipe = plan.recipe
        var models: [(String, JSONValue)] = []
        for input in plan.inputs where input.format != "unused" {
            var fields: [(String, JSONValue)] = [("file", .string((input.path as NSString).lastPathComponent))]
            if let arch = input.architecture { fields.append(("architecture", .string(arch))) }
            if let h = hashes[input.name] { fields.append(("sha256", .string(h.sha256))) }
            models.append((input.name, .object(fields)))
        }
        var output: [(String, JSONValue)] = [("dtype", .string(plan.options.dtype ?? recipe.output.dtype))]
        if let c = recipe.output.components { output.append(("components", .array(c.map { .string($0) }))) }
        if !recipe.output.excludeComponents.isEmpty {
            output.append(("exclude_components", .array(recipe.output.excludeComponents.map { .string($0) })))
        }
        let merge = recipe.merge.canonical(expandingUpTo: Recipe.maximumExpandedSize)
        var doc: [(String, JSONValue)] = [("merge", merge.value), ("models", .object(models.sorted { $0.0 < $1.0 })),
                                          ("output", .object(output)), ("version", .int(Recipe.version))]
        if !merge.anchors.isEmpty { doc.append(("anchors", .object(merge.anchors))) }
        if let policy = plan.options.missing ?? recipe.missing { doc.append(("missing", .string(policy.rawValue))) }
        return JSONWriter.write(.object(doc.sorted { $0.0 < $1.0 }))
    }

    /// Everything to write into the output's header. `hash_sha256` is a placeholder that
    /// `SafetensorsWriter.finish(fillingDataHashInto:)` fills.
    public static func metadata(_ plan: MergePlan, hashes: [String: FileHashes], title: String, date: Date = Date()) -> [String: String] {
        var m: [String: String] = [:]
        let used = plan.inputs.filter { $0.format != "unused" }
        let recipeJSON = canonicalRecipe(plan, hashes: hashes)
        m["mumu_recipe"] = recipeJSON

        // ModelSpec: from the output's architecture, else carried from the first input that has one.
        let parentSpec = used.lazy.compactMap { ModelSpec(metadata: $0.source.metadata) }.first
        var spec = ModelSpec()
        spec.fields["sai_model_spec"] = ModelSpec.version
        if let arch = plan.architecture {
            spec.fields["architecture"] = arch.modelspecArchitecture
            spec.fields["implementation"] = arch.modelspecImplementation
            spec.fields["resolution"] = arch.resolution
        }
        for field in ["architecture", "implementation", "resolution", "prediction_type"] where spec.fields[field] == nil {
            if let v = parentSpec?[field] { spec.fields[field] = v }
        }
        spec.fields["title"] = title
        spec.fields["date"] = ISO8601DateFormatter().string(from: date)
        spec.fields["merged_from"] = used.map { ($0.path as NSString).lastPathComponent }.joined(separator: ", ")
        spec.fields["description"] = "Merged by mumu from \(used.map(\.name).joined(separator: ", ")); the recipe is in mumu_recipe."
        spec.fields["hash_sha256"] = SafetensorsWriter.dataHashPlaceholder
        for (k, v) in spec.metadata { m[k] = v }

        // A1111 lineage: this merge's recipe, and every input (with its own recipe) plus the inputs' ancestors.
        var models: [A1111MergeMetadata.Model] = []
        var seen = Set<String>()
        for input in used {
            let parent = A1111MergeMetadata(metadata: input.source.metadata)
            if let h = hashes[input.name], seen.insert(h.sha256).inserted {
                models.append(.init(sha256: h.sha256, name: (input.path as NSString).lastPathComponent, legacyHash: h.autoV1,
                                    recipe: parent?.recipe))
            }
            for ancestor in parent?.models ?? [] where seen.insert(ancestor.sha256).inserted { models.append(ancestor) }
        }
        let a1111Recipe: JSONValue = .object([
            ("type", .string("mumu")),
            ("recipe", (try? JSONParser.parse(recipeJSON)) ?? .null),
            ("primary_model_hash", used.first.flatMap { hashes[$0.name] }.map { .string($0.sha256) } ?? .null),
        ])
        for (k, v) in A1111MergeMetadata(recipe: JSONWriter.write(a1111Recipe), models: models).metadata { m[k] = v }
        return m
    }
}

/// The inputs' whole-file hashes for a merge's metadata. Those the hash cache knows are there at once; the
/// others (a first merge of new files: SHA-256 of 7 GB each) are computed on a thread of their own while the merge
/// runs, instead of before it. Until then the metadata holds placeholders of the hashes' lengths (distinct per
/// input, never hex, so they equal no real hash); `MergeRunner` writes the header with them and replaces it with
/// the final one before the file is committed. That header is never longer than the first (A1111's lineage only
/// loses duplicates once the real hashes are known), so no tensor moves.
public final class InputHashes: @unchecked Sendable {
    /// Real hashes for the inputs known now, placeholders for those being computed.
    public let provisional: [String: FileHashes]
    /// Whether any input is being hashed in the background.
    public var isPending: Bool { !pending.isEmpty }
    private let pending: [(name: String, path: String)]
    private let group = DispatchGroup()
    private var computed: [String: FileHashes] = [:]
    private var failure: Error?

    /// Known hashes only (nothing computed).
    public init(known: [String: FileHashes]) {
        provisional = known
        pending = []
    }

    /// Looks every input up in `cache` and starts hashing the rest (`wholeFileHashes`, one file after another, on
    /// one thread; each result is stored in the cache as it lands).
    public init(_ plan: MergePlan, cache: HashCache = .shared) {
        var known: [String: FileHashes] = [:], pending: [(name: String, path: String)] = []
        for (name, path) in MergeMetadata.hashedInputs(plan) {
            if let h = cache.lookup(path) { known[name] = h } else { pending.append((name, path)) }
        }
        for (k, p) in pending.enumerated() {
            known[p.name] = FileHashes(sha256: String(repeating: "~", count: 58) + String(format: "%06d", k),
                                       autoV1: String(format: "~~%06d", k), dataSHA256: nil)
        }
        provisional = known
        self.pending = pending
        guard !pending.isEmpty else { return }
        group.enter()
        Thread.detachNewThread { [self] in
            defer { group.leave() }
            do {
                for p in self.pending { computed[p.name] = try cache.wholeFileHashes(of: p.path) }
            } catch {
                failure = error
            }
        }
    }

    /// Waits for the background hashing; every input's real hashes.
    public func resolve() throws -> [String: FileHashes] {
        group.wait()
        if let failure { throw failure }
        return provisional.merging(computed) { _, real in real }
    }
}

/// Writes a plan to a safetensors file, atomically: the merge, then the ModelSpec data hash.
public enum MergeRunner {
    public struct Result {
        public var output: String
        public var tensors: Int
        public var bytes: Int
        public var dataSHA256: String
        public var nonFiniteInputs: [String]
    }

    public static func run(_ plan: MergePlan, to path: String, title: String? = nil, overwrite: Bool,
                           hashes: [String: FileHashes], progress: ((StreamProgress) -> Void)? = nil) throws -> Result {
        try run(plan, to: path, title: title, overwrite: overwrite, inputHashes: InputHashes(known: hashes), progress: progress)
    }

    /// `inputHashes` may still be computing (`InputHashes(plan)`): the header is written with its placeholders and
    /// rewritten with the real hashes once the data is written.
    public static func run(_ plan: MergePlan, to path: String, title: String? = nil, overwrite: Bool,
                           inputHashes: InputHashes, progress: ((StreamProgress) -> Void)? = nil) throws -> Result {
        let name = title ?? plan.recipe.title ?? ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        let date = Date()
        let metadata = MergeMetadata.metadata(plan, hashes: inputHashes.provisional, title: name, date: date)
        try checkDiskSpace(for: path, bytes: plan.outputBytes + 1 << 20)
        let writer = try SafetensorsWriter(path: path, tensors: plan.outputs, metadata: metadata, overwrite: overwrite)
        writer.hashDataWhileWriting()
        let executor = MergeExecutor(plan: plan)
        // Keys run in parallel on our own workers; BLAS (LoRA GEMMs) must not spawn threads of its own.
        openblas_set_num_threads(1)
        do {
            try StreamExecutor.run(executor.jobs(order: writer.tensors), into: DeferredFinishSink(writer),
                                   threads: plan.options.threads, progress: progress)
        } catch {
            writer.abort()
            throw error
        }
        var final: [String: String]?
        if inputHashes.isPending {
            do {
                final = MergeMetadata.metadata(plan, hashes: try inputHashes.resolve(), title: name, date: date)
            } catch {
                writer.abort()
                throw error
            }
        }
        let digest = try writer.finish(fillingDataHashInto: "modelspec.hash_sha256", replacingMetadata: final)
        return Result(output: path, tensors: plan.outputs.count, bytes: plan.outputBytes, dataSHA256: digest,
                      nonFiniteInputs: executor.nonFiniteInputs)
    }

    /// Refuses to start when the output's file system lacks room for it.
    public static func checkDiskSpace(for path: String, bytes: Int) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let folder = dir.isEmpty ? "." : dir
        guard let attrs = try? FileManager.default.attributesOfFileSystem(forPath: folder),
              let free = (attrs[.systemFreeSize] as? NSNumber)?.int64Value else { return }
        if Int64(bytes) > free {
            throw MergeError.output("\(folder): \(formatBytes(Int(free))) free, the output needs \(formatBytes(bytes))")
        }
    }
}

/// Passes parts through to a writer but leaves finishing to the caller (who hashes the data first).
final class DeferredFinishSink: ModelSink, @unchecked Sendable {
    let writer: SafetensorsWriter
    init(_ writer: SafetensorsWriter) { self.writer = writer }
    func writePart(_ name: String, offset: Int, _ bytes: UnsafeRawBufferPointer) throws { try writer.writePart(name, offset: offset, bytes) }
    func finish() throws {}
    func abort() { writer.abort() }
}
