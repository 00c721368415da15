import CBLAS
import Dispatch
import Foundation
import MumuFormats
import MumuTensor

/// What an extraction did.
public struct LoraExtractReport: Sendable {
    /// Modules written (each an up, a down and an alpha tensor).
    public var modules: Int
    /// sqrt(Σ ||dW - up·down·scale||²_F) / sqrt(Σ ||dW||²_F) over every extracted module, with the factors
    /// as written (clamped, rounded to the output dtype): how much of the fine-tune the LoRA loses.
    public var relativeError: Double
    /// Notes: unchanged modules (zero delta, not written), targets whose shape is not extracted, targets
    /// missing from the base, conv layers left out at convRank 0.
    public var skipped: [String]

    public init(modules: Int, relativeError: Double, skipped: [String]) {
        self.modules = modules; self.relativeError = relativeError; self.skipped = skipped
    }

    /// How many of the notes in `skipped` are unchanged modules.
    public var unchanged: Int { skipped.filter { $0.hasSuffix(LoraExtractor.unchangedNote) }.count }

    /// `skipped` for a person: the unchanged modules (a fine-tune that froze its text encoders has hundreds) as one
    /// count, the other notes as they are.
    public var summary: [String] {
        let others = skipped.filter { !$0.hasSuffix(LoraExtractor.unchangedNote) }
        let unchanged = skipped.count - others.count
        return others + (unchanged > 0 ? ["\(unchanged) modules unchanged (zero delta), not extracted"] : [])
    }
}

/// What can stop an extraction; each names the tensor, module or argument concerned.
public enum LoraExtractError: Error, CustomStringConvertible, Equatable {
    case badArgument(String)
    /// A LoRA target whose shape differs between the two models.
    case shapeMismatch(tensor: String, base: [Int], tuned: [Int])
    /// A target with NaN or infinite values in one of the models.
    case nonFinite(path: String, tensor: String, count: Int)
    /// LAPACK's SVD did not converge (or refused its arguments).
    case svdFailed(module: String, info: Int)
    /// No module to write: no LoRA target in the models, or every target unchanged.
    case nothingToExtract(String)

    public var description: String {
        switch self {
        case let .badArgument(reason): return reason
        case let .shapeMismatch(tensor, base, tuned):
            return "'\(tensor)' has shape \(LoraError.shape(base)) in the base model and \(LoraError.shape(tuned)) in the tuned model: are they the same architecture?"
        case let .nonFinite(path, tensor, count):
            return "\(path): '\(tensor)' has \(count) NaN or infinite values; cannot extract a LoRA from it"
        case let .svdFailed(module, info):
            return "module '\(module)': the SVD (LAPACK sgesdd) failed, info \(info)"
        case let .nothingToExtract(reason): return reason
        }
    }
}

