import ArgumentParser
import MumuFormats

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Say what a checkpoint, LoRA, sharded set, diffusers folder or transformers (Idefics2) folder is.",
        discussion: "Reads headers only (fast) unless --hash. The --json schema is in docs/formats.md.")

    @Argument(help: "A .safetensors / .ckpt file, a *.index.json, a diffusers folder, or a transformers folder (Idefics2: config.json + model.safetensors or shards).")
    var path: String
    @Flag(help: "Print JSON (schema in docs/formats.md).")
    var json = false
    @Flag(help: "List every tensor with dtype and shape.")
    var keys = false
    @Flag(help: "Compute SHA256, AutoV1, AutoV2, AutoV3 / ModelSpec hash (cached by path, size and mtime).")
    var hash = false

    func run() throws {
        try runReportingErrors {
            let report = try Inspector.inspect(path, hash: hash)
            print(json ? JSONWriter.write(report.json(includeKeys: keys)) : report.text(includeKeys: keys))
        }
    }
}
