import ArgumentParser
import Foundation
import MumuFormats
import MumuGenerate
import MumuMerge
import MumuSampler

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the story on the shapes world's trained models (models/shapes) and on tiny synthesized ones: generate, merge a fine-tune under a MUMU-style decoder, register styles.")

    @Option(help: "Folder for the demo's files (default: a new temporary folder).")
    var dir: String?

    @Option(help: "The shapes world's trained models (models/shapes/README.md).")
    var models = "models/shapes"

    /// Held-out prompts of the shapes world (scripts/world.py heldout: scene seeds 10^9 + i, never trained on).
    static let shapesPrompts = [
        "a large green ring at the bottom right, on a purple background",
        "a large orange star on the left and a large red circle at the bottom, on a white background",
        "a small purple square on the right and a large black ring at the bottom left, on a gray background",
        "a large yellow ring at the top and a small white circle in the center, on a green background",
        "a large green triangle on the left, a small white circle in the center and a small yellow square at the bottom right, on a gray background",
        "a small purple square on the right, on a gray background",
    ]
    static let shapesSeeds: [UInt64] = [1_000_000_000, 1_000_000_001, 1_000_000_004, 1_000_000_007, 1_000_000_008, 1_000_000_006]

    /// Renders the shapes world's prompts on its base model and lays them out 4x enlarged with their numbers.
    func shapesWorld(_ folder: String) throws {
        let shipped = try ShippedModels(folder: models)
        let base = try shipped.path("base.safetensors")
        print("1. the shapes world's base model (\(base), trained on this kind of CPU: docs/world-models.md)")
        print("   text to image, 64x64, 20 steps, held-out prompts (never seen in training):")
        var tiles: [(image: RGBImage, caption: String)] = []
        for (i, (prompt, seed)) in zip(Self.shapesPrompts, Self.shapesSeeds).enumerated() {
            let out = folder + "/shapes-\(i + 1).png"
            try GenerateCommand.parse([prompt, "--checkpoint", base, "--width", "64", "--height", "64", "--steps", "20",
                                       "--seed", String(seed), "--quiet", "--force", "-o", out]).run()
            print("   \(i + 1). \(prompt)")
            tiles.append((try PNG.read(out).image.enlarged(4), "\(i + 1)"))
        }
        let sheet = folder + "/shapes-base.png"
        try PNG.write(try ContactSheet.make(tiles, columns: 3), text: [], to: sheet, overwrite: true)
        print("   grid: \(sheet)\n")
    }

    func run() throws {
        try runReportingErrors {
            let folder = dir ?? (NSTemporaryDirectory() + "mumu-demo-\(getpid())")
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            // The shapes world's models land one by one (docs/world-models.md); the demo shows those that ship.
            if try ShippedModels(folder: models).sums["base.safetensors"] != nil {
                try shapesWorld(folder)
                print("The rest runs on tiny synthesized models (random weights), until the shapes world's fine-tunes land:\n")
            } else {
                print("(the shapes world's base model is not trained yet: docs/world-models.md; this demo runs on tiny synthesized models with random weights)\n")
            }
            let base = folder + "/tiny-base.safetensors"
            let tuned = folder + "/tiny-finetune.safetensors"
            guard let arch = Architectures.named("sdxl-tiny") else { throw FormatError.unsupported("sdxl-tiny descriptor missing") }

            print("1. synthesize a tiny SDXL checkpoint (\(arch.title))")
            var synth = Synthesizer(architecture: arch)
            synth.seed = 1
            let size = try synth.write(toFile: base, overwrite: true)
            print("   wrote \(base) (\(formatBytes(size)))")

            print("2. synthesize a fine-tune of it (base + 1% noise)")
            var ft = Synthesizer(architecture: arch)
            ft.seed = 2
            ft.perturb = (try SafetensorsFile(path: base), 0.01)
            try ft.write(toFile: tuned, overwrite: true)
            print("   wrote \(tuned)")

            print("3. synthesize a stand-in for the MUMU decoder (UNet and VAE of base + its own 3% delta)")
            let decoder = folder + "/tiny-mumu-decoder.safetensors"
            var dec = Synthesizer(architecture: arch)
            dec.seed = 3
            dec.components = ["unet", "vae"]
            dec.perturb = (try SafetensorsFile(path: base), 0.03)
            try dec.write(toFile: decoder, overwrite: true)
            print("   wrote \(decoder)")

            print("4. put the fine-tune under it: mumu merge --into-mumu \((tuned as NSString).lastPathComponent) "
                  + "--mumu \((decoder as NSString).lastPathComponent) --base \((base as NSString).lastPathComponent)")
            let merged = folder + "/tiny-mumu-finetune.safetensors"
            let recipe = Recipe.intoMumu(finetune: tuned, mumu: decoder, base: base, directory: folder)
            let plan = try MergePlan(recipe: recipe)
            let result = try MergeRunner.run(plan, to: merged, overwrite: true, hashes: try MergeMetadata.inputHashes(plan))
            print("   wrote \(merged): \(result.tensors) tensors (UNet = decoder + (fine-tune - base); the decoder's VAE kept)")

            print("5. inspect the merge\n")
            print(try Inspector.inspect(merged, hash: true, cache: nil).text(includeKeys: false))
            print("")

            print("6. a second fine-tune, and register styles (registry in \(folder)/registry):")
            let photo = folder + "/tiny-finetune-photo.safetensors"
            var ft2 = Synthesizer(architecture: arch)
            ft2.seed = 4
            ft2.perturb = (try SafetensorsFile(path: base), 0.02)
            try ft2.write(toFile: photo, overwrite: true)
            let home = folder + "/registry"
            let commands: [[String]] = [
                ["anime", "--from", tuned, "--base", base, "--description", "fine-tune 1, lossless delta against the base"],
                ["photo", "--from", photo, "--base", base, "--rank", "8", "--description", "fine-tune 2 as a rank-8 low-rank delta (kept unmerged by the sampler)"],
                ["mumu-anime", "--from", merged, "--description", "fine-tune 1 under the MUMU decoder (its UNet and VAE)"],
            ]
            for args in commands {
                print("   mumu styles add " + args.prefix(3).joined(separator: " ") + " ...")
                try StylesCommand.Add.parse(args + ["--home", home, "--force"]).run()
            }
            print("\n7. mumu styles list\n")
            try StylesCommand.List.parse(["--home", home]).run()

            print("\n8. generate the same prompt and seed under each style, and a contact sheet:")
            let args = ["a lighthouse on a cliff at dawn, oil painting", "--checkpoint", base,
                        "--style", "anime", "--style", "photo", "--style", "mumu-anime",
                        "--width", "256", "--height", "256", "--steps", "20", "--cfg", "6", "--seed", "42",
                        "--home", home, "--grid", "--force", "-o", folder + "/lighthouse.png"]
            print("   mumu generate " + args.map { $0.contains(" ") ? "\"\($0)\"" : $0 }.joined(separator: " ").replacingOccurrences(of: folder + "/", with: ""))
            try GenerateCommand.parse(args).run()
            print("")
            print("Demo files are in \(folder).")
        }
    }
}
