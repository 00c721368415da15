import ArgumentParser
import Foundation
import MumuFormats
import MumuMerge
import MumuStyles

/// Options every `styles` subcommand shares.
struct RegistryOptions: ParsableArguments {
    @Option(help: "Registry folder (default: $MUMU_HOME, else $XDG_DATA_HOME/mumu, else ~/.local/share/mumu).")
    var home: String?
    func registry() throws -> StyleRegistry { try StyleRegistry(home: home) }
}

struct StylesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "styles",
        abstract: "The style registry: merged variants, fine-tunes and LoRAs the sampler uses by name.",
        discussion: "Styles are manifests plus content-addressed blobs under the registry folder; docs/styles.md.",
        subcommands: [Add.self, List.self, Show.self, Remove.self, Verify.self, GC.self, Import.self, Materialize.self],
        defaultSubcommand: List.self)

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register a style from a checkpoint, a LoRA or a recipe.")
        @Argument(help: "Style name (letters, digits, '-', '_', '.').") var name: String
        @Option(help: "A checkpoint, LoRA or recipe (.yaml).") var from: String
        @Option(help: "full, delta, lora or recipe (default: from the file, and delta when --base is given for a checkpoint).") var kind: String?
        @Option(help: "The decoder the style applies to: a file or a full style.") var base: String?
        @Option(help: "Delta: keep this rank (SVD, stored as a LoRA) instead of the lossless delta.") var rank: Int?
        @Option(help: "Delta with --rank: rank for 3x3 convolutions (default 0: linear layers only, kohya's default).") var convRank: Int?
        @Option(help: "Delta with --rank: comma-separated components to extract (default: unet).") var components: String?
        @Option(help: "Title (default: ModelSpec title, kohya output name, or the name).") var title: String?
        @Option(help: "Trigger phrase (default: ModelSpec trigger_phrase).") var trigger: String?
        @Option(help: "Default strength.") var strength: Double?
        @Option(help: "Description.") var description: String?
        @Option(help: "Comma-separated tags.") var tags: String?
        @Flag(help: "Keep full and LoRA bytes in the original file instead of copying them into the registry.") var byReference = false
        @Flag(help: "Replace an existing style of that name.") var force = false
        @Option(help: "Worker threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
        @OptionGroup var registry: RegistryOptions

        func run() throws {
            try runReportingErrors {
                var req = StyleAddRequest(name: name, from: from)
                if let kind {
                    guard let k = StyleManifest.Kind(rawValue: kind) else { throw ValidationError("--kind must be full, delta, lora or recipe") }
                    req.kind = k
                }
                req.base = base; req.rank = rank; req.convRank = convRank; req.title = title; req.trigger = trigger
                req.strength = strength; req.description = description; req.byReference = byReference; req.replace = force
                req.tags = tags.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } } ?? []
                req.threads = max(1, threads)
                if let components { req.lossyComponents = Set(components.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
                if rank != nil && req.kind != nil && req.kind != .delta { throw ValidationError("--rank applies to delta styles") }
                if let rank, rank < 1 { throw ValidationError("--rank must be at least 1") }
                let m = try registry.registry().add(req) { warn($0) }
                print("added style '\(m.name)' (\(m.kind.rawValue)\(m.rank.map { ", rank \($0)" } ?? ""), \(formatBytes(m.bytesOnDisk)))")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List styles, sorted by name.")
        @Flag(help: "JSON (schema in docs/styles.md).") var json = false
        @OptionGroup var registry: RegistryOptions

        func run() throws {
            try runReportingErrors {
                let (styles, problems) = try registry.registry().list()
                if json {
                    let rows: [JSONValue] = styles.map { s in
                        .object([("name", .string(s.name)), ("title", .string(s.title)), ("kind", .string(s.kind.rawValue)),
                                 ("architecture", s.architecture.map { .string($0) } ?? .null),
                                 ("base", s.base.map { .object([("name", .string($0.name)), ("sha256", .string($0.sha256))]) } ?? .null),
                                 ("size", .int(s.bytesOnDisk)), ("strength", .double(s.strength)),
                                 ("trigger", s.trigger.map { .string($0) } ?? .null), ("created", .string(s.created))])
                    }
                    print(JSONWriter.write(.object([("schema", .int(1)), ("styles", .array(rows)),
                                                    ("problems", .array(problems.map { .string($0) }))])))
                } else {
                    if styles.isEmpty { print("no styles (add one with mumu styles add NAME --from FILE)") }
                    let nameWidth = max(4, styles.map(\.name.count).max() ?? 0)
                    if !styles.isEmpty {
                        print(pad("NAME", nameWidth) + "  KIND    ARCHITECTURE  BASE                  SIZE      TRIGGER")
                    }
                    for s in styles {
                        let base = s.base.map { String($0.name.prefix(20)) } ?? "-"
                        print(pad(s.name, nameWidth) + "  " + pad(s.kind.rawValue, 6) + "  " + pad(s.architecture ?? "?", 12) + "  "
                              + pad(base, 20) + "  " + pad(formatBytes(s.bytesOnDisk), 8) + "  " + (s.trigger ?? ""))
                    }
                    for p in problems { warn(p) }
                }
            }
        }

        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a style's manifest.")
        @Argument var name: String
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runReportingErrors {
                let m = try registry.registry().manifest(name)
                print(String(decoding: try m.encoded(), as: UTF8.self))
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a style (its blobs go with the next gc).")
        @Argument var name: String
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runReportingErrors {
                let r = try registry.registry()
                try r.withLock { try r.remove(name) }
                print("removed style '\(name)'; run mumu styles gc to free its blobs")
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-hash blobs; report corruption, missing blobs and orphans.")
        @Argument var names: [String] = []
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runReportingErrors {
                let result = try registry.registry().verify(names.isEmpty ? nil : names)
                for p in result.problems { print("problem: \(p)") }
                if !result.orphans.isEmpty { print("\(result.orphans.count) orphan blobs (mumu styles gc removes them)") }
                print("\(result.checked) blobs checked, \(result.problems.count) problems")
                if !result.problems.isEmpty { throw ExitCode(1) }
            }
        }
    }

    struct GC: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "gc", abstract: "Remove blobs no style uses, and stale temporary files.")
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runReportingErrors {
                let (removed, bytes) = try registry.registry().gc()
                print("removed \(removed) files, \(formatBytes(bytes))")
            }
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register what an A1111 or ComfyUI models folder holds.")
        @Argument(help: "The models folder (or its Stable-diffusion/, checkpoints/, Lora/ or loras/ folder).") var dir: String
        @Option(help: "The decoder LoRAs apply to (a file or a full style); LoRAs are skipped without it.") var base: String?
        @Flag(help: "Copy the files into the registry (default: keep them where they are, by reference).") var copy = false
        @Flag(help: "Replace styles of the same names.") var force = false
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runReportingErrors {
                let (added, skipped) = try registry.registry().importFolder(dir, base: base, byReference: !copy, replace: force)
                for m in added { print("added \(m.name) (\(m.kind.rawValue))") }
                for s in skipped { warn("skipped \(s)") }
                print("\(added.count) styles added, \(skipped.count) files skipped")
            }
        }
    }

    struct Materialize: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a style as a full checkpoint any tool loads.")
        @Argument var name: String
        @Option(name: [.short, .customLong("output")], help: "Output .safetensors file.") var output: String
        @Option(help: "The base file (default: the style's recorded base, when it is a registered full style).") var base: String?
        @Flag(help: "Overwrite the output.") var force = false
        @Option(help: "Worker threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runReportingErrors {
                try registry.registry().materialize(name, base: base, to: output, overwrite: force, threads: max(1, threads))
                print("wrote \(output)")
            }
        }
    }
}

