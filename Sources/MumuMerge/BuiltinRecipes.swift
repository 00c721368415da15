import Foundation

/// Recipes mumu builds itself.
extension Recipe {
    /// A community fine-tune under MUMU: UNet = MUMU + 1.0 (FT - base); MUMU's VAE and connector kept
    /// (alpha 0 on the VAE block; the connector exists only in MUMU and is copied). merges/mumu-finetune.yaml
    /// is the same recipe as a file.
    public static func intoMumu(finetune: String, mumu: String, base: String, directory: String) -> Recipe {
        func absolute(_ p: String) -> String { p.hasPrefix("/") ? p : directory + "/" + p }
        var output = Recipe.OutputOptions()
        output.dtype = "keep"
        output.components = ["unet", "vae", "connector"]
        return Recipe(
            origin: "--into-mumu", directory: directory,
            title: "MUMU + " + ((finetune as NSString).lastPathComponent as NSString).deletingPathExtension,
            models: [("mumu", absolute(mumu)), ("finetune", absolute(finetune)), ("base", absolute(base))],
            merge: .map([("method", .string("add_difference")), ("a", .string("mumu")), ("b", .string("finetune")),
                         ("c", .string("base")), ("alpha", .map([("default", .number(1)), ("VAE", .number(0))]))]),
            output: output, missing: .keepFirst)
    }

    /// `mumu merge --method NAME --a X ...`: the one-expression recipe the flags describe, models named a, b, c,
    /// base and m1, m2, ... (for `models`), paths resolved against `directory`. `lora` (with `method` "lora") is
    /// `{method: lora, model: a, lora: FILE, strength: S}` on the one model given (a or base).
    public static func inline(_ m: InlineMerge, directory: String) -> Recipe {
        func absolute(_ p: String) -> String { p.hasPrefix("/") ? p : directory + "/" + p }
        if m.method == "lora", let lora = m.lora, let model = m.a ?? m.base {
            var entries: [(String, RecipeValue)] = [("method", .string("lora")), ("model", .string("a")), ("lora", .string(absolute(lora)))]
            if let strength = m.strength { entries.append(("strength", .number(strength))) }
            return Recipe(origin: "--method lora", directory: directory, models: [("a", absolute(model))], merge: .map(entries))
        }
        var models: [(name: String, path: String)] = []
        var entries: [(String, RecipeValue)] = [("method", .string(m.method))]
        for (name, path) in [("a", m.a), ("b", m.b), ("c", m.c), ("base", m.base)] {
            guard let path else { continue }
            models.append((name, absolute(path)))
            entries.append((name, .string(name)))
        }
        if !m.models.isEmpty {
            for (i, path) in m.models.enumerated() { models.append(("m\(i + 1)", absolute(path))) }
            entries.append(("models", .list(m.models.indices.map { .string("m\($0 + 1)") })))
        }
        if let weights = m.weights { entries.append(("weights", .list(weights.map { .number($0) }))) }
        for (name, value) in [("alpha", m.alpha), ("beta", m.beta), ("density", m.density), ("lambda", m.lambda)] {
            if let value { entries.append((name, .number(value))) }
        }
        if let seed = m.seed { entries.append(("seed", .number(Double(seed)))) }
        if let vote = m.vote { entries.append(("vote", .string(vote))) }
        return Recipe(origin: "--method \(m.method)", directory: directory, models: models, merge: .map(entries))
    }
}

/// The arguments of an inline merge (`mumu merge --method NAME ...`); `Recipe.inline` turns them into a recipe.
public struct InlineMerge: Sendable {
    public var method: String
    public var a: String?, b: String?, c: String?, base: String?
    /// ties, dare, dare_ties, model_stock: the models, in order.
    public var models: [String] = []
    public var weights: [Double]?
    public var alpha: Double?, beta: Double?, density: Double?, lambda: Double?
    public var seed: Int?
    public var vote: String?
    /// `method` lora: the LoRA-family file baked into the one model, at `strength` (default 1).
    public var lora: String?
    public var strength: Double?

    public init(method: String) { self.method = method }
}
