import Foundation
import MumuFormats
import MumuMerge
import MumuTensor

/// What `mumu styles add` asks for.
public struct StyleAddRequest {
    public var name: String
    /// A checkpoint, a LoRA, or a recipe (.yaml).
    public var from: String
    public var kind: StyleManifest.Kind?
    /// The base decoder: a file, or the name of a registered full style.
    public var base: String?
    /// Lossy delta: keep this rank (SVD), stored as a LoRA.
    public var rank: Int?
    /// Lossy delta: rank for 3x3 convolutions (0 = none, kohya's default).
    public var convRank: Int?
    /// Lossy delta: the components extracted (nil: the UNet, all of the MUMU decoder that has linear
    /// layers; the lossless delta keeps everything).
    public var components: Set<String>?
    public var lossyComponents: Set<String> {
        get { components ?? ["unet"] }
        set { components = newValue }
    }
    public var title: String?
    public var trigger: String?
    public var strength: Double?
    public var description: String?
    public var tags: [String] = []
    public var replace = false
    /// Keep the bytes in the original file instead of copying them (full and LoRA styles).
    public var byReference = false
    public var threads = 2
    public init(name: String, from: String) { self.name = name; self.from = from }

    /// The options that mean something for `kind` only: a typed error naming the first one given for another kind.
    /// (The CLI checks the same in `validate()` when the kind is given, with the flags' names.)
    public func checkOptions(for kind: StyleManifest.Kind) throws {
        if kind != .delta {
            let why = "only a delta style is extracted at a rank"
            if rank != nil { throw StyleError.optionNotForKind(option: "a rank", kind: kind, why: why) }
            if convRank != nil { throw StyleError.optionNotForKind(option: "a conv rank", kind: kind, why: why) }
            if components != nil { throw StyleError.optionNotForKind(option: "components", kind: kind, why: why) }
        } else if rank == nil {
            let why = "they choose what a rank-limited (SVD) delta keeps; the lossless delta keeps everything"
            if convRank != nil { throw StyleError.optionNotForKind(option: "a conv rank without a rank", kind: kind, why: why) }
            if components != nil { throw StyleError.optionNotForKind(option: "components without a rank", kind: kind, why: why) }
        }
        if kind == .full && base != nil {
            throw StyleError.optionNotForKind(option: "a base", kind: kind, why: "a full style is a whole checkpoint")
        }
        if byReference && (kind == .delta || kind == .recipe) {
            throw StyleError.optionNotForKind(option: "keeping the bytes by reference", kind: kind,
                                              why: "its blob is computed by mumu, not a file of yours")
        }
    }
}

/// A base resolved from what the user gave: a file, or a registered full style.
public struct ResolvedBase: Sendable, Equatable {
    public var path: String
    public var name: String
    public var sha256: String
    /// Given as a file (then `path` is recorded in manifests), not as a registered style.
    public var isFile: Bool
}

extension StyleRegistry {
    /// A base given as a file or as a registered full style: its path, name and SHA-256.
    public func resolveBase(_ spec: String, cache: HashCache = .shared, note: ((String) -> Void)? = nil) throws
        -> (path: String, name: String, sha256: String)
    {
        let b = try resolveBaseChoice(spec, cache: cache, note: note)
        return (b.path, b.name, b.sha256)
    }

    /// As `resolveBase`, saying whether a file or a style was taken. A bare name (no '/') that is a registered full
    /// style is that style, even when a file or folder of that name is in the working directory (a note says so:
    /// `./NAME` is the file); anything else is a file.
    public func resolveBaseChoice(_ spec: String, cache: HashCache = .shared, note: ((String) -> Void)? = nil) throws -> ResolvedBase {
        var isDir: ObjCBool = false
        let onDisk = FileManager.default.fileExists(atPath: spec, isDirectory: &isDir)
        let styleName = StyleManifest.normalizedName(spec)
        if !spec.contains("/"), StyleManifest.validName(styleName), let m = try? manifest(styleName) {
            if m.kind == .full, let blob = m.blob("weights") {
                if onDisk { note?("'\(spec)' is both a registered style and a \(isDir.boolValue ? "folder" : "file") here: took the style (write ./\(spec) for the \(isDir.boolValue ? "folder" : "file"))") }
                return ResolvedBase(path: blob.reference ?? blobPath(blob.sha256), name: m.name, sha256: blob.sha256, isFile: false)
            }
            if !onDisk { throw StyleError.invalid("style '\(m.name)' is a \(m.kind.rawValue) style; a base must be a file or a full style") }
            note?("'\(spec)' is a \(m.kind.rawValue) style, which cannot be a base: took the \(isDir.boolValue ? "folder" : "file") of that name")
        }
        if onDisk {
            guard !isDir.boolValue else { throw StyleError.invalid("base \(spec) is a folder: give a checkpoint file or a registered full style") }
            return ResolvedBase(path: spec, name: (spec as NSString).lastPathComponent, sha256: try cache.hashes(of: spec).sha256, isFile: true)
        }
        throw StyleError.invalid("base '\(spec)' is neither a file nor a registered full style")
    }

