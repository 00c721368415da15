import Foundation

/// Element-wise methods: weighted sums and differences (SuperMerger / sd-mecha names and formulas).
/// Each method is one declaration: its parameters, listed in its definition and read by its kernel.
enum WeightedSum {
    static let alpha = Parameter<Float>("alpha", default: 0.5, help: "weight of b")
    static let definition = MethodDefinition(
        name: "weighted_sum", summary: "(1 - alpha) a + alpha b (torch.lerp)",
        inputs: ["a", "b"], parameters: [alpha]
    ) { args in
        let t = try args[alpha]
        if t == 0 { return .passthrough(0) }
        if t == 1 { return .passthrough(1) }
        return .kernel(ElementwiseKernel { x, out, n in
            let a = x[0], b = x[1]
            for i in 0..<n { out[i] = MergeMethods.lerp(a[i], b[i], t) }
        })
    }
}

enum AddDifference {
    static let alpha = Parameter<Float>("alpha", default: 1, help: "weight of the difference b - c")
    static let definition = MethodDefinition(
        name: "add_difference", summary: "a + alpha (b - c)",
        inputs: ["a", "b", "c"], parameters: [alpha]
    ) { args in
        let t = try args[alpha]
        if t == 0 { return .passthrough(0) }
        return .kernel(ElementwiseKernel { x, out, n in
            let a = x[0], b = x[1], c = x[2]
            for i in 0..<n { out[i] = a[i] + t * (b[i] - c[i]) }
        })
    }
}

enum TripleSum {
    static let alpha = Parameter<Float>("alpha", default: 1.0 / 3, help: "weight of b")
    static let beta = Parameter<Float>("beta", default: 1.0 / 3, help: "weight of c")
    static let definition = MethodDefinition(
        name: "triple_sum", summary: "(1 - alpha - beta) a + alpha b + beta c",
        inputs: ["a", "b", "c"], parameters: [alpha, beta]
    ) { args in
        let s = try args[alpha], t = try args[beta]
        if s == 0 && t == 0 { return .passthrough(0) }
        let r = 1 - s - t
        return .kernel(ElementwiseKernel { x, out, n in
            let a = x[0], b = x[1], c = x[2]
            for i in 0..<n { out[i] = r * a[i] + s * b[i] + t * c[i] }
        })
    }
}

enum SumTwice {
    static let alpha = Parameter<Float>("alpha", default: 0.5, help: "weight of b in the first sum")
    static let beta = Parameter<Float>("beta", default: 0.5, help: "weight of c in the second sum")
    static let definition = MethodDefinition(
        name: "sum_twice", summary: "(1 - beta) ((1 - alpha) a + alpha b) + beta c",
        inputs: ["a", "b", "c"], parameters: [alpha, beta]
    ) { args in
        let s = try args[alpha], t = try args[beta]
        if s == 0 && t == 0 { return .passthrough(0) }
        return .kernel(ElementwiseKernel { x, out, n in
            let a = x[0], b = x[1], c = x[2]
            for i in 0..<n { out[i] = (1 - t) * ((1 - s) * a[i] + s * b[i]) + t * c[i] }
        })
    }
}

enum TrainDifference {
    static let alpha = Parameter<Float>("alpha", default: 1, help: "strength")
    static let definition = MethodDefinition(
        name: "train_difference",
        summary: "a + 1.8 alpha sign(b-c) |b-c| |b-a| / (|b-c| + |b-a|) (SuperMerger)",
        inputs: ["a", "b", "c"], parameters: [alpha]
    ) { args in
        let t = try args[alpha] * 1.8
        if t == 0 { return .passthrough(0) }
        return .kernel(ElementwiseKernel { x, out, n in
            let a = x[0], b = x[1], c = x[2]
            for i in 0..<n {
                let bc = b[i] - c[i], ba = abs(b[i] - a[i])
                let denominator = abs(bc) + ba
                out[i] = denominator == 0 ? a[i] : a[i] + t * bc * ba / denominator
            }
        })
    }
}
