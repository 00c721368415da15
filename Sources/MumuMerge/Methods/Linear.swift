import Foundation

/// Element-wise methods: weighted sums and differences (SuperMerger / sd-mecha names and formulas).
extension MergeMethods {
    static let alpha = ParameterSpec("alpha", .number(default: 0.5, range: nil), "weight of b")

    static let linear: [MethodDefinition] = [
        MethodDefinition(
            name: "weighted_sum", summary: "(1 - alpha) a + alpha b (torch.lerp)",
            inputs: ["a", "b"], parameters: [alpha]
        ) { args in
            let t = args.float("alpha")
            if t == 0 { return .passthrough(0) }
            if t == 1 { return .passthrough(1) }
            return .kernel(ElementwiseKernel { x, out, n in
                let a = x[0], b = x[1]
                for i in 0..<n { out[i] = lerp(a[i], b[i], t) }
            })
        },
        MethodDefinition(
            name: "add_difference", summary: "a + alpha (b - c)",
            inputs: ["a", "b", "c"],
            parameters: [ParameterSpec("alpha", .number(default: 1, range: nil), "weight of the difference b - c")]
        ) { args in
            let t = args.float("alpha")
            if t == 0 { return .passthrough(0) }
            return .kernel(ElementwiseKernel { x, out, n in
                let a = x[0], b = x[1], c = x[2]
                for i in 0..<n { out[i] = a[i] + t * (b[i] - c[i]) }
            })
        },
        MethodDefinition(
            name: "triple_sum", summary: "(1 - alpha - beta) a + alpha b + beta c",
            inputs: ["a", "b", "c"],
            parameters: [ParameterSpec("alpha", .number(default: 1.0 / 3, range: nil), "weight of b"),
                         ParameterSpec("beta", .number(default: 1.0 / 3, range: nil), "weight of c")]
        ) { args in
            let s = args.float("alpha"), t = args.float("beta")
            if s == 0 && t == 0 { return .passthrough(0) }
            let r = 1 - s - t
            return .kernel(ElementwiseKernel { x, out, n in
                let a = x[0], b = x[1], c = x[2]
                for i in 0..<n { out[i] = r * a[i] + s * b[i] + t * c[i] }
            })
        },
        MethodDefinition(
            name: "sum_twice", summary: "(1 - beta) ((1 - alpha) a + alpha b) + beta c",
            inputs: ["a", "b", "c"],
            parameters: [ParameterSpec("alpha", .number(default: 0.5, range: nil), "weight of b in the first sum"),
                         ParameterSpec("beta", .number(default: 0.5, range: nil), "weight of c in the second sum")]
        ) { args in
            let s = args.float("alpha"), t = args.float("beta")
            if s == 0 && t == 0 { return .passthrough(0) }
            return .kernel(ElementwiseKernel { x, out, n in
                let a = x[0], b = x[1], c = x[2]
                for i in 0..<n { out[i] = (1 - t) * ((1 - s) * a[i] + s * b[i]) + t * c[i] }
            })
        },
        MethodDefinition(
            name: "train_difference",
            summary: "a + 1.8 alpha sign(b-c) |b-c| |b-a| / (|b-c| + |b-a|) (SuperMerger)",
            inputs: ["a", "b", "c"],
            parameters: [ParameterSpec("alpha", .number(default: 1, range: nil), "strength")]
        ) { args in
            let t = args.float("alpha") * 1.8
            if t == 0 { return .passthrough(0) }
            return .kernel(ElementwiseKernel { x, out, n in
                let a = x[0], b = x[1], c = x[2]
                for i in 0..<n {
                    let bc = b[i] - c[i], ba = abs(b[i] - a[i])
                    let denominator = abs(bc) + ba
                    out[i] = denominator == 0 ? a[i] : a[i] + t * bc * ba / denominator
                }
            })
        },
    ]
}
