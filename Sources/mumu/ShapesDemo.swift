import Foundation
import MumuGenerate
import MumuSampler

/// `mumu demo` on the shapes world's trained models (models/shapes, docs/world-models.md): text to image on the
/// base, the style fine-tunes, a merge of two of them, a lower-rank extraction beside a style, and multimodal
/// prompts on the tiny MUMU with and without a fine-tune under it. Each part runs when the files it needs ship
/// (SHA256SUMS lists them); every step is the CLI command it prints, run in process.
struct ShapesDemo {
    let shipped: ShippedModels
    let folder: String

    static let styles = ["outline", "striped", "pixel", "pastel"]

    /// Held-out prompts of the shapes world (scripts/world.py heldout: scene seeds 10^9 + i, never trained on).
    static let prompts = [
        "a large green ring at the bottom right, on a purple background",
        "a large orange star on the left and a large red circle at the bottom, on a white background",
        "a small purple square on the right and a large black ring at the bottom left, on a gray background",
        "a large yellow ring at the top and a small white circle in the center, on a green background",
        "a large green triangle on the left, a small white circle in the center and a small yellow square at the bottom right, on a gray background",
        "a small purple square on the right, on a gray background",
    ]
    static let seeds: [UInt64] = [1_000_000_000, 1_000_000_001, 1_000_000_004, 1_000_000_007, 1_000_000_008, 1_000_000_006]

    func has(_ names: String...) -> Bool { names.allSatisfy { shipped.sums[$0] != nil } }

    /// The command as a user would type it, with the demo folder's paths shortened.
    func show(_ command: String, _ args: [String]) {
        let words = args.map { $0.contains(" ") || $0.contains("<") ? "\"\($0)\"" : $0 }
        print("   mumu \(command) " + words.joined(separator: " ").replacingOccurrences(of: folder + "/", with: ""))
    }

    /// `mumu generate` at the world's settings (64x64, 20 steps, euler, cfg 7); returns the image 4x enlarged.
    func render(_ prompt: String, seed: UInt64, _ model: [String], to name: String, quiet: Bool = true) throws -> RGBImage {
        let out = folder + "/" + name + ".png"
        let args = [prompt] + model + ["--width", "64", "--height", "64", "--steps", "20", "--seed", String(seed), "--force", "-o", out]
        if !quiet { show("generate", args) }
        try GenerateCommand.parse(args + ["--quiet"]).run()
        return try PNG.read(out).image.enlarged(4)
    }

    func sheet(_ tiles: [(image: RGBImage, caption: String)], columns: Int, name: String) throws {
        let path = folder + "/" + name + ".png"
        try PNG.write(try ContactSheet.make(tiles, columns: columns), text: [], to: path, overwrite: true)
        print("   grid: \(path)\n")
    }

    func run() throws {
        let base = try shipped.path("base.safetensors")
        try baseSection(base)
        let styles = Self.styles.filter { has("\($0).safetensors") }
        var number = 2
        if !styles.isEmpty { try stylesSection(base, styles, number: number); number += 1 }
        if has("outline.safetensors", "pastel.safetensors") { try mergeSection(base, number: number); number += 1 }
        // pastel is the style its rank-8 LoRA carries best (docs/world-models.md), so it is the one shown alone
        let shown = styles.contains("pastel") ? "pastel" : styles.first
        if let shown { try rankSection(base, shown, number: number); number += 1 }
        if has("mumu-decoder.safetensors", "encoder/config.json") { try multimodalSection(base, shown, number: number) }
    }

    func baseSection(_ base: String) throws {
        print("1. the shapes world's base model (\(base), trained on this kind of CPU: docs/world-models.md)")
        print("   text to image, 64x64, 20 steps, held-out prompts (never seen in training):")
        var tiles: [(image: RGBImage, caption: String)] = []
        for (i, (prompt, seed)) in zip(Self.prompts, Self.seeds).enumerated() {
            tiles.append((try render(prompt, seed: seed, ["--checkpoint", base], to: "base-\(i + 1)", quiet: i > 0), "\(i + 1)"))
            print("   \(i + 1). \(prompt)")
        }
        try sheet(tiles, columns: 3, name: "shapes-base")
    }

