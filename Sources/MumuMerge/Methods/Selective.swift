import Foundation

/// Task-vector methods over a base and a list of models: TIES, DARE, DARE-TIES (as mergekit and
/// sd-mecha compute them; docs/merging.md, "Methods").
/// The kernel's inputs are [base, m_1, ..., m_n]; d_i = m_i - base.

/// TIES' sign election.
enum Vote: String, ParameterChoice {
    /// Sign of the sum of the weighted deltas (TIES paper, mergekit).
    case sum
    /// Sign of the count of signs (sd-mecha's default).
    case count
}

/// Parameters TIES, DARE and DARE-TIES share (each lists the ones it takes).
enum TaskVector {
    static let lambda = Parameter<Float>("lambda", default: 1, help: "scale of the merged task vector")
    static let vote = Parameter<Vote>("vote", default: .sum,
                                      help: "sign election: sum of the weighted deltas (TIES paper, mergekit) or count of signs (sd-mecha)")
    static let seed = Parameter<Int>("seed", default: 0, range: 0...Int.max, help: "DARE's random seed (per key and model)")
    static let rescale = Parameter<Bool>("rescale", default: true, help: "divide kept DARE elements by density")
    /// DARE's density (a probability of keeping an element).
    static let dropDensity = Parameter<Double>("density", default: 0.5, range: 0...1, help: "probability of keeping an element")

    static func dare(_ args: MethodArguments) throws -> DareDrop {
        try DareDrop(density: args[dropDensity], rescale: args[rescale], seed: args[seed], key: args.key, models: args.inputCount - 1)
    }
}

enum Ties {
    static let density = Parameter<Double>("density", default: 0.2, range: 0...1, help: "fraction of each task vector kept (by magnitude)")
    static let definition = MethodDefinition(
        name: "ties", summary: "TIES: trim each task vector to its top density, elect signs, mean of agreeing deltas",
        inputs: ["base"], list: "models", minimumListCount: 1, weighted: true,
        parameters: [density, TaskVector.lambda, TaskVector.vote]
    ) { args in
        .kernel(TiesKernel(weights: args.weights.map(Float.init), density: try args[density],
                           lambda: try args[TaskVector.lambda], countVote: try args[TaskVector.vote] == .count, dare: nil))
    }
}

enum Dare {
    static let definition = MethodDefinition(
        name: "dare", summary: "DARE: drop task-vector elements at random (kept with probability density), rescale, add",
        inputs: ["base"], list: "models", minimumListCount: 1, weighted: true,
        parameters: [TaskVector.dropDensity, TaskVector.lambda, TaskVector.seed, TaskVector.rescale]
    ) { args in
        .kernel(DareKernel(weights: args.weights.map(Float.init), dare: try TaskVector.dare(args), lambda: try args[TaskVector.lambda]))
    }
}

enum DareTies {
    static let definition = MethodDefinition(
        name: "dare_ties", summary: "DARE's random drop, then TIES' sign election and disjoint mean",
        inputs: ["base"], list: "models", minimumListCount: 1, weighted: true,
        parameters: [TaskVector.dropDensity, TaskVector.lambda, TaskVector.seed, TaskVector.rescale, TaskVector.vote]
    ) { args in
        .kernel(TiesKernel(weights: args.weights.map(Float.init), density: 1, lambda: try args[TaskVector.lambda],
                           countVote: try args[TaskVector.vote] == .count, dare: try TaskVector.dare(args)))
    }
}

/// DARE's drop mask: element j of task vector i is kept when u(seed, key, i, j) < density, with a
/// counter-based generator (SplitMix64 finalizer over seed, key hash, model index and element index),
/// so the mask depends on nothing but those four: not on chunking, threads or order.
struct DareDrop {
    let density: Double
    /// Kept elements are divided by this (density as f32, or 1 without rescaling).
    let divisor: Float
    let streams: [UInt64]

    init(density: Double, rescale: Bool, seed: Int, key: String, models: Int) {
        self.density = density
        divisor = rescale && density > 0 ? Float(density) : 1
        let seed = UInt64(truncatingIfNeeded: seed)
        let key = DareDrop.fnv1a(key)
        streams = (0..<models).map { i in DareDrop.mix(DareDrop.mix(seed) ^ key ^ DareDrop.mix(UInt64(i + 1))) }
    }

    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    static func fnv1a(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    /// The uniform draw in [0, 1) for element `j` of model `i` (24 bits, exact in f32).
    @inline(__always)
    func uniform(model i: Int, element j: Int) -> Float {
        Float(DareDrop.mix(streams[i] &+ UInt64(j)) >> 40) * 0x1p-24
    }

    /// Element j of task vector i after the drop (and rescale).
    @inline(__always)
    func apply(model i: Int, element j: Int, _ d: Float) -> Float {
        Double(uniform(model: i, element: j)) < density ? d / divisor : 0
    }
}

/// DARE: base + lambda * sum_i w_i * drop(d_i).
final class DareKernel: MergeKernel {
    let weights: [Float], dare: DareDrop, lambda: Float
    init(weights: [Float], dare: DareDrop, lambda: Float) { self.weights = weights; self.dare = dare; self.lambda = lambda }

