import Foundation
import PackagePlugin

/// Compiles the architecture descriptors in `formats/*.json` into the MumuFormats module, so the
/// `mumu` binary carries them and works wherever it is copied.
@main
struct EmbedFormats: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let formats = context.package.directoryURL.appending(path: "formats")
        let inputs = try FileManager.default.contentsOfDirectory(at: formats, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "json" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedFormats.swift")
        return [.buildCommand(
            displayName: "Embedding \(inputs.count) architecture descriptors from formats/",
            executable: try context.tool(named: "EmbedFormatsTool").url,
            arguments: [output.path] + inputs.map(\.path),
            inputFiles: inputs,
            outputFiles: [output])]
    }
}
