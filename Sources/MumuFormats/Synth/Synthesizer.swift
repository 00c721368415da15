import MumuTensor

/// Writes random-weight models with exactly an architecture's keys and shapes, streamed tensor by
/// tensor, for tests and benchmarks (no real weights exist on these machines). With a base model it
/// writes a "fine-tune" of it instead: base + seeded noise of relative size `scale` (per tensor,
/// noise RMS = scale x base RMS), so merges and deltas can be tested on related models.
/// The same options give the same bytes.
public struct Synthesizer {
    public var architecture: ArchitectureDescriptor
    public var dtype: DType = .f16
    public var seed: UInt64 = 0
    /// Components to include (nil: all non-optional ones; name an optional one to include it).
    public var components: Set<String>?
    /// A model to perturb, and the noise's relative size.
    public var perturb: (base: TensorSource, scale: Float)?
    public var threads = 2

    public init(architecture: ArchitectureDescriptor) { self.architecture = architecture }

    /// The tensors that will be written.
    public func plan() throws -> [ArchitectureDescriptor.Tensor] {
        guard !architecture.detectionOnly else {
            throw FormatError.unsupported("architecture '\(architecture.name)' is known for detection only; synth one of: \(Architectures.all.filter { !$0.detectionOnly }.map(\.name).joined(separator: ", "))")
        }
        let chosen: Set<String>
        if let components {
            let known = Set(architecture.components.map(\.name))
            for c in components where !known.contains(c) {
                throw FormatError.unsupported("architecture '\(architecture.name)' has no component '\(c)' (it has \(architecture.components.map(\.name).joined(separator: ", ")))")
            }
            chosen = components
        } else {
            chosen = Set(architecture.components.filter { !$0.optional }.map(\.name))
        }
        return architecture.tensors.filter { chosen.contains($0.component) && !$0.optional }
    }

    public func metadata() -> [String: String] {
        if architecture.kind == .encoder {
            // transformers refuses safetensors whose metadata lacks format "pt"; no ModelSpec for an encoder folder.
            var info: [(String, JSONValue)] = [("architecture", .string(architecture.name)), ("seed", .int(Int(truncatingIfNeeded: seed))), ("dtype", .string(dtype.rawValue))]
            if let perturb { info.append(("perturb", .string(perturb.base.path.split(separator: "/").last.map(String.init) ?? perturb.base.path))) }
            return ["format": "pt", "mumu.synth": JSONWriter.write(.object(info))]
        }
        var m: [String: String] = [
            "modelspec.sai_model_spec": "1.0.1",
            "modelspec.architecture": architecture.modelspecArchitecture,
            "modelspec.implementation": architecture.modelspecImplementation,
            "modelspec.resolution": architecture.resolution,
            "modelspec.prediction_type": architecture.prediction,
            "modelspec.title": perturb == nil ? "synthetic \(architecture.name) (seed \(seed))" : "synthetic fine-tune of \(architecture.name) (seed \(seed))",
            "modelspec.description": "Random weights written by `mumu synth`; not a real model.",
        ]
        var info: [(String, JSONValue)] = [("architecture", .string(architecture.name)), ("seed", .int(Int(truncatingIfNeeded: seed))), ("dtype", .string(dtype.rawValue))]
        if let perturb {
            info.append(("perturb", .object([("base", .string(perturb.base.path.split(separator: "/").last.map(String.init) ?? perturb.base.path)),
                                             ("scale", .double(Double(perturb.scale)))])))
        }
        m["mumu.synth"] = JSONWriter.write(.object(info))
        return m
    }

    /// Writes the model into `sink`, which must have been created with `outputInfos()`.
    public func outputInfos() throws -> [TensorInfo] {
        try plan().map { TensorInfo(name: $0.name, dtype: $0.dtype ?? dtype, shape: $0.shape) }
    }

    /// transformers' name of a dtype in config.json.
    static func transformersDType(_ d: DType) -> String? {
        switch d {
        case .bf16: return "bfloat16"
        case .f16: return "float16"
        case .f32: return "float32"
        case .f8e4m3: return "float8_e4m3fn"
        case .f8e5m2: return "float8_e5m2"
        default: return nil
        }
    }