    /// Registers a style (see `StyleAddRequest`). Blobs are stored first; the manifest appears last, under the lock.
    @discardableResult
    public func add(_ request: StyleAddRequest, cache: HashCache = .shared, notes: ((String) -> Void)? = nil,
                    progress: ((WorkProgress) -> Void)? = nil) throws -> StyleManifest {
        var request = request
        request.name = StyleManifest.normalizedName(request.name)
        guard StyleManifest.validName(request.name) else { throw StyleError.badName(request.name) }
        if !request.replace && FileManager.default.fileExists(atPath: manifestPath(request.name)) { throw StyleError.exists(request.name) }
        let path = request.from
        guard FileManager.default.fileExists(atPath: path) else { throw StyleError.invalid("\(path): no such file") }
        let created = ISO8601DateFormatter().string(from: Date())
        let isRecipe = path.hasSuffix(".yaml") || path.hasSuffix(".yml")
        var manifest: StyleManifest

        if isRecipe || request.kind == .recipe {
            guard request.kind == nil || request.kind == .recipe else { throw StyleError.invalid("\(path) is a recipe; its kind is recipe") }
            try request.checkOptions(for: .recipe)
            let recipe = try Recipe.load(path: path)
            _ = try RecipeGraph(recipe: recipe)
            guard let baseSpec = request.base else { throw StyleError.needsBase(.recipe) }
            let base = try resolveBaseChoice(baseSpec, cache: cache, note: notes)
            let text = try Data(contentsOf: URL(fileURLWithPath: path))
            let blob = try storeBlob(bytes: text)
            let sources = [StyleManifest.Source(path: URL(fileURLWithPath: path).standardized.path, sha256: blob.sha256)]
                + recipe.models.map { StyleManifest.Source(path: $0.path, sha256: nil) }
            manifest = StyleManifest(name: request.name, title: request.title ?? recipe.title ?? request.name, kind: .recipe,
                                     architecture: nil, base: recorded(base), created: created,
                                     sources: sources, recipe: String(decoding: text, as: UTF8.self),
                                     blobs: [.init(role: "recipe", sha256: blob.sha256, size: blob.size, format: "yaml")])
        } else {
            let (source, _) = try ModelFile.open(path)
            let isLora = LoraDetector.looksLikeLora(source.names)
            let kind = request.kind ?? (isLora ? .lora : (request.base != nil || request.rank != nil ? .delta : .full))
            try request.checkOptions(for: kind)
            let spec = ModelSpec(metadata: source.metadata)
            let kohya = KohyaMetadata(metadata: source.metadata)
            var title = request.title ?? spec?["title"] ?? kohya?.outputName ?? request.name
            if title.isEmpty { title = request.name }
            switch kind {
            case .lora:
                guard isLora else { throw StyleError.invalid("\(path) is not a LoRA file; add it as a full or delta style") }
                // A LoRA is bound to an architecture, not a file: as in A1111 and ComfyUI it applies to any checkpoint
                // of its architecture. A base, when given, is checked now (a LoRA that matches nothing in it is
                // refused here, not at generation time) and recorded as the model it was trained on.
                let detection = try LoraDetector.detect(source)
                var base: ResolvedBase?
                if let baseSpec = request.base {
                    let b = try resolveBaseChoice(baseSpec, cache: cache, note: notes)
                    let patches = try LoraPatchSet(source: source, target: try ModelFile.open(b.path).source.tensors)
                    guard !patches.patchedKeys.isEmpty else {
                        throw StyleError.invalid("\(path): no module matches a tensor of base \(b.name) (another architecture?)")
                    }
                    base = b
                } else if detection?.architecture == nil {
                    throw StyleError.invalid("\(path): cannot tell which architecture this LoRA is for from its modules; give a base (a checkpoint it applies to)")
                }
                let blob = try blobFor(path, byReference: request.byReference, role: "lora", format: "safetensors", cache: cache, progress: progress)
                manifest = StyleManifest(name: request.name, title: title, kind: .lora, architecture: detection?.architecture,
                                         base: base.map(recorded), created: created,
                                         sources: [.init(path: path, sha256: blob.sha256)], blobs: [blob])
            case .full:
                guard !isLora else { throw StyleError.invalid("\(path) is a LoRA; its kind is lora") }
                let detection = ModelDetector.detect(source.tensors, metadata: source.metadata)
                let blob = try blobFor(path, byReference: request.byReference, role: "weights", format: "safetensors", cache: cache, progress: progress)
                manifest = StyleManifest(name: request.name, title: title, kind: .full, architecture: detection.architecture,
                                         base: nil, created: created, sources: [.init(path: path, sha256: blob.sha256)], blobs: [blob])
            case .delta:
                guard !isLora else { throw StyleError.invalid("\(path) is a LoRA; its kind is lora") }
                guard let baseSpec = request.base else { throw StyleError.needsBase(.delta) }
                let base = try resolveBaseChoice(baseSpec, cache: cache, note: notes)
                let baseSource = try ModelFile.open(base.path).source
                let detection = ModelDetector.detect(source.tensors, metadata: source.metadata)
                let baseDetection = ModelDetector.detect(baseSource.tensors, metadata: baseSource.metadata)
                if let a = detection.architecture, let b = baseDetection.architecture, a != b {
                    throw StyleError.invalid("\(path) is \(a), base \(base.name) is \(b): a delta needs the same architecture")
                }
                let sourceHash = try cache.hashes(of: path).sha256
                let tmp = temporaryPath(".delta")
                defer { unlink(tmp) }
                let blob: StyleManifest.Blob
                if let rank = request.rank {
                    let keep = request.lossyComponents
                    let report = try LoraExtractor.extract(base: FilteredSource(baseSource) { componentOf($0).map(keep.contains) ?? false },
                                                           tuned: FilteredSource(source) { componentOf($0).map(keep.contains) ?? false },
                                                           rank: rank, convRank: request.convRank ?? 0,
                                                           to: tmp, threads: request.threads, overwrite: true) { done, total in
                        progress?(WorkProgress(done: done, total: total, unit: .modules))
                    }
                    notes?(String(format: "rank-%d delta: %d modules, relative error %.4f against the true delta", rank,
                                  report.modules, report.relativeError))
                    let stored = try adoptBlob(tmp)
                    blob = .init(role: "lora", sha256: stored.sha256, size: stored.size, format: "safetensors")
                } else {
                    progress?(WorkProgress(done: 0, total: source.tensors.count, unit: .tensors))
                    _ = try XorDelta.encode(variant: source, base: baseSource, baseSHA256: base.sha256, to: tmp,
                                            threads: request.threads, overwrite: true) { done, total in
                        progress?(WorkProgress(done: done, total: total, unit: .tensors))
                    }
                    let stored = try adoptBlob(tmp)
                    blob = .init(role: "delta", sha256: stored.sha256, size: stored.size, format: XorDelta.format)
                }
                manifest = StyleManifest(name: request.name, title: title, kind: .delta, architecture: detection.architecture,
                                         base: recorded(base), created: created,
                                         sources: [.init(path: path, sha256: sourceHash)], rank: request.rank, blobs: [blob])
            case .recipe:
                throw StyleError.invalid("unreachable")
            }
            manifest.trigger = request.trigger ?? spec?["trigger_phrase"]
            manifest.description = request.description ?? spec?["description"]
            manifest.tags = request.tags.isEmpty ? (spec?["tags"].map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } } ?? []) : request.tags
            if let thumb = spec?["thumbnail"], let png = StyleRegistry.dataURI(thumb) {
                let p = try storeBlob(bytes: png)
                manifest.blobs.append(.init(role: "preview", sha256: p.sha256, size: p.size, format: "png"))
            }
        }
        if let s = request.strength { manifest.strength = s }
        if let a = manifest.architecture, a == "sd1" || a.hasPrefix("sd1") || a.hasPrefix("sd15") {
            notes?("style '\(request.name)' is \(a): generate renders SDXL only, so it cannot be rendered; it can still be merged and materialized")
        }
        manifest.tags = manifest.tags.filter { !$0.isEmpty }
        let final = manifest
        try withLock { try register(final, replace: request.replace) }
        return try self.manifest(request.name)
    }

    /// How a resolved base is recorded: its name and hash, and where it was when it was given as a file.
    func recorded(_ b: ResolvedBase) -> StyleManifest.Base {
        .init(sha256: b.sha256, name: b.name, path: b.isFile ? URL(fileURLWithPath: b.path).standardized.path : nil)
    }

    func blobFor(_ path: String, byReference: Bool, role: String, format: String, cache: HashCache,
                 progress: ((WorkProgress) -> Void)? = nil) throws -> StyleManifest.Blob {
        if byReference {
            let absolute = URL(fileURLWithPath: path).standardized.path
            let size = (try FileManager.default.attributesOfItem(atPath: absolute)[.size] as? NSNumber)?.intValue ?? 0
            return .init(role: role, sha256: try cache.hashes(of: absolute).sha256, size: size, format: format, reference: absolute)
        }
        let stored = try storeBlob(copying: path, progress: progress)
        return .init(role: role, sha256: stored.sha256, size: stored.size, format: format)
    }

    /// Decodes a `data:image/png;base64,...` URI.
    static func dataURI(_ s: String) -> Data? {
        guard s.hasPrefix("data:image/"), let comma = s.firstIndex(of: ",") else { return nil }
        return Data(base64Encoded: String(s[s.index(after: comma)...]))
    }

    // MARK: using styles

    /// Resolves a style for a resident base with the given SHA-256. Only a lossless delta needs its exact base (its
    /// bytes are a difference to it); LoRA and low-rank styles apply to any checkpoint of their architecture.
    public func plugin(_ name: String, baseSHA256: String?, cache: HashCache = .shared) throws -> StylePlugin {
        let m = try manifest(name)
        return try naming(m) { try makePlugin(m, baseSHA256: baseSHA256, cache: cache) }
    }

    /// Runs `body`, rewording errors that quote a blob's path in the store so they name the style instead.
    func naming<T>(_ m: StyleManifest, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as StyleError { throw e } catch {
            var text = "\(error)"
            var touched = false
            for b in m.blobs where b.reference == nil {
                let path = blobPath(b.sha256)
                if text.contains(path) { text = text.replacingOccurrences(of: path, with: "its \(b.role) blob"); touched = true }
            }
            if !touched { throw error }
            throw StyleError.corrupt("style '\(m.name)'", text)
        }
    }

    func makePlugin(_ m: StyleManifest, baseSHA256: String?, cache: HashCache) throws -> StylePlugin {
        let name = m.name
        if m.needsExactBase, let expected = m.base, let got = baseSHA256, expected.sha256 != got {
            throw StyleError.baseMismatch(style: name, expected: expected, got: got)
        }
        func blobFile(_ b: StyleManifest.Blob) throws -> String {
            let path = b.reference ?? blobPath(b.sha256)
            guard FileManager.default.fileExists(atPath: path) else {
                throw StyleError.corrupt("style '\(name)'", "its \(b.role) " + (b.reference.map { "file \($0)" } ?? "blob \(b.sha256.prefix(12))…")
                                         + " is missing; verify the registry")
            }
            // Never use a blob whose bytes are not the ones registered (hashed once, then cached by path,
            // size, mtime and inode, so an unchanged blob costs nothing on later uses).
            let actual = try cache.hashes(of: path).sha256
            guard actual == b.sha256 else {
                throw StyleError.corrupt("style '\(name)'", "its \(b.role) " + (b.reference.map { "file \($0)" } ?? "blob")
                                         + " is corrupted: sha256 \(actual.prefix(12))…, expected \(b.sha256.prefix(12))…; verify the registry")
            }
            return path
        }
        switch m.kind {
        case .full:
            guard let b = m.blob("weights") else { throw StyleError.corrupt("style '\(name)'", "no weights blob") }
            return FullStylePlugin(manifest: m, source: try ModelFile.open(try blobFile(b)).source)
        case .lora:
            guard let b = m.blob("lora") else { throw StyleError.corrupt("style '\(name)'", "no lora blob") }
            return LoraStylePlugin(manifest: m, source: try ModelFile.open(try blobFile(b)).source)
        case .delta:
            if let b = m.blob("lora") { return LoraStylePlugin(manifest: m, source: try ModelFile.open(try blobFile(b)).source) }
            guard let b = m.blob("delta") else { throw StyleError.corrupt("style '\(name)'", "no delta blob") }
            return DeltaStylePlugin(manifest: m, reader: try XorDelta.Reader(path: try blobFile(b)))
        case .recipe:
            let cached = try evaluateRecipe(m)
            return FullStylePlugin(manifest: m, source: try ModelFile.open(cached).source)
        }
    }

    /// A recipe style's merged checkpoint: evaluated on first use, then kept as a `cache` blob.
    public func evaluateRecipe(_ m: StyleManifest, threads: Int = 2, progress: ((WorkProgress) -> Void)? = nil) throws -> String {
        if let c = m.blob("cache") {
            let path = blobPath(c.sha256)
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        guard let text = m.recipe, let origin = m.sources.first?.path else { throw StyleError.corrupt("style '\(m.name)'", "no recipe") }
        let recipe = try Recipe.parse(text, origin: origin, directory: (origin as NSString).deletingLastPathComponent)
        var options = MergeOptions()
        options.threads = threads
        let plan = try MergePlan(recipe: recipe, options: options)
        let tmp = temporaryPath(".safetensors")
        defer { unlink(tmp) }
        _ = try MergeRunner.run(plan, to: tmp, title: m.title, overwrite: true, inputHashes: InputHashes(plan),
                                progress: progress.map { report in { report(WorkProgress($0)) } })
        let stored = try adoptBlob(tmp)
        try withLock {
            var updated = try manifest(m.name)
            updated.blobs.removeAll { $0.role == "cache" }
            updated.blobs.append(.init(role: "cache", sha256: stored.sha256, size: stored.size, format: "safetensors"))
            try register(updated, replace: true)
        }
        return blobPath(stored.sha256)
    }

    /// Writes a style as a full checkpoint any tool loads. A delta or LoRA style's base is `base` when given, else the
    /// file recorded when the style was added (if it is still there with the same bytes), else the registered full
    /// style of that name or hash.
    public func materialize(_ name: String, base: String?, to output: String, overwrite: Bool, threads: Int,
                            cache: HashCache = .shared, notes: ((String) -> Void)? = nil,
                            progress: ((WorkProgress) -> Void)? = nil) throws {
        let m = try manifest(name)
        try OutputPath.check(output, overwrite: overwrite)
        try naming(m) { try materialize(m, base: base, to: output, overwrite: overwrite, threads: threads, cache: cache,
                                        notes: notes, progress: progress) }
    }

    /// The base file of a style that needs one (see `materialize`).
    public func baseFile(of m: StyleManifest, given: String?, cache: HashCache = .shared,
                         notes: ((String) -> Void)? = nil) throws -> ResolvedBase {
        guard let expected = m.base else { throw StyleError.invalid("style '\(m.name)' records no base: give the base file") }
        if let given {
            let b = try resolveBaseChoice(given, cache: cache, note: notes)
            if b.sha256 != expected.sha256 { throw StyleError.baseMismatch(style: m.name, expected: expected, got: b.sha256) }
            return b
        }
        // A registered full style with that hash: the registry's own copy, cheapest to trust.
        if let full = list().styles.first(where: { $0.kind == .full && $0.blob("weights")?.sha256 == expected.sha256 }),
           let w = full.blob("weights") {
            return ResolvedBase(path: w.reference ?? blobPath(w.sha256), name: full.name, sha256: w.sha256, isFile: false)
        }
        if let path = expected.path {
            guard FileManager.default.fileExists(atPath: path) else {
                throw StyleError.baseUnavailable(style: m.name, base: expected.name, path: path, reason: "missing")
            }
            // Hashed once, then cached by path, size, mtime and inode: an unchanged base costs nothing.
            let actual = try cache.hashes(of: path).sha256
            guard actual == expected.sha256 else {
                throw StyleError.baseUnavailable(style: m.name, base: expected.name, path: path,
                                                 reason: "changed (sha256 \(actual.prefix(12))…, expected \(expected.sha256.prefix(12))…)")
            }
            return ResolvedBase(path: path, name: expected.name, sha256: actual, isFile: true)
        }
        throw StyleError.baseUnavailable(style: m.name, base: expected.name, path: nil,
                                         reason: "(sha256 \(expected.sha256.prefix(12))…) is not a registered full style and its file was not recorded")
    }

    func materialize(_ m: StyleManifest, base: String?, to output: String, overwrite: Bool, threads: Int,
                     cache: HashCache, notes: ((String) -> Void)?, progress: ((WorkProgress) -> Void)?) throws {
        let name = m.name
        let mergeProgress: ((StreamProgress) -> Void)? = progress.map { report in { report(WorkProgress($0)) } }
        switch m.kind {
        case .full:
            guard let b = m.blob("weights") else { throw StyleError.corrupt("style '\(name)'", "no weights blob") }
            try copyFile(b.reference ?? blobPath(b.sha256), to: output, overwrite: overwrite, progress: progress)
        case .recipe:
            try copyFile(try evaluateRecipe(m, threads: threads, progress: progress), to: output, overwrite: overwrite, progress: progress)
        case .delta where m.blob("delta") != nil:
            let b = try baseFile(of: m, given: base, cache: cache, notes: notes)
            let reader = try XorDelta.Reader(path: blobPath(m.blob("delta")!.sha256))
            guard reader.baseSHA256 == b.sha256 else {
                throw StyleError.baseMismatch(style: name, expected: .init(sha256: reader.baseSHA256, name: m.base?.name ?? "?"), got: b.sha256)
            }
            let source = DeltaSource(reader: reader, base: try ModelFile.open(b.path).source)
            let writer = try SafetensorsWriter(path: output, tensors: source.tensors, metadata: source.metadata, overwrite: overwrite)
            let jobs = source.tensors.map { info in
                StreamJob(output: info) { emit in
                    let t = try source.tensor(info.name)
                    try withExtendedLifetime(t) { try emit(t.bytes) }
                }
            }
            try StreamExecutor.run(jobs, into: writer, threads: threads, progress: mergeProgress)
        case .lora, .delta:
            let b = try baseFile(of: m, given: base, cache: cache, notes: notes)
            guard let blob = m.blob("lora") else { throw StyleError.corrupt("style '\(name)'", "no lora blob") }
            let recipe = Recipe(origin: "style \(name)", directory: "/", title: m.title, models: [("base", b.path)],
                                merge: .map([("method", .string("lora")), ("model", .string("base")),
                                             ("lora", .string(blob.reference ?? blobPath(blob.sha256))),
                                             ("strength", .number(m.strength))]))
            var recipeOut = recipe
            recipeOut.output.dtype = "keep"
            var options = MergeOptions()
            options.threads = threads
            let plan = try MergePlan(recipe: recipeOut, options: options)
            _ = try MergeRunner.run(plan, to: output, title: m.title, overwrite: overwrite,
                                    inputHashes: InputHashes(plan, cache: cache), progress: mergeProgress)
        }
    }

    func copyFile(_ from: String, to: String, overwrite: Bool, progress: ((WorkProgress) -> Void)? = nil) throws {
        let out = try AtomicFile(path: to, overwrite: overwrite)
        do {
            let file = try MappedFile(path: from)
            let chunk = 16 << 20
            let buffer = OwnedBuffer(byteCount: chunk)
            var offset = 0
            progress?(WorkProgress(done: 0, total: file.size, unit: .bytes))
            while offset < file.size {
                let n = min(chunk, file.size - offset)
                try file.read(offset..<(offset + n), into: buffer.pointer)
                try out.write(UnsafeRawBufferPointer(start: buffer.pointer, count: n), at: offset)
                offset += n
                progress?(WorkProgress(done: offset, total: file.size, unit: .bytes))
            }
            try out.commit()
        } catch { out.abort(); throw error }
    }

    // MARK: import

    /// Registers what an A1111 or ComfyUI models folder holds: checkpoints as full styles, LoRAs as lora styles
    /// (bound to their architecture; `base`, when given, is checked and recorded). Names come from the file names
    /// by `StyleManifest.name(from:)`, the rule `styles add` checks. Progress counts the bytes of all the files.
    /// A folder that is missing or holds no model file is an error. Returns the styles added and the files
    /// skipped, with reasons.
    public func importFolder(_ dir: String, base: String?, byReference: Bool, replace: Bool,
                             cache: HashCache = .shared, notes: ((String) -> Void)? = nil,
                             progress: ((WorkProgress) -> Void)? = nil) throws -> (added: [StyleManifest], skipped: [String]) {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: dir, isDirectory: &isDir) else { throw StyleError.nothingToImport(dir, reason: "no such folder") }
        guard isDir.boolValue else { throw StyleError.nothingToImport(dir, reason: "not a folder (add one file as a style instead)") }
        var checkpointDirs: [String] = [], loraDirs: [String] = []
        for sub in ["Stable-diffusion", "checkpoints", "models/Stable-diffusion", "models/checkpoints"] where fm.fileExists(atPath: dir + "/" + sub) {
            checkpointDirs.append(dir + "/" + sub)
        }
        for sub in ["Lora", "loras", "models/Lora", "models/loras"] where fm.fileExists(atPath: dir + "/" + sub) {
            loraDirs.append(dir + "/" + sub)
        }
        let leaf = (dir as NSString).lastPathComponent
        if checkpointDirs.isEmpty && loraDirs.isEmpty {
            if ["Lora", "loras"].contains(leaf) { loraDirs.append(dir) } else { checkpointDirs.append(dir) }
        }
        var added: [StyleManifest] = [], skipped: [String] = []
        func files(_ d: String) -> [String] {
            guard let e = fm.enumerator(atPath: d) else { return [] }
            return e.compactMap { $0 as? String }.filter { $0.hasSuffix(".safetensors") || $0.hasSuffix(".ckpt") }.sorted().map { d + "/" + $0 }
        }
        let work = checkpointDirs.flatMap { d in files(d).map { (false, $0) } } + loraDirs.flatMap { d in files(d).map { (true, $0) } }
        guard !work.isEmpty else {
            throw StyleError.nothingToImport(dir, reason: "no .safetensors or .ckpt file in it, nor in Stable-diffusion/, checkpoints/, Lora/ or loras/")
        }
        func size(_ f: String) -> Int { (try? fm.attributesOfItem(atPath: f)[.size] as? NSNumber)??.intValue ?? 0 }
        let total = work.reduce(0) { $0 + size($1.1) }
        var before = 0
        progress?(WorkProgress(done: 0, total: total, unit: .bytes))
        for (isLora, f) in work {
            defer { before += size(f); progress?(WorkProgress(done: before, total: total, unit: .bytes)) }
            let stem = ((f as NSString).lastPathComponent as NSString).deletingPathExtension
            guard let name = StyleManifest.name(from: stem) else { skipped.append("\(f): no style name can be made of '\(stem)'"); continue }
            if !replace && fm.fileExists(atPath: manifestPath(name)) { skipped.append("\(f): style '\(name)' exists"); continue }
            var req = StyleAddRequest(name: name, from: f)
            req.byReference = byReference
            req.replace = replace
            if isLora {
                req.kind = .lora
                req.base = base
            } else {
                req.kind = .full
            }
            let offset = before
            do {
                added.append(try add(req, cache: cache, notes: notes) { p in
                    if p.unit == .bytes { progress?(WorkProgress(done: offset + min(p.done, size(f)), total: total, unit: .bytes)) }
                })
            } catch { skipped.append("\(f): \(error)") }
        }
        return (added, skipped)
    }

    /// A file name turned into a style name (`StyleManifest.name(from:)`, "style" when nothing is left).
    public static func slug(_ s: String) -> String { StyleManifest.name(from: s) ?? "style" }
}

/// The tensors of a source whose names pass a test.
final class FilteredSource: TensorSource, @unchecked Sendable {
    let inner: TensorSource
    let tensors: [TensorInfo]
    init(_ inner: TensorSource, _ keep: (String) -> Bool) { self.inner = inner; tensors = inner.tensors.filter { keep($0.name) } }
    var path: String { inner.path }
    var metadata: [String: String] { inner.metadata }
    func tensor(_ name: String) throws -> TensorData { try inner.tensor(name) }
}
