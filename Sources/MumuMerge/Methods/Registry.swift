/// Every merge method mumu knows, by name (docs/merging.md lists them with their formulas). A method
/// is one declaration (`WeightedSum`: its parameters, its definition, its kernel); this list is how
/// the registry finds it.
public enum MergeMethods {
    public static let all: [MethodDefinition] = [
        WeightedSum.definition, AddDifference.definition, TripleSum.definition, SumTwice.definition, TrainDifference.definition,
        Ties.definition, Dare.definition, DareTies.definition,
        Slerp.definition, ModelStock.definition,
        LoraBake.definition,
    ]

    public static let registry: [String: MethodDefinition] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    public static func named(_ name: String) -> MethodDefinition? { registry[name] }

    /// torch.lerp's formula (what sd-mecha's weighted_sum computes), fused as torch's CPU kernel
    /// does it: exact at both ends, bit-identical to torch.
    @inline(__always)
    static func lerp(_ a: Float, _ b: Float, _ t: Float) -> Float {
        abs(t) < 0.5 ? a.addingProduct(t, b - a) : b.addingProduct(t - 1, b - a)
    }
}