    /// The files besides the weights of an encoder folder: `config.json` (the descriptor's, as transformers writes
    /// it, with `dtype` set to the weights' dtype), `preprocessor_config.json` (Idefics2's image processor without
    /// image splitting, plus `mumu_image_size`), and `tokenizer.json` when a tokenizer file is given (checked to be
    /// JSON; copied as is).
    public func folderFiles(tokenizer: String?, imageSize: Int = 448) throws -> [(name: String, contents: String)] {
        guard architecture.kind == .encoder, case let .object(fields)? = architecture.folderConfig else {
            throw FormatError.unsupported("architecture '\(architecture.name)' is not written as a folder (it is a single-file checkpoint: give -o FILE.safetensors)")
        }
        var config = fields.filter { $0.0 != "dtype" }
        if let name = Self.transformersDType(dtype) {
            let at = config.firstIndex { $0.0 > "dtype" } ?? config.count
            config.insert(("dtype", .string(name)), at: at)
        }
        var files: [(name: String, contents: String)] = [("config.json", JSONWriter.write(.object(config)) + "\n")]
        let half: JSONValue = .array([.double(0.5), .double(0.5), .double(0.5)])
        let preprocessor: JSONValue = .object([
            ("do_convert_rgb", .bool(true)), ("do_image_splitting", .bool(false)), ("do_normalize", .bool(true)), ("do_pad", .bool(true)),
            ("do_rescale", .bool(true)), ("do_resize", .bool(true)), ("image_mean", half), ("image_processor_type", .string("Idefics2ImageProcessor")),
            ("image_std", half), ("mumu_image_size", .int(imageSize)), ("resample", .int(2)), ("rescale_factor", .double(1.0 / 255.0)),
            ("size", .object([("longest_edge", .int(980)), ("shortest_edge", .int(378))])),
        ])
        files.append(("preprocessor_config.json", JSONWriter.write(preprocessor) + "\n"))
        if let tokenizer {
            guard fileExists(tokenizer), !isDirectory(tokenizer) else { throw FormatError.io(path: tokenizer, reason: "no such file (--tokenizer takes a tokenizer.json)") }
            let file = try MappedFile(path: tokenizer)
            do {
                let json = try JSONParser.parse(file.all)
                guard json["model"]?.objectValue != nil else {
                    throw FormatError.malformed(path: tokenizer, reason: "not a tokenizers tokenizer.json (no 'model' object)")
                }
            } catch let e as JSONParseError {
                throw FormatError.malformed(path: tokenizer, reason: "not valid JSON: \(e)")
            }
            files.append(("tokenizer.json", String(decoding: file.all, as: UTF8.self)))
        }
        return files
    }

    /// Writes an encoder architecture (kind `encoder`) as a transformers folder at `path`: the weights in shards of at
    /// most `maxShardSize` tensor bytes (one `model.safetensors` when they fit in one), streamed, plus `folderFiles`.
    /// Returns the weight files written and their total tensor bytes.
    @discardableResult
    public func write(toFolder path: String, overwrite: Bool, maxShardSize: Int = 5_000_000_000, tokenizer: String? = nil,
                      imageSize: Int = 448, progress: ((StreamProgress) -> Void)? = nil) throws -> (files: [String], bytes: Int) {
        let files = try folderFiles(tokenizer: tokenizer, imageSize: imageSize)
        let infos = try outputInfos()
        let writer = try TransformersFolderWriter(path: path, tensors: infos, metadata: metadata(), maxShardSize: maxShardSize,
                                                  files: files, overwrite: overwrite)
        do { try write(to: writer, progress: progress) } catch { writer.abort(); throw error }
        return (writer.weightFiles + files.map(\.name), infos.reduce(0) { $0 + $1.byteCount })
    }

    /// Writes the model as a safetensors file at `path`; returns the file's size.
    @discardableResult
    public func write(toFile path: String, overwrite: Bool, progress: ((StreamProgress) -> Void)? = nil) throws -> Int {
        guard architecture.kind == .decoder else {
            throw FormatError.unsupported("architecture '\(architecture.name)' is an encoder, written as a transformers folder (write(toFolder:))")
        }
        let writer = try SafetensorsWriter(path: path, tensors: try outputInfos(), metadata: metadata(), overwrite: overwrite)
        try write(to: writer, progress: progress)
        return writer.layout.totalSize
    }

    public func write(to sink: ModelSink, progress: ((StreamProgress) -> Void)? = nil) throws {
        let rows = try plan()
        if let perturb {
            let base = perturb.base.infoByName
            for r in rows {
                guard let b = base[r.name] else {
                    throw FormatError.missingTensor(path: perturb.base.path, tensor: r.name + " (needed to perturb as \(architecture.name))")
                }
                guard b.shape == r.shape else {
                    throw FormatError.badTensor(path: perturb.base.path, tensor: r.name, reason: "shape \(b.shape) differs from \(architecture.name)'s \(r.shape)")
                }
            }
        }
        let jobs = rows.map { row in
            StreamJob(output: TensorInfo(name: row.name, dtype: row.dtype ?? dtype, shape: row.shape)) { emit in
                try produce(row, emit: emit)
            }
        }
        try StreamExecutor.run(jobs, into: sink, threads: threads, progress: progress)
    }

