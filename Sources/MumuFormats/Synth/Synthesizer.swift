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

    /// Writes the model as a safetensors file at `path`; returns the file's size.
    @discardableResult
    public func write(toFile path: String, overwrite: Bool, progress: ((StreamProgress) -> Void)? = nil) throws -> Int {
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
