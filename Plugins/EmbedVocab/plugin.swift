import Foundation
import PackagePlugin

/// Compiles the CLIP BPE merges (`vocab/clip_merges.txt`) into the MumuSampler module as a string
/// literal, so the `mumu` binary carries its tokenizer and works wherever it is copied.
@main
struct EmbedVocab: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let merges = context.package.directoryURL.appending(path: "vocab/clip_merges.txt")
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedVocab.swift")
        return [.buildCommand(
            displayName: "Embedding the CLIP BPE merges from vocab/clip_merges.txt",
            executable: try context.tool(named: "EmbedVocabTool").url,
            arguments: [output.path, merges.path],
            inputFiles: [merges],
            outputFiles: [output])]
    }
}
