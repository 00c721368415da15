import CBLAS
import MumuFormats
import MumuTensor

/// One module of a LoRA-family file: its factors (tensor descriptions only; data is read when rows are
/// asked for), its scale, its DoRA magnitude if any, and where it lands in the model.
///
/// The weight difference dW [out, inner] (inner = in x kernel, row-major, so a conv-shaped delta fits a
/// Linear of the same element count and the other way round), after ComfyUI's `comfy/weight_adapter`
/// and LyCORIS' `lycoris/functional`:
/// - LoRA / LoCon / PEFT: dW = up.flatten(1) @ down.flatten(1); with a Tucker core (`lora_mid` [r, r, kh, kw],
///   down [r, in, 1, 1]): dW[p, c, k] = Σ up[p, i] mid[i, j, k] down[j, c].
/// - LoHa: dW = (w1a @ w1b) ⊙ (w2a @ w2b); with Tucker (`hada_t1` / `hada_t2`, w_a [r, out], w_b [r, in]):
///   each factor is Σ t[i, j, k] w_a[i, p] w_b[j, c].
/// - LoKr: dW = kron(w1, w2.flatten(1)) (LyCORIS' 4-D kron with w1 as [a, b, 1, 1]); w1 = `lokr_w1` or
///   `lokr_w1_a` @ `lokr_w1_b`, w2 likewise or from a Tucker core `lokr_t2`.
/// - full diff (`.diff`): dW = diff.
struct LoraModule: Sendable {
    enum Factors: Sendable {
        case lowRank(up: TensorInfo, down: TensorInfo, mid: TensorInfo?)
        case loha(w1a: TensorInfo, w1b: TensorInfo, t1: TensorInfo?, w2a: TensorInfo, w2b: TensorInfo, t2: TensorInfo?)
        case lokr(w1: Factor, w2: Factor)
        case diff(TensorInfo)
    }

    /// A LoKr factor: stored whole, as a @ b, or as a Tucker core with a [r, out], b [r, in].
    enum Factor: Sendable {
        case full(TensorInfo)
        case product(a: TensorInfo, b: TensorInfo)
        case tucker(t: TensorInfo, a: TensorInfo, b: TensorInfo)
    }

    enum DoraAxis: Sendable { case output, input }

    struct Dora: Sendable {
        var magnitude: TensorInfo
        var axis: DoraAxis
    }

    var name: String
    var factors: Factors
    /// alpha / rank (or 1), the factor dW is multiplied by.
    var scale: Float
    var dora: Dora?
    var target: LoraTarget
    /// Rows and elements per row of dW.
    var out: Int
    var inner: Int
    /// Input channels (the second dimension of the weight; `inner` for a 1-D row), for input-axis DoRA.
    var inChannels: Int

    // MARK: - matching

