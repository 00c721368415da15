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
}
