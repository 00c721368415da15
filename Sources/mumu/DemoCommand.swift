import ArgumentParser
import Foundation
import MumuFormats
import MumuMerge

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the main job on a self-contained example: synthesize tiny SDXL models, put a fine-tune under a MUMU-style decoder, inspect the result.")

    @Option(help: "Folder for the demo's files (default: a new temporary folder).")
    var dir: String?

    func run() throws {
        try runReportingErrors {
            let folder = dir ?? (NSTemporaryDirectory() + "mumu-demo-\(getpid())")
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
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

            print("5. inspect the inputs and the merge\n")
            for path in [base, tuned, merged] {
                print(try Inspector.inspect(path, hash: true, cache: nil).text(includeKeys: false))
                print("")
            }
            print("Demo files are in \(folder).")
        }
    }
}
