import ArgumentParser
import Foundation
import MumuFormats

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the main job on a self-contained example: synthesize a tiny SDXL checkpoint and inspect it.")

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

            print("3. inspect them\n")
            for path in [base, tuned] {
                print(try Inspector.inspect(path, hash: true, cache: nil).text(includeKeys: false))
                print("")
            }
            print("Demo files are in \(folder).")
        }
    }
}