    /// Scale of the random values for a tensor, by its role: unit-variance-preserving for weights,
    /// small for biases and embeddings, around 1 for norm gains.
    private static func role(_ t: ArchitectureDescriptor.Tensor) -> (offset: Float, amplitude: Float) {
        let n = t.name
        if n.hasSuffix("logit_scale") { return (4.6052, 0) }
        let isNorm = n.contains("norm") || n.contains(".ln_") || n.contains("ln_final") || n.contains("layer_norm")
        if t.shape.count == 1 {
            return isNorm && n.hasSuffix(".weight") ? (1, 0.05) : (0, 0.02)
        }
        if n.contains("embedding") || n.hasSuffix("positional_embedding") { return (0, 0.02 * 1.7320508) }
        let fanIn = max(1, t.shape.dropFirst().reduce(1, *))
        return (0, (3.0 / Float(fanIn)).squareRoot())
    }

    private func produce(_ row: ArchitectureDescriptor.Tensor, emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        let outDType = row.dtype ?? dtype
        let count = row.elementCount
        if outDType == .i64 {     // position ids: 0, 1, 2, ... per row
            let last = row.shape.last ?? 1
            let ids = (0..<count).map { Int64($0 % max(last, 1)) }
            try ids.withUnsafeBytes { try emit($0) }
            return
        }
        guard let outSize = outDType.byteSize, outDType.isConvertibleFloat else {
            throw FormatError.unsupported("synth cannot write \(outDType.rawValue) tensors (\(row.name))")
        }
        var rng = RandomStream(seed: seed, name: row.name)
        let part = min(count, StreamExecutor.partElements)
        let values = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(part, 1))
        defer { values.deallocate() }
        let out = OwnedBuffer(byteCount: max(part, 1) * outSize)

        var baseTensor: TensorData?
        var baseValues: UnsafeMutableBufferPointer<Float>?
        defer { baseValues?.deallocate() }
        var noiseScale: Float = 0
        if let perturb {
            let b = try perturb.base.tensor(row.name)
            guard b.info.dtype.isConvertibleFloat else {
                throw FormatError.badTensor(path: perturb.base.path, tensor: row.name, reason: "\(b.info.dtype.rawValue) cannot be perturbed (needs a float dtype)")
            }
            baseTensor = b
            baseValues = .allocate(capacity: max(part, 1))
            noiseScale = perturb.scale * (try Self.rms(b)) * 1.7320508   // uniform[-1,1) has RMS 1/sqrt(3)
        }
        let (offset, amplitude) = Self.role(row)
        var e = 0
        while e < count {
            let n = min(part, count - e)
            let chunk = UnsafeMutableBufferPointer(rebasing: values[0..<n])
            rng.fill(chunk)
            if let b = baseTensor, let base = baseValues, let inSize = b.info.dtype.byteSize {
                try Convert.toF32(b.bytes.baseAddress! + e * inSize, b.info.dtype, base.baseAddress!, count: n)
                for k in 0..<n { chunk[k] = base[k] + noiseScale * chunk[k] }
            } else {
                for k in 0..<n { chunk[k] = offset + amplitude * chunk[k] }
            }
            try Convert.fromF32(chunk.baseAddress!, out.pointer, outDType, count: n)
            try emit(UnsafeRawBufferPointer(start: out.pointer, count: n * outSize))
            e += n
        }
    }

    /// Root mean square of a tensor's values (f64 accumulation).
    static func rms(_ t: TensorData) throws -> Float {
        let count = t.info.elementCount
        guard count > 0, let size = t.info.dtype.byteSize else { return 0 }
        let part = min(count, StreamExecutor.partElements)
        let buf = UnsafeMutableBufferPointer<Float>.allocate(capacity: part)
        defer { buf.deallocate() }
        var sum = 0.0
        var e = 0
        while e < count {
            let n = min(part, count - e)
            try Convert.toF32(t.bytes.baseAddress! + e * size, t.info.dtype, buf.baseAddress!, count: n)
            var s: Float = 0
            for k in 0..<n { s += buf[k] * buf[k] }
            sum += Double(s)
            e += n
        }
        return Float((sum / Double(count)).squareRoot())
    }
}
