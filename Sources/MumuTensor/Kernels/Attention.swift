import CBLAS
import CMumuKernels
import Foundation

extension NN {
    /// Arithmetic of `attention`: f32 throughout, or bf16 inputs (q, k, v and the softmax numerators rounded to
    /// bf16, nearest even) with f32 accumulation and an f32 softmax, or f16 (q, k, v scaled by powers of two and
    /// rounded to f16, 64-term sums in f16 widened into f32, an f32 softmax: mumu_attention.h). Callers follow the
    /// precision of their projection weights (`DenseWeight.isBF16`); a 16-bit request without a path runs the
    /// CPU's 16-bit form (`sixteenBitFormat(keys:)`).
    public enum AttentionPrecision: Sendable {
        case f32, bf16, f16
        /// `.bf16` when `weight` is held in bf16, else `.f32`.
        public static func matching(_ weight: DenseWeight) -> AttentionPrecision { weight.isBF16 ? .bf16 : .f32 }
        /// The kernel's `bf16` argument: 0 f32, 1 bf16, 2 f16 (MUMU_ATTENTION_F16).
        var format: Int32 { self == .f32 ? 0 : self == .bf16 ? 1 : Int32(MUMU_ATTENTION_F16) }
    }

    /// The paths of the fused attention kernel (mumu_attention.h): portable C, AVX2 + FMA (register tiles), AVX-512
    /// (f32 FMA, bf16 vdpbf16ps or f16 vfmadd231ph), AMX (bf16 tdpbf16ps; f32 runs on AVX-512). The default is the
    /// best the CPU has, capped by `MUMU_GEMM_ISA` like the bf16 GEMM; bf16 requests run in the CPU's 16-bit form
    /// (`sixteenBitFormat(keys:)`) unless the path is given.
    public enum AttentionPath: Int32, CaseIterable, Sendable {
        case portable = 0, avx2 = 1, avx512 = 2, amx = 3
        public var name: String { String(cString: mumu_attention_path_name(rawValue)) }
        /// Whether this CPU runs the path as itself for `precision` (ignores `MUMU_GEMM_ISA`).
        public func isAvailable(_ precision: AttentionPrecision) -> Bool {
            mumu_attention_path_available(rawValue, precision.format) != 0
        }
        /// The path `attention` takes by default for `precision`.
        public static func defaultPath(_ precision: AttentionPrecision) -> AttentionPath {
            AttentionPath(rawValue: mumu_attention_path(precision.format)) ?? .portable
        }
    }

    /// Multi-head scaled dot-product attention: q [B, Tq, C], k and v [B, Tk, Ckv], C = heads * d,
    /// Ckv = kvHeads * d; head h uses channels h*d ..< (h+1)*d of each token (torch's `view(B, T, heads, d)`) and
    /// reads kv head h / (heads / kvHeads) (grouped-query attention; kvHeads defaults to heads). Per head:
    /// out = softmax(q kᵀ / sqrt(d) + mask) v, returned as [B, Tq, C]. Masks: `causal` (query i, at position
    /// i + Tk - Tq, sees keys j <= its position) and `window` > 0 (it sees keys j > position - window only).
    /// Rows that see no key come out zero.
    ///
    /// One fused kernel (CMumuKernels attention.c, flash-style): K and V of each (sample, kv head) are packed once,
    /// then blocks of 48 query rows run QKᵀ, an online softmax and PV against blocks of 64 keys without forming the
    /// Tq x Tk scores; (sample, head, row block) jobs run in parallel.
    public static func attention(q: Tensor, k: Tensor, v: Tensor, heads: Int, kvHeads: Int? = nil, causal: Bool = false,
                                 window: Int = 0, precision: AttentionPrecision = .f32, path: AttentionPath? = nil) -> Tensor {
        guard q.rank == 3, k.rank == 3, v.rank == 3, k.shape == v.shape, k.shape[0] == q.shape[0] else {
            fatalError("attention shapes disagree: q \(q.shape), k \(k.shape), v \(v.shape)")
        }
        let (b, tq, c) = (q.shape[0], q.shape[1], q.shape[2])
        let tk = k.shape[1], kvh = kvHeads ?? heads
        guard heads > 0, c % heads == 0, kvh > 0, heads % kvh == 0, k.shape[2] * heads == c * kvh else {
            fatalError("attention: \(c) channels / \(heads) heads and \(k.shape[2]) kv channels / \(kvh) kv heads do not fit")
        }
        var out = Tensor(zeros: q.shape)
        if b == 0 || tq == 0 || c == 0 || tk == 0 { return out }   // no keys: no row sees anything (zero)
        let ckv = k.shape[2]
        q.data.withUnsafeBufferPointer { qb in
        k.data.withUnsafeBufferPointer { kb in
        v.data.withUnsafeBufferPointer { vb in
        out.data.withUnsafeMutableBufferPointer { ob in
            fusedAttention(q: qb.baseAddress!, qStride: tq * c, ldq: c, k: kb.baseAddress!, v: vb.baseAddress!,
                           kvStride: tk * ckv, ldk: ckv, ldv: ckv, out: ob.baseAddress!, outStride: tq * c, ldo: c,
                           batch: b, tq: tq, tk: tk, d: c / heads, heads: heads, kvHeads: kvh, causal: causal,
                           window: window, precision: precision, path: path)
        }
        }
        }
        }
        return out
    }