    /// The fine-tunes ship as LoRAs (models/shapes/README.md says why): registered as styles, rendered on the base.
    func stylesSection(_ base: String, _ styles: [String], number: Int) throws {
        print("\(number). the style fine-tunes, registered as styles and rendered on the one resident base:")
        let home = folder + "/registry"
        for style in styles {
            let args = [style, "--from", try shipped.path("\(style).safetensors"), "--home", home, "--force"]
            show("styles add", args)
            try StylesCommand.Add.parse(args + ["--quiet"]).run()
        }
        var tiles: [(image: RGBImage, caption: String)] = []
        for (i, (prompt, seed)) in zip(Self.prompts, Self.seeds).prefix(3).enumerated() {
            let args = [prompt, "--checkpoint", base] + styles.flatMap { ["--style", $0] } + ["--home", home, "--width", "64",
                        "--height", "64", "--steps", "20", "--seed", String(seed), "--force", "-o", folder + "/styles-\(i + 1).png"]
            if i == 0 { show("generate", args) }
            try GenerateCommand.parse(args + ["--quiet"]).run()
            tiles.append((try PNG.read(folder + "/base-\(i + 1).png").image.enlarged(4), "base"))
            for style in styles {  // -o X.png with several styles writes X-STYLE.png, with one X.png
                let file = styles.count == 1 ? "styles-\(i + 1).png" : "styles-\(i + 1)-\(style).png"
                tiles.append((try PNG.read(folder + "/" + file).image.enlarged(4), style))
            }
        }
        try sheet(tiles, columns: styles.count + 1, name: "shapes-styles")
    }

    /// Two fine-tunes baked into the base, then merged half and half, beside their parents.
    func mergeSection(_ base: String, number: Int) throws {
        print("\(number). a merge of two fine-tunes (outline and pastel baked into the base, then a weighted sum at 0.5):")
        for style in ["outline", "pastel"] {
            let args = ["--method", "lora", "--a", base, "--lora", try shipped.path("\(style).safetensors"),
                        "--force", "-o", folder + "/\(style)-full.safetensors"]
            show("merge", args)
            try MergeCommand.parse(args + ["--quiet"]).run()
        }
        let args = ["--method", "weighted_sum", "--a", folder + "/outline-full.safetensors", "--b", folder + "/pastel-full.safetensors",
                    "--alpha", "0.5", "--force", "-o", folder + "/outline-pastel.safetensors"]
        show("merge", args)
        try MergeCommand.parse(args + ["--quiet"]).run()
        var tiles: [(image: RGBImage, caption: String)] = []
        for (i, (prompt, seed)) in zip(Self.prompts, Self.seeds).prefix(3).enumerated() {
            for name in ["outline-full", "outline-pastel", "pastel-full"] {
                tiles.append((try render(prompt, seed: seed, ["--checkpoint", folder + "/\(name).safetensors"], to: "\(name)-\(i + 1)"),
                              name.replacingOccurrences(of: "-full", with: "")))
            }
        }
        try sheet(tiles, columns: 3, name: "shapes-merge")
    }