    /// The module from its tensors (suffix -> description), checked against the tensor it targets.
    /// `alpha` is the `.alpha` tensor's value if the file has one; `peftScale` is the scale the PEFT
    /// metadata gives for this module (nil: none).
    init(name: String, parts: [String: TensorInfo], alpha: Float?, peftScale: ((_ rank: Int) -> Float)?,
         target: LoraTarget, path: String) throws {
        self.name = name
        self.target = target
        func bad(_ reason: String) -> LoraError { .badModule(path: path, module: name, reason: reason) }
        for (suffix, info) in parts where suffix != ".alpha" {
            guard info.dtype.isConvertibleFloat else {
                throw bad("tensor '\(info.name)' is \(info.dtype.rawValue); LoRA factors must be F16, BF16, F32, F64 or F8")
            }
        }
        func shape(_ s: String) -> [Int] { parts[s]?.shape ?? [] }
        func product(_ dims: ArraySlice<Int>) -> Int { dims.reduce(1, *) }
        /// The alpha / rank scale of kohya and LyCORIS (alpha missing or 0: 1).
        func kohyaScale(rank: Int) -> Float {
            guard let alpha, alpha != 0, rank > 0 else { return 1 }
            return alpha / Float(rank)
        }

        /// The weight shape the factors make: the full one where they tell it, else [out, inner].
        var made: [Int]
        var explicit: Bool
        if let down = parts[".lora_down.weight"] ?? parts[".lora_A.weight"] ?? parts[".lora.down.weight"] {
            guard let up = parts[".lora_up.weight"] ?? parts[".lora_B.weight"] ?? parts[".lora.up.weight"] else {
                throw bad("has '\(down.name)' but no up / B factor")
            }
            let mid = parts[".lora_mid.weight"]
            guard down.shape.count >= 2, up.shape.count >= 2, product(up.shape.dropFirst(2)) == 1 else {
                throw bad("factor shapes down \(LoraError.shape(down.shape)), up \(LoraError.shape(up.shape)) are not [r, in, ...], [out, r(, 1, 1)]")
            }
            let rank = down.shape[0]
            if let mid {
                guard mid.shape.count >= 2, mid.shape[0] == up.shape[1], mid.shape[1] == rank,
                      product(down.shape.dropFirst(2)) == 1 else {
                    throw bad("Tucker factors down \(LoraError.shape(down.shape)), mid \(LoraError.shape(mid.shape)), up \(LoraError.shape(up.shape)) do not chain")
                }
                made = [up.shape[0], down.shape[1]] + mid.shape.dropFirst(2)
            } else {
                guard up.shape[1] == rank else {
                    throw bad("rank of up \(LoraError.shape(up.shape)) differs from down \(LoraError.shape(down.shape))")
                }
                made = [up.shape[0]] + down.shape.dropFirst()
            }
            explicit = true
            factors = .lowRank(up: up, down: down, mid: mid)
            if alpha == nil, let peftScale { scale = peftScale(rank) } else { scale = kohyaScale(rank: rank) }
        } else if let w1a = parts[".hada_w1_a"], let w1b = parts[".hada_w1_b"], let w2a = parts[".hada_w2_a"], let w2b = parts[".hada_w2_b"] {
            let t1 = parts[".hada_t1"], t2 = parts[".hada_t2"]
            guard [w1a, w1b, w2a, w2b].allSatisfy({ $0.shape.count == 2 }), (t1 == nil) == (t2 == nil) else {
                throw bad("LoHa factors \([w1a, w1b, w2a, w2b].map { LoraError.shape($0.shape) }.joined(separator: ", ")) are not matrices, or only one Tucker core")
            }
            let rank = w1b.shape[0]
            if let t1, let t2 {
                // a [r, out], b [r, in], t [r, r, kh, kw]
                guard t1.shape.count >= 2, t1.shape[0] == w1a.shape[0], t1.shape[1] == w1b.shape[0],
                      t2.shape.count >= 2, t2.shape[0] == w2a.shape[0], t2.shape[1] == w2b.shape[0],
                      w1a.shape[1] == w2a.shape[1], w1b.shape[1] == w2b.shape[1], t1.shape.dropFirst(2) == t2.shape.dropFirst(2) else {
                    throw bad("LoHa Tucker factors w1_a \(LoraError.shape(w1a.shape)), w1_b \(LoraError.shape(w1b.shape)), t1 \(LoraError.shape(t1.shape)), w2_a \(LoraError.shape(w2a.shape)), w2_b \(LoraError.shape(w2b.shape)), t2 \(LoraError.shape(t2.shape)) do not chain")
                }
                made = [w1a.shape[1], w1b.shape[1]] + t1.shape.dropFirst(2)
                explicit = true
            } else {
                // a [out, r], b [r, in x kernel]
                guard w1a.shape[1] == w1b.shape[0], w2a.shape[1] == w2b.shape[0],
                      w1a.shape[0] == w2a.shape[0], w1b.shape[1] == w2b.shape[1] else {
                    throw bad("LoHa factors w1_a \(LoraError.shape(w1a.shape)), w1_b \(LoraError.shape(w1b.shape)), w2_a \(LoraError.shape(w2a.shape)), w2_b \(LoraError.shape(w2b.shape)) do not chain")
                }
                made = [w1a.shape[0], w1b.shape[1]]
                explicit = false
            }
            factors = .loha(w1a: w1a, w1b: w1b, t1: t1, w2a: w2a, w2b: w2b, t2: t2)
            scale = kohyaScale(rank: rank)
        } else if parts[".lokr_w1"] != nil || parts[".lokr_w1_a"] != nil {
            // LoKr: scale alpha / dim, dim the rank of the decomposed factor (w2's if both are); 1 when both are whole.
            var dim: Int?
            func factor(_ i: String) throws -> (Factor, [Int]) {
                if let w = parts[".lokr_w\(i)"] {
                    guard w.shape.count >= 2 else { throw bad("lokr_w\(i) \(LoraError.shape(w.shape)) is not a matrix") }
                    return (.full(w), w.shape)
                }
                guard let a = parts[".lokr_w\(i)_a"], let b = parts[".lokr_w\(i)_b"], a.shape.count == 2, b.shape.count == 2 else {
                    throw bad("LoKr factor w\(i) is neither lokr_w\(i) nor a lokr_w\(i)_a, lokr_w\(i)_b pair of matrices")
                }
                dim = b.shape[0]
                if let t = parts[".lokr_t\(i)"] {
                    guard t.shape.count >= 2, t.shape[0] == a.shape[0], t.shape[1] == b.shape[0] else {
                        throw bad("LoKr Tucker factors lokr_w\(i)_a \(LoraError.shape(a.shape)), lokr_w\(i)_b \(LoraError.shape(b.shape)), lokr_t\(i) \(LoraError.shape(t.shape)) do not chain")
                    }
                    return (.tucker(t: t, a: a, b: b), [a.shape[1], b.shape[1]] + t.shape.dropFirst(2))
                }
                guard a.shape[1] == b.shape[0] else {
                    throw bad("LoKr factors lokr_w\(i)_a \(LoraError.shape(a.shape)), lokr_w\(i)_b \(LoraError.shape(b.shape)) do not chain")
                }
                return (.product(a: a, b: b), [a.shape[0], b.shape[1]])
            }
            let (w1, s1) = try factor("1")
            let (w2, s2) = try factor("2")
            guard product(s1.dropFirst(2)) == 1 else {
                throw bad("LoKr w1 \(LoraError.shape(s1)) has a kernel; only w2 may")
            }
            made = [s1[0] * s2[0], s1[1] * product(s2.dropFirst())]
            // The full shape is known when w2 carries its kernel dims (whole 4-D, or Tucker).
            explicit = s2.count > 2
            if explicit { made = [s1[0] * s2[0], s1[1] * s2[1]] + s2.dropFirst(2) }
            factors = .lokr(w1: w1, w2: w2)
            if let dim, let alpha, alpha != 0 { scale = alpha / Float(dim) } else { scale = 1 }
        } else if let diff = parts[".diff"] {
            guard !diff.shape.isEmpty else { throw bad("diff is a scalar") }
            made = diff.shape
            explicit = true
            factors = .diff(diff)
            scale = 1
        } else {
            throw bad("tensors \(parts.keys.sorted().joined(separator: ", ")) make no LoRA, LoCon, LoHa, LoKr or diff module")
        }

        out = made[0]
        inner = product(made.dropFirst())
        // The patched weight: [rows, rest...] of the target.
        let want = target.moduleShape
        let wantOut = want.first ?? 1
        let wantInner = product(want.dropFirst())
        func mismatch(_ reason: String) -> LoraError {
            .shapeMismatch(path: path, module: name, target: target.key + (target.rows.map { " rows \($0.lowerBound)..<\($0.upperBound)" } ?? ""),
                           targetShape: want, moduleShape: made, reason: reason)
        }
        guard out == wantOut else { throw mismatch("\(out) output rows for \(wantOut)") }
        guard inner == wantInner else { throw mismatch("\(inner) elements per row for \(wantInner)") }
        if explicit {
            // [out, in, 1, 1] fits [out, in] and the other way round; a 3x3 kernel does not fit a Linear.
            func trimmed(_ s: [Int]) -> [Int] { var s = s; while s.count > 1, s.last == 1 { s.removeLast() }; return s }
            guard trimmed(made) == trimmed(want) else { throw mismatch("the layouts differ") }
        }
        inChannels = want.count >= 2 ? want[1] : max(wantInner, 1)

        // DoRA: kohya / LyCORIS `dora_scale` ([out, 1(, 1, 1)] per output row, or the older [1, in(, 1, 1)]
        // per input channel); PEFT `lora_magnitude_vector` ([out], or [1, out, 1, 1] for conv): always per output row.
        if let m = parts[".dora_scale"] {
            let n = m.elementCount
            if m.shape.first == out, n == out {
                dora = Dora(magnitude: m, axis: .output)
            } else if m.shape.first == 1, n == inChannels {
                dora = Dora(magnitude: m, axis: .input)
            } else {
                throw LoraError.shapeMismatch(path: path, module: name, target: target.key, targetShape: want, moduleShape: m.shape,
                                     reason: "dora_scale must be [\(out), 1, ...] (per output row) or [1, \(inChannels), ...] (per input channel)")
            }
        } else if let m = parts[".lora_magnitude_vector"] ?? parts[".lora_magnitude_vector.weight"] {
            guard m.elementCount == out else {
                throw LoraError.shapeMismatch(path: path, module: name, target: target.key, targetShape: want, moduleShape: m.shape,
                                     reason: "lora_magnitude_vector must hold \(out) values, one per output row")
            }
            dora = Dora(magnitude: m, axis: .output)
        }
        if let dora {
            guard dora.magnitude.dtype.isConvertibleFloat else { throw bad("magnitude is \(dora.magnitude.dtype.rawValue)") }
        }
    }