    /// Attention on fused projections qkv [B, T, 3C] (q, k, v at channel offsets 0, C, 2C), as the CLIP text
    /// encoders compute them; otherwise as `attention(q:k:v:...)` with Tq = Tk = T. Returns [B, T, C].
    public static func attention(qkv: Tensor, heads: Int, causal: Bool = false, precision: AttentionPrecision = .f32,
                                 path: AttentionPath? = nil) -> Tensor {
        guard qkv.rank == 3, qkv.shape[2] % 3 == 0, heads > 0, (qkv.shape[2] / 3) % heads == 0 else {
            fatalError("attention: qkv \(qkv.shape) does not split into q, k, v of \(heads) heads")
        }
        let (b, t, c3) = (qkv.shape[0], qkv.shape[1], qkv.shape[2])
        let c = c3 / 3
        var out = Tensor(zeros: [b, t, c])
        if b == 0 || t == 0 || c == 0 { return out }
        qkv.data.withUnsafeBufferPointer { qb in
        out.data.withUnsafeMutableBufferPointer { ob in
            let base = qb.baseAddress!
            fusedAttention(q: base, qStride: t * c3, ldq: c3, k: base + c, v: base + 2 * c, kvStride: t * c3,
                           ldk: c3, ldv: c3, out: ob.baseAddress!, outStride: t * c, ldo: c, batch: b, tq: t, tk: t,
                           d: c / heads, heads: heads, kvHeads: heads, causal: causal, window: 0,
                           precision: precision, path: path)
        }
        }
        return out
    }

    /// What a bf16 request without a path runs over `keys` keys. Where the GEMM takes its AVX-512 FP16 path (no
    /// AMX: an Intel CPU whose vdpbf16ps issues at a quarter of vfmadd231ps's rate, so the bf16 kernel runs at
    /// 0.6-0.9x the f32 one) the f16 kernel from 128 keys on (SDXL's self-attention and the VAE's: 1.0-1.9x the
    /// f32 kernel's speed), and the f32 one below (the 77 keys of cross-attention and the text encoders, where the
    /// f16 kernel's packing costs more than its products save); f32 where the CPU lacks a fast 16-bit dot product
    /// (with AVX2 alone widening bf16 costs more than it saves: SDXL's 4,096-token self-attention at 43 against 55
    /// GFLOP/s on an AVX2 AMD EPYC); bf16 elsewhere (docs/benchmarks.md).
    public static func sixteenBitFormat(keys: Int) -> AttentionPrecision {
        if BF16Matrix.defaultISA == .avx512fp16 { return keys >= 128 ? .f16 : .f32 }
        return mumu_attention_path(1) != AttentionPath.avx2.rawValue ? .bf16 : .f32
    }

    /// The kernel's driver on raw rows: sample s of q / out starts at s * qStride / outStride, of k and v at
    /// s * kvStride. Trusted callers only (shapes checked by the public entry points).
    static func fusedAttention(q: UnsafePointer<Float>, qStride: Int, ldq: Int, k: UnsafePointer<Float>,
                               v: UnsafePointer<Float>, kvStride: Int, ldk: Int, ldv: Int,
                               out: UnsafeMutablePointer<Float>, outStride: Int, ldo: Int, batch b: Int, tq: Int,
                               tk: Int, d: Int, heads: Int, kvHeads kvh: Int, causal: Bool, window: Int,
                               precision: AttentionPrecision, path: AttentionPath?) {
        FlopCounter.add(4 * b * tq * tk * heads * d)
        if tk == 0 { return }   // no keys: every row sees nothing (out stays zero)
        guard tq <= Int(Int32.max), tk <= Int(Int32.max), d <= Int(Int32.max) else {
            fatalError("attention: \(tq) x \(tk) x \(d) is too large for the kernel")
        }
        let format = precision == .bf16 && path == nil ? sixteenBitFormat(keys: tk) : precision
        let bf = format.format
        let isa = path?.rawValue ?? mumu_attention_path(bf)
        var args = mumu_attention_args()
        args.tq = Int32(tq); args.tk = Int32(tk); args.d = Int32(d)
        args.heads = Int32(heads); args.kv_heads = Int32(kvh)
        args.ldq = ldq; args.ldk = ldk; args.ldv = ldv; args.ldo = ldo
        args.scale = 1 / Float(d).squareRoot()
        args.causal = causal ? 1 : 0
        args.window = Int32(clamping: max(0, window))
        args.bf16 = bf
        let kvBytes = (mumu_attention_kv_bytes(&args) + 63) & ~63
        let packed = UnsafeMutableRawPointer.allocate(byteCount: max(64, kvBytes * b * kvh), alignment: 64)
        defer { packed.deallocate() }
        // 1. K and V of every (sample, kv head), packed once.
        KernelSupport.parallelChunks(b * kvh, minChunk: 1) { jobs in
            var a = args
            for job in jobs {
                let s = job / kvh, g = job % kvh
                a.k = k + s * kvStride
                a.v = v + s * kvStride
                mumu_attention_pack_kv(&a, Int32(g), packed + job * kvBytes)
            }
        }
        // 2. (sample, head, block of rows) jobs; consecutive blocks of one head go to the kernel in one call.
        let blockRows = 48
        let blocks = (tq + blockRows - 1) / blockRows
        // Scratch for every chunk allocated here, on the calling thread (not in the workers' malloc arenas).
        let items = b * heads * blocks
        let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let chunks = min(items, workers * 4), size = (items + chunks - 1) / chunks
        let scratchBytes = (mumu_attention_scratch_bytes(&args) + 63) & ~63
        let scratchAll = UnsafeMutableRawPointer.allocate(byteCount: scratchBytes * chunks, alignment: 64)
        defer { scratchAll.deallocate() }
        let run = { (chunk: Int) in
            let jobs = min(items, chunk * size)..<min(items, (chunk + 1) * size)
            let scratch = scratchAll + chunk * scratchBytes
            var a = args
            var job = jobs.lowerBound
            while job < jobs.upperBound {
                let sh = job / blocks, s = sh / heads, h = sh % heads
                let first = job % blocks, last = min(blocks, first + (jobs.upperBound - job))
                a.q = q + s * qStride
                a.out = out + s * outStride
                let g = h / (heads / kvh)
                mumu_attention_rows(&a, isa, Int32(h), Int32(first * blockRows), Int32(min(tq, last * blockRows)),
                                    packed + (s * kvh + g) * kvBytes, scratch)
                job += last - first
            }
        }
        if chunks == 1 { run(0) } else { KernelSupport.concurrentPerform(iterations: chunks, run) }
    }