    /// Rank: the shipped style is a rank-8 LoRA, mumu's extraction of its fine-tune (trained as a LoRA, the
    /// fine-tune is the base with it merged; models/shapes/README.md, docs/world-models.md measure what the extraction
    /// keeps). Baked into the base it is that fine-tune again; here a rank-2 extraction of it, beside it.
    func rankSection(_ base: String, _ style: String, number: Int) throws {
        print("\(number). ranks: the shipped \(style) style is a rank-8 LoRA extracted from its fine-tune (docs/world-models.md")
        print("   measures what it keeps); baked into the base, and a rank-2 extraction of that, beside it:")
        let full = folder + "/\(style)-full.safetensors"
        if !FileManager.default.fileExists(atPath: full) {
            let args = ["--method", "lora", "--a", base, "--lora", try shipped.path("\(style).safetensors"), "--force", "-o", full]
            show("merge", args)
            try MergeCommand.parse(args + ["--quiet"]).run()
        }
        let rank2 = folder + "/\(style)-rank2.safetensors"
        let extract = ["--base", base, "--tuned", full, "--rank", "2", "--force", "-o", rank2]
        show("lora extract", extract)
        try LoraCommand.Extract.parse(extract + ["--quiet"]).run()
        let home = folder + "/registry"
        let add = ["\(style)-rank2", "--from", rank2, "--home", home, "--force"]
        show("styles add", add)
        try StylesCommand.Add.parse(add + ["--quiet"]).run()
        var tiles: [(image: RGBImage, caption: String)] = []
        for (i, (prompt, seed)) in zip(Self.prompts, Self.seeds).prefix(3).enumerated() {
            tiles.append((try PNG.read(folder + "/base-\(i + 1).png").image.enlarged(4), "base"))
            tiles.append((try render(prompt, seed: seed, ["--checkpoint", full], to: "\(style)-rank8-\(i + 1)"), "\(style) (rank 8)"))
            tiles.append((try render(prompt, seed: seed, ["--checkpoint", base, "--style", "\(style)-rank2", "--home", home],
                                     to: "\(style)-rank2-\(i + 1)"), "rank 2"))
        }
        try sheet(tiles, columns: 3, name: "shapes-ranks")
    }

    /// MUMU's multimodal prompts: a shape's crop inside the prompt, on the tiny MUMU and with a fine-tune under it.
    func multimodalSection(_ base: String, _ style: String?, number: Int) throws {
        print("\(number). multimodal prompts on the tiny MUMU (an Idefics2-architecture encoder, the connector, the base UNet + a LoRA):")
        let decoder = try shipped.path("mumu-decoder.safetensors")
        let encoder = try shipped.folderPath("encoder")
        var decoders = [("mumu", decoder)]
        if let style {
            let full = folder + "/\(style)-full.safetensors"
            let args = ["--into-mumu", full, "--mumu", decoder, "--base", base, "--force", "-o", folder + "/mumu-\(style).safetensors"]
            show("merge", args)
            try MergeCommand.parse(args + ["--quiet"]).run()
            decoders.append(("mumu + \(style)", folder + "/mumu-\(style).safetensors"))
        }
        var tiles: [(image: RGBImage, caption: String)] = []
        for (i, crop) in Self.crops.enumerated() {
            let image = try shipped.path("crops/\(crop.file)")
            let prompt = crop.prompt.replacingOccurrences(of: "CROP", with: image)
            tiles.append((try PNG.read(image).image.enlarged(4), "prompt image"))
            for (j, (label, file)) in decoders.enumerated() {
                tiles.append((try render(prompt, seed: crop.seed, ["--checkpoint", file, "--encoder", encoder],
                                         to: "mumu-\(i + 1)-\(j)", quiet: !(i == 0)), label))
            }
            print("   \(i + 1). \(prompt)")
        }
        try sheet(tiles, columns: decoders.count + 1, name: "shapes-multimodal")
    }

    /// Crops of shapes from held-out scenes' true renders (written by scripts/train_world_mumu.py export), in the
    /// bootstrap's replace form: the crop stands for the shape's size, color and shape words. Each prompt names
    /// the background the crop was cut from: the bootstrap's crops always come from the image being captioned, so
    /// the tiny MUMU reads a crop with its background, and a crop on another background comes out in the wrong
    /// colors (docs/world-models.md).
    static let crops: [(file: String, prompt: String, seed: UInt64)] = [
        ("orange-star.png", "a <image:CROP> on the left and a small blue square at the top right, on a black background", 1_000_000_101),
        ("green-ring.png", "a <image:CROP> in the center, on a red background", 1_000_000_102),
    ]
}
