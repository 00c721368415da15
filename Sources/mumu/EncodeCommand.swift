import ArgumentParser
import Foundation
import MumuFormats
import MumuGenerate
import MumuSampler
import MumuTensor

struct EncodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Encode a prompt with images inside (MUMU's encoder + a decoder's connector) into a conditioning file.",
        discussion: """
        Images go into the prompt as <image:PATH> (relative to the working directory):
          mumu encode "a <image:man.jpg> man and his <image:dog.png> dog" --encoder idefics2/ --decoder mumu.safetensors -o cond.safetensors
          mumu generate --conditioning cond.safetensors --checkpoint mumu.safetensors
        The encoder folder is an Idefics2 folder (config.json, safetensors, tokenizer.json). The negative prompt takes the
        same syntax and is encoded at its own length (empty: the start token alone). docs/generating.md.
        """)

    @Argument(help: "The prompt, with <image:PATH> where images go.") var prompt: String
    @Option(name: [.customShort("n"), .long], help: "Negative prompt (same syntax; empty: the start token alone).") var negative = ""
    @Option(help: "The Idefics2 folder (config.json, weights, tokenizer.json).") var encoder: String
    @Option(help: "A mumu-decoder checkpoint holding the connector (connector.*).") var decoder: String
    @Option(parsing: .unconditional, help: "Longer edge of each image in pixels, a multiple of 14 (default: the folder's mumu_image_size, else 448).") var imageSize: Int?
    @Option(help: "A LoRA for the encoder's LM and projector (PEFT's adapter_model.safetensors, adapter_config.json beside it, or kohya names), kept unmerged.") var encoderLora: String?
    @Option(help: "f32, or bf16 (half the memory; Idefics2-8b needs it on a 24 GB machine). Default: bf16 where the CPU has a bf16 hardware path (AVX2 and up), else f32.") var precision: WeightPrecision = .encoderDefault
    @Option(name: [.customShort("o"), .long], help: "Output conditioning file (.safetensors).") var output: String
    @Flag(help: "Overwrite an existing output.") var force = false
    @Flag(help: "No per-stage timings.") var quiet = false

    func run() throws {
        try runReportingErrors {
            var request = EncodeJob.Request(prompt: prompt, encoder: encoder, decoder: decoder, output: output)
            request.negativePrompt = negative
            request.imageSize = imageSize
            request.encoderLora = encoderLora
            request.precision = precision
            request.overwrite = force
            let report = try EncodeJob(request).run()
            if !quiet {
                print("wrote \(output): \(report.tokens) tokens (negative \(report.negativeTokens)), \(report.images.count) images")
                print(report.stages.map { String(format: "%@ %.2f s", $0.name, $0.seconds) }.joined(separator: ", "))
            }
        }
    }
}