/// Extracts a kohya LoRA (LoCon with `convRank` > 0) that approximates `tuned - base`, after kohya-ss
/// sd-scripts `networks/extract_lora_from_models.py` and ComfyUI's LoraSave (`extract_lora`), per module:
/// dW = tuned - base in f32 (3x3 convs flattened to [out, in·kh·kw], 1x1 convs squeezed), SVD in f32
/// (LAPACK `sgesdd`), r = min(rank, out, in·kh·kw) (`convRank` for 3x3 convs), up = U[:, :r]·diag(S[:r]),
/// down = Vh[:r], both clamped to [-q, q] with q the `clampQuantile` quantile, 0.99 by default (torch.quantile,
/// linear interpolation) of the concatenated SIGNED values (as kohya and ComfyUI compute it; kohya's
/// `--clamp_quantile`), alpha = r (scale 1). At a clamp quantile of 1 nothing is clamped.
/// Conv 3x3: down [r, in, kh, kw], up [out, r, 1, 1]; 1x1 conv: down [r, in, 1, 1], up [out, r, 1, 1];
/// linear: up [out, r], down [r, in].
///
/// Where this differs from kohya, and why:
/// - the sign of each singular pair is fixed (the entry of U[:, i] of largest magnitude made positive,
///   scikit-learn's `svd_flip`). LAPACK leaves it arbitrary and the signed quantile depends on it, so kohya's
///   own output changes with the LAPACK build; this is one of the outputs kohya can give, reproducibly.
/// - r is capped at the flattened matrix's rank min(out, in·kh·kw); kohya caps 3x3 convs at the input
///   channels (less only when convRank exceeds them).
/// - a clamp quantile of 1 clamps nothing: kohya's `--clamp_quantile 1` still clamps the values below minus the
///   largest signed value. An exactly low-rank delta (a fine-tune trained as a LoRA of at most the rank) then
///   comes back whole, where the 0.99 clamp cuts its largest 1% of factor values.
/// - modules whose delta is exactly zero are not written (noted in `skipped`); kohya writes zero factors.
///   kohya's `min_diff` rule (drop both text encoders when no weight moved by more than 0.01) is not applied.
///
/// Modules (kohya `networks/lora.py` LoRANetwork targets): UNet Transformer2DModel linears (proj_in /
/// proj_out, linear or 1x1 conv; attn1 / attn2 to_q, to_k, to_v, to_out.0; ff.net.0.proj, ff.net.2), as
/// `lora_unet_<sgm path>`; with convRank > 0 also ResnetBlock2D (in_layers.2, out_layers.3 at convRank;
/// skip_connection and the emb_layers.1 Linear at rank), Downsample2D `op` and Upsample2D `conv`; CLIP-L
/// (`lora_te1_`; SD1's encoder `lora_te_`) self_attn q/k/v/out_proj and mlp fc1/fc2; bigG (`lora_te2_`):
/// q/k/v are the row blocks 0:H, H:2H, 2H:3H of `attn.in_proj_weight`, out_proj = `attn.out_proj`,
/// fc1 = `mlp.c_fc`, fc2 = `mlp.c_proj`. Inputs are models under sgm names. With `layers: .full` (LyCORIS's `full`
/// preset) also the UNet layers kohya leaves out: the time embedding's and the label (pooled text and size)
/// embedding's linears at rank, conv_in and conv_out at convRank, as `lora_unet_time_embed_0` … `lora_unet_out_2`;
/// ComfyUI, A1111 and mumu load them under those names. On the shapes world's tiny UNet the embeddings carry a
/// style's timing: a striped fine-tune's rank-8 extraction draws stripes in 15 of 100 prompts with them, 8 without
/// (docs/world-models.md).
///
/// Streamed: modules run on `threads` workers, each with single-threaded BLAS/LAPACK, so memory is about
/// threads x (4 x the largest module's f32 size + the SVD's workspace); the output is declared whole and
/// written with `SafetensorsWriter`, atomically. A module's bytes depend only on its inputs, so the file is
/// the same for any `threads`.
public enum LoraExtractor {
    /// kohya's CLAMP_QUANTILE (its `--clamp_quantile`'s default).
    public static let defaultClampQuantile: Float = 0.99
    /// The end of an unchanged module's note in `LoraExtractReport.skipped`.
    static let unchangedNote = ": unchanged (zero delta), not extracted"

    /// Which layers an extraction targets: kohya's LoRANetwork targets, or every UNet Linear and Conv2d.
    public enum Layers: String, Sendable, CaseIterable {
        case kohya, full
    }

    public static func extract(base: TensorSource, tuned: TensorSource, rank: Int, convRank: Int, layers: Layers = .kohya,
                               clampQuantile: Float = defaultClampQuantile, to path: String, threads: Int, overwrite: Bool,
                               progress: ((Int, Int) -> Void)? = nil) throws -> LoraExtractReport {
        try extract(base: base, tuned: tuned, rank: rank, convRank: convRank, layers: layers, clampQuantile: clampQuantile,
                    to: path, threads: threads, overwrite: overwrite, dtype: .f16, progress: progress)
    }

