import ArgumentParser
import MumuTensor
import MumuFormats

@main
struct Mumu: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mumu",
        abstract: "Community SDXL fine-tunes for MUMU image generation, on a plain CPU.",
        discussion: "Reads SDXL checkpoints as people ship them (safetensors, sharded, diffusers folders, .ckpt, LoRA), converts and synthesizes them.",
        version: MumuVersion.string,
        subcommands: [InspectCommand.self, ConvertCommand.self, SynthCommand.self, MergeCommand.self, StylesCommand.self, LoraCommand.self, GenerateCommand.self, BenchCommand.self, DemoCommand.self])

    static func main() {
        BLASRuntime.reexecWithFasterKernelsIfNeeded()
        main(nil)
    }
}

enum MumuVersion {
    static let string = "0.1.0"
}