    /// Whether the patch needs all of its rows in one call (input-axis DoRA normalises columns).
    var needsAllRows: Bool { dora?.axis == .input }

    // MARK: - rows of dW

    /// c[i, j] += coefficient * dW[rows.lowerBound + i, j] for the module's rows `rows`; c holds
    /// `rows.count` rows of `inner` floats.
    func addDelta(rows: Range<Int>, to c: UnsafeMutablePointer<Float>, coefficient: Float, source: TensorSource) throws {
        let n = rows.count
        guard n > 0, inner > 0 else { return }
        let r = LoraReader(source: source, path: source.path, module: name)
        switch factors {
        case let .lowRank(upInfo, downInfo, midInfo):
            let rank = upInfo.shape[1]
            let up = try r.floats(upInfo, elements: rows.lowerBound * rank ..< rows.upperBound * rank)
            let down = try LoraModule.lowRankDown(downInfo, mid: midInfo, reader: r)
            gemm(n, inner, rank, coefficient, up, rank, down, inner, 1, c, inner)

        case let .loha(w1a, w1b, t1, w2a, w2b, t2):
            let p1 = try lohaProduct(rows: rows, a: w1a, b: w1b, t: t1, reader: r)
            let p2 = try lohaProduct(rows: rows, a: w2a, b: w2b, t: t2, reader: r)
            for i in 0..<(n * inner) { c[i] += coefficient * p1[i] * p2[i] }

        case let .lokr(f1, f2):
            let (w1, s1) = try materialize(f1, reader: r)
            let (w2, s2) = try materialize(f2, reader: r)
            let c2 = s2[0], e = s2.dropFirst().reduce(1, *), b = s1[1]
            w1.withUnsafeBufferPointer { w1 in
                w2.withUnsafeBufferPointer { w2 in
                    for i in 0..<n {
                        let p = rows.lowerBound + i
                        let pa = p / c2, pc = p % c2
                        let row = c + i * inner
                        let w2row = w2.baseAddress! + pc * e
                        for ib in 0..<b {
                            let f = coefficient * w1[pa * b + ib]
                            if f == 0 { continue }
                            let dst = row + ib * e
                            for j in 0..<e { dst[j] += f * w2row[j] }
                        }
                    }
                }
            }

        case let .diff(info):
            let d = try r.floats(info, elements: rows.lowerBound * inner ..< rows.upperBound * inner)
            for i in 0..<(n * inner) { c[i] += coefficient * d[i] }
        }
    }