    /// As above, with the factors (and alpha) written in `dtype` (F16, BF16 or F32; kohya's save_precision).
    public static func extract(base: TensorSource, tuned: TensorSource, rank: Int, convRank: Int, layers: Layers = .kohya,
                               clampQuantile: Float = defaultClampQuantile, to path: String, threads: Int, overwrite: Bool,
                               dtype: DType, progress: ((Int, Int) -> Void)? = nil) throws -> LoraExtractReport {
        guard rank >= 1 else { throw LoraExtractError.badArgument("rank must be at least 1 (got \(rank))") }
        guard clampQuantile > 0, clampQuantile <= 1 else {
            throw LoraExtractError.badArgument("clamp quantile must be above 0 and at most 1 (1: no clamp; got \(clampQuantile))")
        }
        guard convRank >= 0 else {
            throw LoraExtractError.badArgument("conv rank must be at least 0 (0: no 3x3 conv modules; got \(convRank))")
        }
        guard [.f16, .bf16, .f32].contains(dtype) else {
            throw LoraExtractError.badArgument("LoRA factors are written as F16, BF16 or F32, not \(dtype.rawValue)")
        }
        let workers = max(1, threads)
        var (modules, notes) = try plan(base: base.tensors, tuned: tuned.tensors, rank: rank, convRank: convRank, layers: layers)
        guard !modules.isEmpty else {
            throw LoraExtractError.nothingToExtract("\(tuned.path): no LoRA target (UNet transformer linears, text encoder attention and MLP, "
                + "or ResBlock convs with a conv rank) is present in both models under sgm names")
        }

        // Our workers run modules in parallel; BLAS / LAPACK must not spawn threads of their own.
        openblas_set_num_threads(1)

        // Which modules changed at all (the header must be declared before anything is written).
        let changed = try parallelMap(modules.count, workers: workers) { i in
            try isChanged(modules[i], base: base, tuned: tuned)
        }
        for (m, c) in zip(modules, changed) where !c { notes.append(m.name + unchangedNote) }
        modules = zip(modules, changed).filter { $0.1 }.map(\.0)
        guard !modules.isEmpty else {
            throw LoraExtractError.nothingToExtract("\(tuned.path) and \(base.path) are identical on every LoRA target: nothing to extract")
        }

        let outputs = modules.flatMap { $0.outputs(dtype: dtype) }
        let metadata = self.metadata(base: base, tuned: tuned, rank: rank, convRank: convRank, layers: layers,
                                     clampQuantile: clampQuantile, output: path)
        let writer = try SafetensorsWriter(path: path, tensors: outputs, metadata: metadata, overwrite: overwrite)
        // Largest first, so the last module to finish is a small one.
        let order = modules.indices.sorted { (modules[$0].cost, modules[$1].name) > (modules[$1].cost, modules[$0].name) }
        let errors: [(residual: Double, norm: Double)]
        // Progress: modules written of all, reported in order (0 first, the total last) from any worker.
        let progressLock = Mutex()
        var finished = 0
        progress?(0, modules.count)
        do {
            let byOrder = try parallelMap(order.count, workers: workers) { j in
                let e = try extractModule(modules[order[j]], base: base, tuned: tuned, clampQuantile: clampQuantile, dtype: dtype,
                                          into: writer)
                if let progress { progressLock.locked { finished += 1; progress(finished, modules.count) } }
                return e
            }
            var byModule = [(residual: Double, norm: Double)](repeating: (0, 0), count: modules.count)
            for (j, i) in order.enumerated() { byModule[i] = byOrder[j] }
            errors = byModule
            try writer.finish()
        } catch {
            writer.abort()
            throw error
        }
        // Summed in module order: the same number for any number of threads.
        var residual = 0.0, norm = 0.0
        for e in errors { residual += e.residual; norm += e.norm }
        return LoraExtractReport(modules: modules.count, relativeError: norm > 0 ? (residual / norm).squareRoot() : 0,
                                 skipped: notes)
    }

    /// The tensors an extraction writes when every target has changed (a zero delta drops its module's three):
    /// with `SafetensorsWriter.layout` this gives the file's size before anything is computed.
    public static func plannedOutputs(model: [TensorInfo], rank: Int, convRank: Int, layers: Layers = .kohya,
                                      dtype: DType = .f16) throws -> [TensorInfo] {
        guard rank >= 1, convRank >= 0 else { throw LoraExtractError.badArgument("rank must be at least 1, conv rank at least 0") }
        return try plan(base: model, tuned: model, rank: rank, convRank: convRank, layers: layers).modules.flatMap { $0.outputs(dtype: dtype) }
    }

    // MARK: - modules

    /// One module to extract: a LoRA target of the model and the factors it gets.
    struct Module: Sendable {
        var name: String
        var key: String
        /// The rows of `key` this module is (bigG q/k/v in the fused in_proj_weight); nil: all.
        var rows: Range<Int>?
        /// The tensor's shape.
        var shape: [Int]
        var out: Int
        var inner: Int
        var rank: Int

        var isConv: Bool { shape.count == 4 }
        var downShape: [Int] { isConv ? [rank, shape[1], shape[2], shape[3]] : [rank, inner] }
        var upShape: [Int] { isConv ? [out, rank, 1, 1] : [out, rank] }
        /// The SVD's flops, roughly.
        var cost: Int { out * inner * min(out, inner) }

        func outputs(dtype: DType) -> [TensorInfo] {
            [TensorInfo(name: name + ".lora_down.weight", dtype: dtype, shape: downShape),
             TensorInfo(name: name + ".lora_up.weight", dtype: dtype, shape: upShape),
             TensorInfo(name: name + ".alpha", dtype: dtype, shape: [])]
        }
    }