struct LoraCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora", abstract: "LoRA tools.", subcommands: [Extract.self])

    struct Extract: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Extract a kohya-format LoRA from the difference of two models (SVD), as kohya and ComfyUI do.")
        @Option(help: "The base model.") var base: String
        @Option(help: "The fine-tuned model.") var tuned: String
        @Option(help: "Rank for linear layers (and 1x1 convolutions).") var rank: Int
        @Option(help: "Rank for 3x3 convolutions (default 0: none, as kohya without --conv_dim).") var convRank: Int?
        @Option(name: [.short, .customLong("output")], help: "Output .safetensors file.") var output: String
        @OptionGroup var out: OutputOptions
        func run() throws {
            try runReportingErrors {
                guard rank >= 1, (convRank ?? 0) >= 0 else { throw ValidationError("--rank must be at least 1 and --conv-rank at least 0") }
                try OutputPath.check(output, overwrite: out.force)
                let b = try ModelFile.open(base).source, t = try ModelFile.open(tuned).source
                let report = try LoraExtractor.extract(base: b, tuned: t, rank: rank, convRank: convRank ?? 0, to: output,
                                                       threads: max(1, out.threads), overwrite: out.force)
                print("wrote \(output): \(report.modules) modules, rank \(rank), relative error of the kept delta \(String(format: "%.4f", report.relativeError))")
            }
        }
    }
}