    /// Rows `rows` of one LoHa factor product: a @ b, or with a Tucker core a^T-side (a [r, out]).
    /// A low-rank module's down factor [rank, inner], with a Tucker core (`lora_mid`) folded in.
    static func lowRankDown(_ down: TensorInfo, mid: TensorInfo?, reader r: LoraReader) throws -> [Float] {
        guard let mid else { return try r.floats(down) }
        return try tuckerSide(core: r.floats(mid), coreShape: mid.shape, b: r.floats(down), bRows: down.shape[0], bCols: down.shape[1])
    }

    private func lohaProduct(rows: Range<Int>, a: TensorInfo, b: TensorInfo, t: TensorInfo?, reader r: LoraReader) throws -> [Float] {
        let n = rows.count
        var result = [Float](repeating: 0, count: n * inner)
        if let t {
            let rank = a.shape[0], outAll = a.shape[1]
            let side = try tuckerSide(core: r.floats(t), coreShape: t.shape, b: r.floats(b), bRows: b.shape[0], bCols: b.shape[1])
            let aAll = try r.floats(a)
            // result = a[:, rows]^T @ side
            aAll.withUnsafeBufferPointer { ap in
                side.withUnsafeBufferPointer { sp in
                    result.withUnsafeMutableBufferPointer { cp in
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(n), Int32(inner), Int32(rank), 1,
                                    ap.baseAddress! + rows.lowerBound, Int32(outAll), sp.baseAddress!, Int32(inner),
                                    0, cp.baseAddress!, Int32(inner))
                    }
                }
            }
        } else {
            let rank = a.shape[1]
            let aRows = try r.floats(a, elements: rows.lowerBound * rank ..< rows.upperBound * rank)
            let bAll = try r.floats(b)
            result.withUnsafeMutableBufferPointer { cp in
                gemm(n, inner, rank, 1, aRows, rank, bAll, inner, 0, cp.baseAddress!, inner)
            }
        }
        return result
    }

    /// A LoKr factor as a row-major matrix, with its shape ([rows, dims...]).
    private func materialize(_ f: Factor, reader r: LoraReader) throws -> ([Float], [Int]) {
        switch f {
        case let .full(w):
            return (try r.floats(w), w.shape)
        case let .product(a, b):
            let (m, k, n) = (a.shape[0], a.shape[1], b.shape[1])
            var out = [Float](repeating: 0, count: m * n)
            let av = try r.floats(a), bv = try r.floats(b)
            out.withUnsafeMutableBufferPointer { gemm(m, n, k, 1, av, k, bv, n, 0, $0.baseAddress!, n) }
            return (out, [m, n])
        case let .tucker(t, a, b):
            let rank = a.shape[0], m = a.shape[1]
            let side = try tuckerSide(core: r.floats(t), coreShape: t.shape, b: r.floats(b), bRows: b.shape[0], bCols: b.shape[1])
            let cols = side.count / max(rank, 1)
            let av = try r.floats(a)
            var out = [Float](repeating: 0, count: m * cols)
            av.withUnsafeBufferPointer { ap in
                side.withUnsafeBufferPointer { sp in
                    out.withUnsafeMutableBufferPointer { cp in
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(m), Int32(cols), Int32(rank), 1,
                                    ap.baseAddress!, Int32(m), sp.baseAddress!, Int32(cols), 0, cp.baseAddress!, Int32(cols))
                    }
                }
            }
            return (out, [m, b.shape[1]] + t.shape.dropFirst(2))
        }
    }
}