    /// Path patterns: "#" is a number, "a|b" either word.
    private static let transformerBlocks: [[String]] = [["input_blocks", "#", "#"], ["middle_block", "#"], ["output_blocks", "#", "#"]]
    private static let transformerLinears: [[String]] = [
        ["proj_in"], ["proj_out"],
        ["transformer_blocks", "#", "attn1|attn2", "to_q|to_k|to_v"],
        ["transformer_blocks", "#", "attn1|attn2", "to_out", "0"],
        ["transformer_blocks", "#", "ff", "net", "0", "proj"],
        ["transformer_blocks", "#", "ff", "net", "2"],
    ]
    /// ResnetBlock2D's Conv2d and Linear children, Downsample2D's `op`, Upsample2D's `conv` (kohya with conv_dim).
    private static let convModules: [[String]] = [
        ["in_layers", "2"], ["out_layers", "3"], ["skip_connection"], ["emb_layers", "1"], ["op"], ["conv"],
    ]
    /// The UNet's layers outside its blocks (`layers: .full`): time embedding, label embedding, conv_in, conv_out.
    private static let outerModules: [[String]] = [
        ["time_embed", "0|2"], ["label_emb", "0", "0|2"], ["input_blocks", "0", "0"], ["out", "2"],
    ]
    private static let clipModules: [[String]] = [
        ["text_model", "encoder", "layers", "#", "self_attn", "q_proj|k_proj|v_proj|out_proj"],
        ["text_model", "encoder", "layers", "#", "mlp", "fc1|fc2"],
    ]

    private static func isDigit(_ c: Character) -> Bool { c.isASCII && c.isNumber }

    private static func matches(_ parts: ArraySlice<Substring>, _ pattern: [String]) -> Bool {
        guard parts.count == pattern.count else { return false }
        for (p, q) in zip(parts, pattern) {
            if q == "#" {
                guard !p.isEmpty, p.allSatisfy(isDigit) else { return false }
            } else if q.contains("|") {
                guard q.split(separator: "|").contains(p) else { return false }
            } else if p != q {
                return false
            }
        }
        return true
    }

    enum TargetKind { case linearOnly, conv }

    /// The kohya module names of sgm tensor `key` (bigG's fused in_proj_weight: q, k, v, its row blocks in order)
    /// and whether it is a ResnetBlock2D / Downsample2D / Upsample2D layer (a target only with a conv rank);
    /// nil: not a target.
    static func targets(of key: String, layers: Layers) -> (names: [String], kind: TargetKind)? {
        guard let (prefix, local) = SGMPrefix.split(key) else { return nil }
        func underscored(_ s: Substring) -> String { String(s.map { $0 == "." ? "_" : $0 }) }
        switch prefix {
        case .unet:
            guard local.hasSuffix(".weight") else { return nil }
            let path = local.dropLast(".weight".count)
            let parts = path.split(separator: ".", omittingEmptySubsequences: false)[...]
            for block in transformerBlocks where parts.count > block.count && matches(parts.prefix(block.count), block) {
                let rest = parts.dropFirst(block.count)
                if transformerLinears.contains(where: { matches(rest, $0) }) {
                    return (["lora_unet_" + underscored(path)], .linearOnly)
                }
                if convModules.contains(where: { matches(rest, $0) }) {
                    return (["lora_unet_" + underscored(path)], .conv)
                }
            }
            if layers == .full, outerModules.contains(where: { matches(parts, $0) }) {
                return (["lora_unet_" + underscored(path)], .linearOnly)   // conv_in / conv_out: 3x3, at convRank (plan)
            }
            return nil
        case .te1, .te1SD1:
            guard local.hasSuffix(".weight") else { return nil }
            let path = local.dropLast(".weight".count)
            guard clipModules.contains(where: { matches(path.split(separator: ".", omittingEmptySubsequences: false)[...], $0) }) else { return nil }
            return ([(prefix == .te1SD1 ? "lora_te_" : "lora_te1_") + underscored(path)], .linearOnly)
        case .te2, .te2Refiner:
            let parts = local.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count >= 4, parts[0] == "transformer", parts[1] == "resblocks", parts[2].allSatisfy(isDigit) else { return nil }
            let layer = "lora_te2_text_model_encoder_layers_\(parts[2])_"
            switch parts.dropFirst(3).joined(separator: ".") {
            case "attn.in_proj_weight":
                return (["q_proj", "k_proj", "v_proj"].map { layer + "self_attn_" + $0 }, .linearOnly)
            case "attn.out_proj.weight": return ([layer + "self_attn_out_proj"], .linearOnly)
            case "mlp.c_fc.weight": return ([layer + "mlp_fc1"], .linearOnly)
            case "mlp.c_proj.weight": return ([layer + "mlp_fc2"], .linearOnly)
            default: return nil
            }
        case .vae:
            return nil
        }
    }