    /// Query rows per score block in `attentionBlockedSGEMM` unless the caller says otherwise.
    public static let defaultAttentionBlockRows = 256

    /// The attention mumu ran before the fused kernel, kept as the baseline of `mumu bench attention` (and
    /// checked by the tests): no masks, f32, scores computed `blockRows` query rows at a time against all Tk
    /// keys with `cblas_sgemm` (strided straight out of q / k / v, threaded by OpenBLAS), softmaxed row by row,
    /// multiplied into v with a second sgemm; one score buffer of blockRows x Tk floats.
    public static func attentionBlockedSGEMM(q: Tensor, k: Tensor, v: Tensor, heads: Int,
                                             blockRows: Int = defaultAttentionBlockRows) -> Tensor {
        guard q.rank == 3, k.rank == 3, v.shape == k.shape, k.shape[0] == q.shape[0], k.shape[2] == q.shape[2],
              heads > 0, q.shape[2] % heads == 0, blockRows > 0 else {
            fatalError("attention shapes disagree: q \(q.shape), k \(k.shape), v \(v.shape), heads \(heads)")
        }
        let (b, tq, c) = (q.shape[0], q.shape[1], q.shape[2])
        let tk = k.shape[1]
        let d = c / heads
        let scale = 1 / Float(d).squareRoot()
        var out = Tensor(zeros: q.shape)
        if tq == 0 || tk == 0 { return out }
        FlopCounter.add(4 * b * tq * tk * c)
        let block = min(blockRows, tq)
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: block * tk)
        defer { scores.deallocate() }
        q.data.withUnsafeBufferPointer { qb in
        k.data.withUnsafeBufferPointer { kb in
        v.data.withUnsafeBufferPointer { vb in
        out.data.withUnsafeMutableBufferPointer { ob in
            for s in 0..<b {
                for hd in 0..<heads {
                    let qh = qb.baseAddress! + s * tq * c + hd * d
                    let kh = kb.baseAddress! + s * tk * c + hd * d
                    let vh = vb.baseAddress! + s * tk * c + hd * d
                    let oh = ob.baseAddress! + s * tq * c + hd * d
                    var r0 = 0
                    while r0 < tq {
                        let rows = min(block, tq - r0)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(tk), Int32(d), scale,
                                    qh + r0 * c, Int32(c), kh, Int32(c), 0, scores, Int32(tk))
                        softmaxRows(scores, rows: rows, cols: tk)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(d), Int32(tk), 1,
                                    scores, Int32(tk), vh, Int32(c), 0, oh + r0 * c, Int32(c))
                        r0 += rows
                    }
                }
            }
        }
        }
        }
        }
        return out
    }

    /// Numerically stable softmax of each row of a [rows, cols] buffer, in place (row maximum subtracted;
    /// CMumuKernels `mumu_softmax_rows`, AVX-512 where available).
    public static func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        KernelSupport.parallelChunks(rows, minChunk: max(1, (1 << 14) / max(1, cols))) { rs in
            mumu_softmax_rows(p + rs.lowerBound * cols, rs.count, cols, cols)
        }
    }
}