    func map(inputs: [UnsafePointer<Float>], output: UnsafeMutablePointer<Float>, chunk: Chunk) throws {
        let base = inputs[0]
        for j in 0..<chunk.count {
            var sum: Float = 0
            for i in 0..<weights.count { sum += weights[i] * dare.apply(model: i, element: chunk.start + j, inputs[i + 1][j] - base[j]) }
            output[j] = base[j] + lambda * sum
        }
    }
}

/// TIES (and DARE-TIES). Trimming keeps |d_i| >= the k-th smallest |d_i| with
/// k = max(floor((1 - density) n), 1), as sd-mecha's filter_top_k (ties at the threshold are all kept).
/// The k-th smallest is found exactly in two streaming passes of a radix select over the bits of
/// |d_i| (non-negative floats order like their bit patterns): 16 high bits, then 16 low bits. A tensor
/// that fits one chunk is read once: the executor keeps its inputs between the passes.
final class TiesKernel: MergeKernel {
    let weights: [Float], density: Double, lambda: Float, countVote: Bool, dare: DareDrop?
    /// 2^16 counts per model (the radix select's histograms).
    private var histogram: UnsafeMutablePointer<Int>?
    private var targets: [Int] = []       // rank still sought inside the selected bin, per model
    private var highBins: [UInt32] = []
    private var thresholds: [Float] = []
    private static let bins = 1 << 16

    init(weights: [Float], density: Double, lambda: Float, countVote: Bool, dare: DareDrop?) {
        self.weights = weights; self.density = density; self.lambda = lambda; self.countVote = countVote; self.dare = dare
    }
    deinit { histogram?.deallocate() }

    var trims: Bool { density < 1 }
    var reductionPasses: Int { trims ? 2 : 0 }

    func reduce(pass: Int, inputs: [UnsafePointer<Float>], chunk: Chunk) {
        let k = max(Int((1 - density) * Double(chunk.total)), 1)
        let base = inputs[0]
        if histogram == nil {
            histogram = .allocate(capacity: TiesKernel.bins * weights.count)
            histogram!.initialize(repeating: 0, count: TiesKernel.bins * weights.count)
            targets = Array(repeating: k, count: weights.count)
        }
        for i in 0..<weights.count {
            let m = inputs[i + 1], h = histogram! + i * TiesKernel.bins
            if pass == 0 {
                for j in 0..<chunk.count { h[Int(TiesKernel.magnitudeBits(m[j] - base[j]) >> 16)] += 1 }
            } else {
                let high = highBins[i]
                for j in 0..<chunk.count {
                    let bits = TiesKernel.magnitudeBits(m[j] - base[j])
                    if bits >> 16 == high { h[Int(bits & 0xFFFF)] += 1 }
                }
            }
        }
    }

    func endPass(_ pass: Int) {
        guard let histogram else { return }   // no chunk was seen
        for i in 0..<weights.count {
            let h = histogram + i * TiesKernel.bins
            var remaining = targets[i]
            var bin = 0
            while bin < TiesKernel.bins - 1 && h[bin] < remaining { remaining -= h[bin]; bin += 1 }
            targets[i] = remaining
            if pass == 0 {
                highBins.append(UInt32(bin))
                h.update(repeating: 0, count: TiesKernel.bins)
            } else {
                thresholds.append(Float(bitPattern: highBins[i] << 16 | UInt32(bin)))
            }
        }
    }

    @inline(__always)
    static func magnitudeBits(_ x: Float) -> UInt32 { x.bitPattern & 0x7FFF_FFFF }

    /// Elements per block of the output pass: small enough for the scratch rows to stay in L1/L2.
    private static let block = 2048

    func map(inputs: [UnsafePointer<Float>], output: UnsafeMutablePointer<Float>, chunk: Chunk) throws {
        let models = weights.count, block = TiesKernel.block
        // Scratch: tau rows per model, then the vote, the sum and the divisor.
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: block * (models + 3))
        defer { scratch.deallocate() }
        let vote = scratch + block * models, sum = vote + block, divisor = sum + block
        var offset = 0
        while offset < chunk.count {
            let n = min(block, chunk.count - offset)
            let base = inputs[0] + offset
            vote.update(repeating: 0, count: n)
            for i in 0..<models {
                let m = inputs[i + 1] + offset, t = scratch + i * block, w = weights[i]
                for j in 0..<n { t[j] = m[j] - base[j] }
                if trims {
                    let threshold = thresholds[i]
                    for j in 0..<n { t[j] = abs(t[j]) >= threshold ? t[j] : 0 }
                }
                if let dare {
                    for j in 0..<n { t[j] = dare.apply(model: i, element: chunk.start + offset + j, t[j]) }
                }
                for j in 0..<n { t[j] *= w }
                if countVote {
                    for j in 0..<n { vote[j] += t[j] > 0 ? 1 : (t[j] < 0 ? -1 : 0) }
                } else {
                    for j in 0..<n { vote[j] += t[j] }
                }
            }
            sum.update(repeating: 0, count: n)
            divisor.update(repeating: 0, count: n)
            for i in 0..<models {
                let t = scratch + i * block, w = weights[i]
                for j in 0..<n {
                    let agree = (t[j] > 0 && vote[j] > 0) || (t[j] < 0 && vote[j] < 0)
                    sum[j] += agree ? t[j] : 0
                    divisor[j] += agree ? w : 0
                }
            }
            let out = output + offset, l = lambda
            for j in 0..<n {
                let merged = divisor[j] != 0 ? sum[j] / divisor[j] : 0
                out[j] = base[j] + l * (merged.isFinite ? merged : 0)
            }
            offset += n
        }
    }
}

/// DARE's generator, exposed so tests and docs can check it against the Python reference.
public enum DareProbe {
    /// The first `count` uniforms of model `model`'s stream for `key`.
    public static func uniforms(seed: Int, key: String, model: Int, count: Int) -> [Float] {
        let stream = DareDrop.mix(DareDrop.mix(UInt64(truncatingIfNeeded: seed)) ^ DareDrop.fnv1a(key) ^ DareDrop.mix(UInt64(model + 1)))
        return (0..<count).map { j in Float(DareDrop.mix(stream &+ UInt64(j)) >> 40) * 0x1p-24 }
    }
}