    /// The modules of two models (headers only): targets present in both, shapes checked, ranks chosen.
    static func plan(base: [TensorInfo], tuned: [TensorInfo], rank: Int, convRank: Int,
                     layers: Layers) throws -> (modules: [Module], notes: [String]) {
        let baseInfo = Dictionary(base.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var modules: [Module] = []
        var notes: [String] = []
        var convLeftOut = 0
        for t in tuned {
            guard let (names, kind) = targets(of: t.name, layers: layers) else { continue }
            if kind == .conv && convRank == 0 { convLeftOut += names.count; continue }
            guard let b = baseInfo[t.name] else { notes.append("\(t.name): not in the base model, not extracted"); continue }
            guard b.shape == t.shape else { throw LoraExtractError.shapeMismatch(tensor: t.name, base: b.shape, tuned: t.shape) }
            let shape = t.shape
            let shapeOK = (shape.count == 2 || shape.count == 4) && shape.allSatisfy { $0 > 0 }
                && (names.count == 1 || (shape.count == 2 && shape[0] % names.count == 0))
            guard shapeOK, t.dtype.isConvertibleFloat, b.dtype.isConvertibleFloat else {
                notes.append("\(t.name): \(t.dtype.rawValue) \(LoraError.shape(shape)) is not a Linear or Conv2d weight, not extracted")
                continue
            }
            let conv3x3 = shape.count == 4 && shape[2] * shape[3] > 1
            if conv3x3 && convRank == 0 { convLeftOut += names.count; continue }
            let blockRows = shape[0] / names.count
            let inner = shape.dropFirst().reduce(1, *)
            for (i, name) in names.enumerated() {
                let rows: Range<Int>? = names.count > 1 ? (i * blockRows)..<((i + 1) * blockRows) : nil
                let out = rows?.count ?? shape[0]
                let r = min(conv3x3 ? convRank : rank, out, inner)
                modules.append(Module(name: name, key: t.name, rows: rows, shape: shape, out: out, inner: inner, rank: r))
            }
        }
        if convLeftOut > 0 {
            let kinds = layers == .full ? "ResBlock / Downsample / Upsample / conv_in / conv_out" : "ResBlock / Downsample / Upsample"
            notes.append("\(convLeftOut) \(kinds) layers not extracted (conv rank 0, as kohya without conv_dim)")
        }
        modules.sort { $0.name < $1.name }
        for (a, b) in zip(modules, modules.dropFirst()) where a.name == b.name {
            throw LoraExtractError.badArgument("tensors '\(a.key)' and '\(b.key)' both map to LoRA module '\(a.name)'")
        }
        return (modules, notes)
    }

    // MARK: - compute

    /// Reads the module's rows of `key` from `source` as f32 into `dst` (pread for mapped files).
    private static func read(_ m: Module, from source: TensorSource, into dst: UnsafeMutablePointer<Float>) throws {
        let data = try source.tensor(m.key)
        try withExtendedLifetime(data) {
            guard data.info.shape == m.shape, let size = data.info.dtype.byteSize else {
                throw FormatError.badTensor(path: source.path, tensor: m.key, reason: "listed as \(m.shape), read as \(data.info.dtype.rawValue) \(data.info.shape)")
            }
            let reader = ChunkReader(data)
            let start = (m.rows?.lowerBound ?? 0) * m.inner, count = m.out * m.inner
            let staging = OwnedBuffer(byteCount: reader.file != nil ? count * size : 0)
            let bad = try reader.read(start, count, into: dst, staging: staging.pointer)
            if bad > 0 { throw LoraExtractError.nonFinite(path: source.path, tensor: m.key, count: bad) }
        }
    }

    /// Whether tuned and base differ anywhere in the module's rows.
    private static func isChanged(_ m: Module, base: TensorSource, tuned: TensorSource) throws -> Bool {
        let n = m.out * m.inner
        let a = UnsafeMutablePointer<Float>.allocate(capacity: n), b = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { a.deallocate(); b.deallocate() }
        try read(m, from: base, into: a)
        try read(m, from: tuned, into: b)
        for i in 0..<n where b[i] - a[i] != 0 { return true }
        return false
    }

    /// One module: SVD, truncation, sign convention, clamp, write. Returns ||dW - up·down||² and ||dW||².
    static func extractModule(_ m: Module, base: TensorSource, tuned: TensorSource, clampQuantile: Float, dtype: DType,
                              into writer: SafetensorsWriter) throws -> (residual: Double, norm: Double) {
        let rows = m.out, cols = m.inner, r = m.rank
        let delta = UnsafeMutablePointer<Float>.allocate(capacity: rows * cols)
        let a = UnsafeMutablePointer<Float>.allocate(capacity: rows * cols)
        defer { delta.deallocate(); a.deallocate() }
        try read(m, from: base, into: a)
        try read(m, from: tuned, into: delta)
        for i in 0..<(rows * cols) { delta[i] -= a[i] }
        a.update(from: delta, count: rows * cols)

        let svd = try truncatedSVD(a, rows: rows, cols: cols, rank: r, module: m.name)
        let s = svd.s, vh = svd.vh, u = svd.u, ldu = svd.ld
        defer { s.deallocate(); vh.deallocate(); u.deallocate() }

        // up = U[:, :r] diag(S[:r]), down = Vh[:r], each pair's sign fixed (largest |U[:, i]| positive).
        let upCount = rows * r, downCount = r * cols
        let factors = UnsafeMutablePointer<Float>.allocate(capacity: upCount + downCount)
        defer { factors.deallocate() }
        let up = factors, down = factors + upCount
        for i in 0..<r {
            var best: Float = -1, sign: Float = 1
            for j in 0..<rows {
                let v = u[j * ldu + i]
                if abs(v) > best { best = abs(v); sign = v < 0 ? -1 : 1 }
            }
            for j in 0..<rows { up[j * r + i] = u[j * ldu + i] * sign * s[i] }
            for c in 0..<cols { down[i * cols + c] = vh[i * cols + c] * sign }
        }
        // kohya: hi = torch.quantile(cat(up, down), clamp_quantile); clamp both to [-hi, hi]. 1: no clamp.
        if clampQuantile < 1 {
            let hi = quantile(UnsafeBufferPointer(start: factors, count: upCount + downCount), clampQuantile)
            let lo = -hi
            for i in 0..<(upCount + downCount) { factors[i] = Swift.min(Swift.max(factors[i], lo), hi) }
        }

        // Write in the output dtype, then measure the error of what was written.
        let elementSize = dtype.byteSize!
        let encoded = OwnedBuffer(byteCount: (upCount + downCount + 1) * elementSize)
        try Convert.fromF32(factors, encoded.pointer, dtype, count: upCount + downCount)
        var alpha = Float(r)
        try Convert.fromF32(&alpha, encoded.pointer + (upCount + downCount) * elementSize, dtype, count: 1)
        try writer.write(m.name + ".lora_up.weight", UnsafeRawBufferPointer(start: encoded.pointer, count: upCount * elementSize))
        try writer.write(m.name + ".lora_down.weight", UnsafeRawBufferPointer(start: encoded.pointer + upCount * elementSize,
                                                                             count: downCount * elementSize))
        try writer.write(m.name + ".alpha", UnsafeRawBufferPointer(start: encoded.pointer + (upCount + downCount) * elementSize,
                                                                  count: elementSize))
        try Convert.toF32(encoded.pointer, dtype, factors, count: upCount + downCount)
        let product = a   // the SVD destroyed it
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(cols), Int32(r), 1,
                    up, Int32(r), down, Int32(cols), 0, product, Int32(cols))
        var residual = 0.0, norm = 0.0
        for i in 0..<(rows * cols) {
            let d = Double(delta[i])
            let e = d - Double(product[i])
            residual += e * e
            norm += d * d
        }
        return (residual, norm)
    }

