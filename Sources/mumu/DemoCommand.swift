import ArgumentParser
import Foundation
import MumuFormats
import MumuGenerate
import MumuMerge
import MumuSampler

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the story on the shapes world's trained models (models/shapes): text to image, style fine-tunes, a merge of two, ranks, and multimodal prompts on the tiny MUMU with a fine-tune under it (on tiny synthesized models when models/shapes has no base).")

    @Option(help: "Folder for the demo's files (default: a new temporary folder).")
    var dir: String?

    @Option(help: "The shapes world's trained models (models/shapes/README.md).")
    var models = "models/shapes"

    func run() throws {
        try runReportingErrors {
            let folder = dir ?? (NSTemporaryDirectory() + "mumu-demo-\(getpid())")
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            // The shapes world's models (docs/world-models.md); each part of its demo runs when its files ship.
            let shipped = try ShippedModels(folder: models)
            if shipped.sums["base.safetensors"] != nil {
                try ShapesDemo(shipped: shipped, folder: folder).run()
                print("Demo files are in \(folder).")
                return
            }
            print("(\(models) has no base model: this demo runs on tiny synthesized models with random weights)\n")
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
            let result = try MergeRunner.run(plan, to: merged, overwrite: true, inputHashes: InputHashes(plan))
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
