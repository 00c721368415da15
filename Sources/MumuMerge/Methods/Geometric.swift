import Foundation

/// Methods that see a tensor as one vector: SLERP and Model Stock (norms and dot products are
/// accumulated in f64 over a first pass, then the output is a per-key linear combination).
enum Slerp {
    static let alpha = Parameter<Double>("alpha", default: 0.5, help: "position between a (0) and b (1)")
    static let rescale = Parameter<Bool>("rescale", default: false,
                                         help: "interpolate directions and rescale to lerp(|a|, |b|, alpha) (sd-mecha) instead of mergekit's slerp of the raw vectors")
    static let definition = MethodDefinition(
        name: "slerp", summary: "spherical interpolation of a and b as flat vectors",
        inputs: ["a", "b"], parameters: [alpha, rescale]
    ) { args in
        let t = try args[alpha]
        if t == 0 { return .passthrough(0) }
        if t == 1 { return .passthrough(1) }
        return .kernel(SlerpKernel(alpha: t, rescale: try args[rescale]))
    }
}

enum ModelStock {
    static let filterWise = Parameter<Bool>("filter_wise", default: false,
                                            help: "one t per row of the last dimension (sd-mecha) instead of one per tensor (mergekit)")
    static let definition = MethodDefinition(
        name: "model_stock", summary: "Model Stock: base + t mean(d_i), t from the mean pairwise cosine of the task vectors",
        inputs: ["base"], list: "models", minimumListCount: 2, parameters: [filterWise]
    ) { args in
        .kernel(ModelStockKernel(models: args.inputCount - 1, filterWise: try args[filterWise], shape: args.info.shape))
    }
}

final class SlerpKernel: MergeKernel {
    let alpha: Double, rescale: Bool
    private var aa = 0.0, bb = 0.0, ab = 0.0
    private var ca: Float = 0, cb: Float = 0
    private var linear = false
    init(alpha: Double, rescale: Bool) { self.alpha = alpha; self.rescale = rescale }

    var reductionPasses: Int { 1 }

    func reduce(pass: Int, inputs: [UnsafePointer<Float>], chunk: Chunk) {
        let a = inputs[0], b = inputs[1]
        var saa = 0.0, sbb = 0.0, sab = 0.0
        for j in 0..<chunk.count {
            let x = Double(a[j]), y = Double(b[j])
            saa += x * x; sbb += y * y; sab += x * y
        }
        aa += saa; bb += sbb; ab += sab
    }

    func endPass(_ pass: Int) {
        let na = aa.squareRoot(), nb = bb.squareRoot(), t = alpha
        let dot = min(max(ab / (na * nb), -1), 1)
        if rescale {
            // sd-mecha: (a/|a| sin((1-t)w) + b/|b| sin(t w)) / sin(w) * lerp(|a|, |b|, t); lerp when that is NaN.
            let w = acos(dot), s = sin(w)
            guard na > 0, nb > 0, s != 0, dot.isFinite else { linear = true; return }
            let scale = na + t * (nb - na)
            ca = Float(sin((1 - t) * w) / s / na * scale)
            cb = Float(sin(t * w) / s / nb * scale)
        } else {
            // mergekit: lerp when either norm is tiny or the vectors are nearly parallel.
            guard na >= 1e-8, nb >= 1e-8, abs(dot) <= 0.9995 else { linear = true; return }
            let w = acos(dot), s = sin(w)
            ca = Float(sin((1 - t) * w) / s)
            cb = Float(sin(t * w) / s)
        }
    }

    func map(inputs: [UnsafePointer<Float>], output: UnsafeMutablePointer<Float>, chunk: Chunk) throws {
        let a = inputs[0], b = inputs[1]
        if linear {
            let t = Float(alpha)
            for j in 0..<chunk.count { output[j] = MergeMethods.lerp(a[j], b[j], t) }
        } else {
            let x = ca, y = cb
            for j in 0..<chunk.count { output[j] = x * a[j] + y * b[j] }
        }
    }
}

/// Model Stock (mergekit; sd-mecha with filter_wise): w = base + t mean(d_i), t = N cos / (1 + (N-1) cos),
/// cos the mean over all pairs of clamp(d_i.d_j / max(|d_i||d_j|, 1e-6), -1, 1); t = 0 when not finite.
final class ModelStockKernel: MergeKernel {
    let models: Int, filterWise: Bool
    let row: Int
    private var dots: [Double]
    init(models: Int, filterWise: Bool, shape: [Int]) {
        self.models = models; self.filterWise = filterWise
        row = shape.count >= 2 ? shape.last! : max(shape.reduce(1, *), 1)
        dots = Array(repeating: 0, count: models * models)
    }

    var reductionPasses: Int { filterWise ? 0 : 1 }
    var granularity: Int { filterWise ? row : 1 }

    /// Accumulates d_i.d_j (i <= j) over elements [0, n) into `dots`.
    private static func accumulate(_ inputs: [UnsafePointer<Float>], _ offset: Int, _ n: Int, _ models: Int, into dots: inout [Double]) {
        let base = inputs[0] + offset
        for i in 0..<models {
            let mi = inputs[i + 1] + offset
            for k in i..<models {
                let mk = inputs[k + 1] + offset
                var s = 0.0
                for j in 0..<n { s += Double(mi[j] - base[j]) * Double(mk[j] - base[j]) }
                dots[i * models + k] += s
            }
        }
    }

    private static func t(_ dots: [Double], _ models: Int) -> Float {
        var cos = 0.0, pairs = 0
        for i in 0..<models {
            for k in (i + 1)..<models {
                let norms = (dots[i * models + i] * dots[k * models + k]).squareRoot()
                cos += min(max(dots[i * models + k] / max(norms, 1e-6), -1), 1)
                pairs += 1
            }
        }
        cos /= Double(max(pairs, 1))
        let n = Double(models)
        let t = n * cos / (1 + (n - 1) * cos)
        return t.isFinite ? Float(t) : 0
    }

    func reduce(pass: Int, inputs: [UnsafePointer<Float>], chunk: Chunk) {
        ModelStockKernel.accumulate(inputs, 0, chunk.count, models, into: &dots)
    }

    func map(inputs: [UnsafePointer<Float>], output: UnsafeMutablePointer<Float>, chunk: Chunk) throws {
        let base = inputs[0], inv = 1 / Float(models)
        func combine(_ offset: Int, _ n: Int, _ t: Float) {
            for j in offset..<(offset + n) {
                var sum: Float = 0
                for i in 0..<models { sum += inputs[i + 1][j] - base[j] }
                output[j] = base[j] + t * (sum * inv)
            }
        }
        if filterWise {
            var offset = 0
            var local = Array(repeating: 0.0, count: models * models)
            while offset < chunk.count {
                for i in local.indices { local[i] = 0 }
                ModelStockKernel.accumulate(inputs, offset, row, models, into: &local)
                combine(offset, row, ModelStockKernel.t(local, models))
                offset += row
            }
        } else {
            combine(0, chunk.count, ModelStockKernel.t(dots, models))
        }
    }
}