    /// How the SVD is computed: `.auto` uses LAPACK's full SVD when the matrix is small and a randomized
    /// range finder (Halko, Martinsson & Tropp 2011: rank + 10 samples, 2 power iterations, then an exact
    /// SVD of the projected matrix) when min(rows, cols) > 3 (rank + 10); `.exact` always uses LAPACK.
    public enum SVDMode: Sendable { case auto, exact }
    nonisolated(unsafe) public static var svdMode: SVDMode = .auto

    /// The leading singular triplets of a row-major [rows, cols] matrix (destroyed): u [rows, ld] row-major,
    /// s [ld], vh [ld, cols] row-major, with at least `rank` of them, in descending order.
    static func truncatedSVD(_ a: UnsafeMutablePointer<Float>, rows: Int, cols: Int, rank: Int, module: String) throws
        -> (u: UnsafeMutablePointer<Float>, s: UnsafeMutablePointer<Float>, vh: UnsafeMutablePointer<Float>, ld: Int) {
        let k = min(rows, cols), l = rank + 10
        if svdMode == .exact || k <= 3 * l {
            return try lapackSVD(a, rows: rows, cols: cols, module: module)
        }
        // Qt [l, rows]: an orthonormal basis of A's range, as rows; Ωt [l, cols] Gaussian, seeded by the module.
        let qt = UnsafeMutablePointer<Float>.allocate(capacity: l * rows)
        let zt = UnsafeMutablePointer<Float>.allocate(capacity: l * cols)
        defer { qt.deallocate(); zt.deallocate() }
        var state = UInt64(truncatingIfNeeded: module.utf8.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 })
        func uniform() -> Double {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return (Double((z ^ (z >> 31)) >> 11) + 0.5) * 0x1p-53
        }
        for i in 0..<(l * cols) { zt[i] = Float((-2 * log(uniform())).squareRoot() * cos(2 * Double.pi * uniform())) }
        let m32 = Int32(rows), n32 = Int32(cols), l32 = Int32(l)
        // Qt = orth(Ωt Aᵀ); then twice: Zt = orth(Qt A), Qt = orth(Zt Aᵀ).
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l32, m32, n32, 1, zt, n32, a, n32, 0, qt, m32)
        orthonormalizeRows(qt, count: l, length: rows)
        for _ in 0..<2 {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l32, n32, m32, 1, qt, m32, a, n32, 0, zt, n32)
            orthonormalizeRows(zt, count: l, length: cols)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l32, m32, n32, 1, zt, n32, a, n32, 0, qt, m32)
            orthonormalizeRows(qt, count: l, length: rows)
        }
        // B = Qt A [l, cols]; B = Ub S Vh exactly; U = Qtᵀ Ub.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l32, n32, m32, 1, qt, m32, a, n32, 0, zt, n32)
        let small = try lapackSVD(zt, rows: l, cols: cols, module: module)
        defer { small.u.deallocate() }
        let u = UnsafeMutablePointer<Float>.allocate(capacity: rows * l)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m32, l32, l32, 1, qt, m32, small.u, Int32(small.ld), 0, u, l32)
        return (u, small.s, small.vh, l)
    }

    /// Gram-Schmidt, twice ("twice is enough"), on the rows of a row-major [count, length] matrix.
    static func orthonormalizeRows(_ q: UnsafeMutablePointer<Float>, count: Int, length: Int) {
        let n = Int32(length)
        for i in 0..<count {
            let v = q + i * length
            for _ in 0..<2 {
                for j in 0..<i {
                    let w = q + j * length
                    let d = cblas_sdot(n, v, 1, w, 1)
                    cblas_saxpy(n, -d, w, 1, v, 1)
                }
            }
            let norm = cblas_snrm2(n, v, 1)
            if norm > 0 { cblas_sscal(n, 1 / norm, v, 1) }
        }
    }

    /// LAPACK sgesdd on a row-major [rows, cols] matrix (destroyed): u [rows, k], s [k], vh [k, cols], k = min.
    static func lapackSVD(_ a: UnsafeMutablePointer<Float>, rows: Int, cols: Int, module: String) throws
        -> (u: UnsafeMutablePointer<Float>, s: UnsafeMutablePointer<Float>, vh: UnsafeMutablePointer<Float>, ld: Int) {
        let k = min(rows, cols)
        // Row-major dW [rows, cols] is column-major dWᵀ [cols, rows]: LAPACK factors dWᵀ = U' S V'ᵀ, so
        // dW = V' S U'ᵀ. U' (cols x k, column-major) holds Vh's rows one after another: Vh row-major [k, cols];
        // V'ᵀ (k x rows, column-major, ld k) read row-major is U [rows, k].
        let s = UnsafeMutablePointer<Float>.allocate(capacity: k)
        let vh = UnsafeMutablePointer<Float>.allocate(capacity: cols * k)
        let u = UnsafeMutablePointer<Float>.allocate(capacity: k * rows)
        let iwork = UnsafeMutablePointer<Int32>.allocate(capacity: 8 * k)
        defer { iwork.deallocate() }
        var jobz = CChar(UInt8(ascii: "S"))
        var mm = Int32(cols), nn = Int32(rows), lda = Int32(cols), ldu = Int32(cols), ldvt = Int32(k)
        var info: Int32 = 0
        var query: Float = 0
        var lwork: Int32 = -1
        sgesdd_(&jobz, &mm, &nn, a, &lda, s, vh, &ldu, u, &ldvt, &query, &lwork, iwork, &info)
        guard info == 0 else { throw LoraExtractError.svdFailed(module: module, info: Int(info)) }
        // The size comes back as a float: round up and add a margin against its rounding.
        let size = Int(query.rounded(.up)) + Int(query / 1024) + 64
        guard size < Int(Int32.max) else { throw LoraExtractError.svdFailed(module: module, info: -12) }
        lwork = Int32(size)
        let work = UnsafeMutablePointer<Float>.allocate(capacity: size)
        defer { work.deallocate() }
        sgesdd_(&jobz, &mm, &nn, a, &lda, s, vh, &ldu, u, &ldvt, work, &lwork, iwork, &info)
        guard info == 0 else { throw LoraExtractError.svdFailed(module: module, info: Int(info)) }
        return (u, s, vh, k)
    }

    /// torch.quantile(values, q) with linear interpolation, in f32 as torch computes it: rank = q·(n-1),
    /// lerp between the sorted values at floor and ceil of the rank.
    static func quantile(_ values: UnsafeBufferPointer<Float>, _ q: Float) -> Float {
        guard !values.isEmpty else { return 0 }
        var sorted = Array(values)
        sorted.sort()
        let rank = q * Float(sorted.count - 1)
        let below = Int(rank), above = Swift.min(Int(rank.rounded(.up)), sorted.count - 1)
        let weight = rank - Float(below)
        let start = sorted[below], end = sorted[above]
        // ATen's lerp.
        return abs(weight) < 0.5 ? start + weight * (end - start) : end - (end - start) * (1 - weight)
    }

    // MARK: - metadata

    static func metadata(base: TensorSource, tuned: TensorSource, rank: Int, convRank: Int, layers: Layers,
                         clampQuantile: Float, output: String) -> [String: String] {
        let family = ModelDetector.detect(tuned.tensors, metadata: tuned.metadata).family
        var m: [String: String] = [
            "ss_network_module": "networks.lora",
            "ss_network_dim": String(rank),
            "ss_network_alpha": String(Double(rank)),
            "ss_network_args": convRank > 0 ? "{\"conv_dim\": \"\(convRank)\", \"conv_alpha\": \"\(Double(convRank))\"}" : "{}",
            "ss_v2": "False",
            "modelspec.sai_model_spec": ModelSpec.version,
            "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
            "modelspec.title": ((output as NSString).lastPathComponent as NSString).deletingPathExtension,
            "mumu_extracted_from": "{\"base\":" + JSONWriter.quote((base.path as NSString).lastPathComponent)
                + ",\"tuned\":" + JSONWriter.quote((tuned.path as NSString).lastPathComponent) + "}",
        ]
        if layers == .full { m["mumu_layers"] = "full" }   // LyCORIS's preset name; kohya's targets write nothing
        if clampQuantile != defaultClampQuantile { m["mumu_clamp_quantile"] = String(clampQuantile) }
        switch family {
        case "sdxl"?:
            m["ss_base_model_version"] = "sdxl_base_v1-0"
            m["modelspec.architecture"] = "stable-diffusion-xl-v1-base/lora"
            m["modelspec.resolution"] = "1024x1024"
        case "sd1"?:
            m["ss_base_model_version"] = "sd_v1"
            m["modelspec.architecture"] = "stable-diffusion-v1/lora"
            m["modelspec.resolution"] = "512x512"
        default:
            break
        }
        return m
    }

    // MARK: - workers

    /// body(i) for i in 0..<count on `workers` threads, results in index order; the first error stops the rest.
    private static func parallelMap<T>(_ count: Int, workers: Int, _ body: (Int) throws -> T) throws -> [T] {
        var results = [T?](repeating: nil, count: count)
        let lock = Mutex()
        var next = 0
        var firstError: Error?
        results.withUnsafeMutableBufferPointer { out in
            let out = out
            DispatchQueue.concurrentPerform(iterations: max(1, min(workers, count))) { _ in
                while true {
                    let i: Int? = lock.locked {
                        guard firstError == nil, next < count else { return nil }
                        defer { next += 1 }
                        return next
                    }
                    guard let i else { return }
                    do {
                        let value = try body(i)
                        lock.locked { out[i] = value }
                    } catch {
                        lock.locked { if firstError == nil { firstError = error } }
                        return
                    }
                }
            }
        }
        if let firstError { throw firstError }
        return results.map { $0! }
    }
}
