import ArgumentParser
import Foundation
import MumuTensor
import MumuFormats

@main
struct Mumu: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mumu",
        abstract: "Community SDXL fine-tunes for MUMU image generation, on a plain CPU.",
        discussion: "Reads SDXL checkpoints as people ship them (safetensors, sharded, diffusers folders, .ckpt, LoRA), converts and synthesizes them.",
        version: MumuVersion.string,
        subcommands: [InspectCommand.self, ConvertCommand.self, SynthCommand.self, MergeCommand.self, StylesCommand.self, LoraCommand.self, EncodeCommand.self, GenerateCommand.self, BenchCommand.self, DemoCommand.self])

    static func main() {
        BLASRuntime.reexecWithFasterKernelsIfNeeded()
        if let note = BF16Matrix.environmentNote() { FileHandle.standardError.write(Data("mumu: note: \(note)\n".utf8)) }
        main(CommandLine.arguments.dropFirst().map { $0 })
    }

    /// One error style for every command: `mumu: error: ...` on stderr, exit 1 for a failure at run time and 64
    /// (EX_USAGE) for a usage error, which also shows the usage of the subcommand that was given.
    static func main(_ arguments: [String]) -> Never {
        var command: ParsableCommand
        do {
            // mumu has no options to join (`-ab`): a word like `-dash` is a mistake, not `-d -a -s -h` (which
            // would print the help and exit 0). Values such as `-1` or `-0.5` are numbers, not options.
            let options = arguments.prefix { $0 != "--" }
            if let joined = options.first(where: { $0.count > 2 && $0.hasPrefix("-") && !$0.hasPrefix("--") && $0.dropFirst().first!.isLetter }) {
                throw ValidationError("unknown option '\(joined)' (a name that starts with '-' goes after '--', e.g. mumu styles add --from FILE -- \(joined))")
            }
            command = try parseAsRoot(arguments)
        } catch {
            fail(error, message: fullMessage(for: error))
        }
        do {
            try command.run()
            Foundation.exit(0)
        } catch {
            // A usage error found at run time: show the usage of the subcommand that ran, not the top level's.
            let text = type(of: command).message(for: error)
            fail(error, message: text + "\nUsage: " + usageString(for: type(of: command)) + "\n  See 'mumu \(commandPath(type(of: command))) --help' for more information.")
        }
    }

    /// "styles add" for StylesCommand.Add.
    static func commandPath(_ type: ParsableCommand.Type) -> String {
        func search(_ t: ParsableCommand.Type, _ path: [String]) -> [String]? {
            if t == type { return path }
            for sub in t.configuration.subcommands {
                if let found = search(sub, path + [sub._commandName]) { return found }
            }
            return nil
        }
        return (search(Mumu.self, []) ?? []).joined(separator: " ")
    }

    private static func fail(_ error: Error, message: String) -> Never {
        let code = exitCode(for: error)
        if code == .success {   // --help, --version
            print(message)
            Foundation.exit(0)
        }
        if error is ExitCode { Foundation.exit(code.rawValue) }   // the command reported its error itself
        var text = message
        if text.hasPrefix("Error: ") { text = String(text.dropFirst("Error: ".count)) }
        FileHandle.standardError.write(Data("mumu: error: \(text)\n".utf8))
        Foundation.exit(code == .failure ? 1 : code.rawValue)
    }
}

enum MumuVersion {
    static let string = "0.1.0"
}