/// The down side of a Tucker decomposition: S[i, c, k] = Σ_j core[i, j, k] b[j, c], as a row-major
/// [core rows, bCols x kernel] matrix (core [R, bRows, kernel...], b [bRows, bCols(, 1, 1)]).
func tuckerSide(core: [Float], coreShape: [Int], b: [Float], bRows: Int, bCols: Int) -> [Float] {
    let rank = coreShape[0]
    let kernel = coreShape.dropFirst(2).reduce(1, *)
    var out = [Float](repeating: 0, count: rank * bCols * kernel)
    core.withUnsafeBufferPointer { cp in
        b.withUnsafeBufferPointer { bp in
            out.withUnsafeMutableBufferPointer { op in
                for i in 0..<rank {
                    // S_i [bCols, kernel] = b^T [bCols, bRows] @ core_i [bRows, kernel]
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(bCols), Int32(kernel), Int32(bRows), 1,
                                bp.baseAddress!, Int32(bCols), cp.baseAddress! + i * bRows * kernel, Int32(kernel),
                                0, op.baseAddress! + i * bCols * kernel, Int32(kernel))
                }
            }
        }
    }
    return out
}

/// c = alpha * a @ b + beta * c, row-major, a [m, k] (lda), b [k, n] (ldb), c [m, n] (ldc).
func gemm(_ m: Int, _ n: Int, _ k: Int, _ alpha: Float, _ a: [Float], _ lda: Int, _ b: [Float], _ ldb: Int,
          _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    guard m > 0, n > 0 else { return }
    if k == 0 {
        if beta != 1 { for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } } }
        return
    }
    a.withUnsafeBufferPointer { ap in
        b.withUnsafeBufferPointer { bp in
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), alpha,
                        ap.baseAddress!, Int32(lda), bp.baseAddress!, Int32(ldb), beta, c, Int32(ldc))
        }
    }
}

/// Reads (parts of) a LoRA file's tensors as f32.
struct LoraReader {
    let source: TensorSource
    let path: String
    let module: String

    /// All elements, or the element range `elements` (row-major) of the tensor.
    func floats(_ info: TensorInfo, elements: Range<Int>? = nil) throws -> [Float] {
        let range = elements ?? 0..<info.elementCount
        guard range.lowerBound >= 0, range.upperBound <= info.elementCount else {
            throw LoraError.badModule(path: path, module: module, reason: "tensor '\(info.name)' has \(info.elementCount) elements, \(range) asked")
        }
        let data = try source.tensor(info.name)
        return try withExtendedLifetime(data) {
            guard let size = data.info.dtype.byteSize, data.bytes.count >= data.info.elementCount * size,
                  data.info.elementCount == info.elementCount else {
                throw LoraError.badModule(path: path, module: module, reason: "tensor '\(info.name)' holds fewer bytes than its shape says")
            }
            var out = [Float](repeating: 0, count: range.count)
            if range.isEmpty { return out }
            try out.withUnsafeMutableBufferPointer {
                try Convert.toF32(data.bytes.baseAddress! + range.lowerBound * size, data.info.dtype, $0.baseAddress!, count: range.count)
            }
            return out
        }
    }
}
