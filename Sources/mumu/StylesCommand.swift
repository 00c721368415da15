import ArgumentParser
import Foundation
import MumuFormats
import MumuMerge
import MumuStyles

/// Options every `styles` subcommand shares.
struct RegistryOptions: ParsableArguments {
    @Option(help: "Registry folder (default: $MUMU_HOME, else $XDG_DATA_HOME/mumu, else ~/.local/share/mumu).")
    var home: String?
    /// `create` false for commands that only read: a registry that does not exist reads as empty, and nothing is made.
    func registry(create: Bool = true) throws -> StyleRegistry { try StyleRegistry(home: home, create: create) }
}

extension StyleManifest.Kind: ExpressibleByArgument {}

/// A registry error with the flags that fix it: the library speaks of "the base", the command knows it is `--base`.
struct StylesCLIError: Error, CustomStringConvertible {
    var error: StyleError
    var description: String {
        switch error {
        case .exists(let name): return "a style named '\(name)' exists; pass --force to replace it"
        case .needsBase: return "\(error): give it with --base"
        case .baseUnavailable:
            let text = error.description
            return text.hasSuffix("give the base file") ? text.dropLast("give the base file".count) + "give --base FILE" : text
        default: return error.description
        }
    }
}

/// `runReportingErrors` for the styles commands: registry errors gain the flags that fix them.
func runStyles(_ body: () throws -> Void) throws {
    try runReportingErrors {
        do { try body() } catch let e as StyleError { throw StylesCLIError(error: e) }
    }
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
        @Argument(help: "Style name: letters and digits of any script and punctuation; no spaces, '/', '\\', ':', '*', '?', '\"', '<', '>', '|'.") var name: String
        @Option(help: "A checkpoint, LoRA or recipe (.yaml).") var from: String
        @Option(help: "full, delta, lora or recipe (default: from the file, and delta when --base or --rank is given for a checkpoint).") var kind: StyleManifest.Kind?
        @Option(help: "Delta, recipe (needed) and LoRA (checked, recorded): the base, a file or a full style.") var base: String?
        @Option(help: "Delta: keep this rank (SVD, stored as a LoRA) instead of the lossless delta.") var rank: Int?
        @Option(help: "Delta with --rank: rank for 3x3 convolutions (default 0: linear layers only, kohya's default).") var convRank: Int?
        @Option(help: "Delta with --rank: comma-separated components to extract (default: unet).") var components: String?
        @Option(help: "Title (default: ModelSpec title, kohya output name, or the name).") var title: String?
        @Option(help: "Trigger phrase (default: ModelSpec trigger_phrase).") var trigger: String?
        @Option(help: "Default strength.") var strength: Double?
        @Option(help: "Description.") var description: String?
        @Option(help: "Comma-separated tags.") var tags: String?
        @Flag(help: "Full and LoRA: keep the bytes in the original file instead of copying them into the registry.") var byReference = false
        @Flag(help: "Replace an existing style of that name.") var force = false
        @Option(help: "Worker threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
        @OptionGroup var quiet: QuietOption
        @OptionGroup var registry: RegistryOptions

        /// Every option checked against the kind, when the kind is known before reading the file (given, or a recipe).
        func validate() throws {
            if let rank, rank < 1 { throw ValidationError("--rank must be at least 1") }
            if let convRank, convRank < 0 { throw ValidationError("--conv-rank must be at least 0") }
            if rank == nil {
                if convRank != nil { throw ValidationError("--conv-rank applies with --rank (a rank-limited delta)") }
                if components != nil { throw ValidationError("--components applies with --rank (a rank-limited delta)") }
            }
            let isRecipe = from.hasSuffix(".yaml") || from.hasSuffix(".yml")
            guard let kind = kind ?? (isRecipe ? .recipe : nil) else {
                if rank != nil && base == nil { throw ValidationError("--rank makes a delta style, which needs --base") }
                return
            }
            let given: [(String, Bool)] = [("--rank", rank != nil), ("--conv-rank", convRank != nil), ("--components", components != nil)]
            if kind != .delta, let (flag, _) = given.first(where: \.1) {
                throw ValidationError("\(flag) does nothing for a \(kind.rawValue) style (only a delta style is extracted at a rank)")
            }
            switch kind {
            case .full:
                if base != nil { throw ValidationError("--base does nothing for --kind full (a full style is a whole checkpoint)") }
            case .delta, .recipe:
                if base == nil { throw ValidationError("a \(kind.rawValue) style needs --base") }
                if byReference { throw ValidationError("--by-reference does nothing for a \(kind.rawValue) style (its blob is made by mumu, not a file of yours)") }
            case .lora:
                break
            }
        }

        func run() throws {
            try runStyles {
                var req = StyleAddRequest(name: name, from: from)
                req.kind = kind
                req.base = base; req.rank = rank; req.convRank = convRank; req.title = title; req.trigger = trigger
                req.strength = strength; req.description = description; req.byReference = byReference; req.replace = force
                req.tags = tags.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } } ?? []
                req.threads = max(1, threads)
                if let components { req.components = Set(components.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
                let bar = ProgressBar("add \(name)", quiet: quiet.quiet)
                let m = try registry.registry().add(req, notes: { bar.finish(); warn($0) }, progress: bar.update)
                bar.finish()
                if !quiet.quiet {
                    print("added style '\(m.name)' (\(m.kind.rawValue)\(m.rank.map { ", rank \($0)" } ?? ""), \(formatBytes(m.bytesOnDisk)))")
                }
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List styles, sorted by name.")
        @Flag(help: "JSON (schema in docs/styles.md).") var json = false
        @OptionGroup var registry: RegistryOptions

        func run() throws {
            try runStyles {
                let (styles, problems) = try registry.registry(create: false).list()
                if json {
                    let rows: [JSONValue] = styles.map { s in
                        .object([("name", .string(s.name)), ("title", .string(s.title)), ("kind", .string(s.kind.rawValue)),
                                 ("architecture", s.architecture.map { .string($0) } ?? .null),
                                 ("base", s.base.map { .object([("name", .string($0.name)), ("sha256", .string($0.sha256))]
                                                               + ($0.path.map { [("path", JSONValue.string($0))] } ?? [])) } ?? .null),
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
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Describe a style (its manifest as JSON with --json).")
        @Argument var name: String
        @Flag(help: "The manifest as JSON (schema in docs/styles.md).") var json = false
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runStyles {
                let r = try registry.registry(create: false)
                let m = try r.manifest(name)
                if json {
                    print(String(decoding: try m.encoded(), as: UTF8.self))
                    return
                }
                var rows: [(String, String)] = [("name", m.name), ("title", m.title), ("kind", m.kind.rawValue + (m.rank.map { ", rank \($0)" } ?? "")),
                                                ("architecture", m.architecture ?? "unknown")]
                if let b = m.base {
                    rows.append(("base", "\(b.name) (sha256 \(b.sha256.prefix(12))…)" + (m.needsExactBase ? "" : ", trained on; applies to any checkpoint of its architecture")))
                    if let p = b.path { rows.append(("base file", p)) }
                }
                rows.append(("strength", "\(m.strength)"))
                if let t = m.trigger { rows.append(("trigger", t)) }
                if let d = m.description { rows.append(("description", d)) }
                if !m.tags.isEmpty { rows.append(("tags", m.tags.joined(separator: ", "))) }
                rows.append(("created", m.created))
                rows.append(("size", formatBytes(m.bytesOnDisk)))
                for s in m.sources { rows.append(("source", s.path)) }
                for b in m.blobs {
                    rows.append(("blob", "\(b.role): \(b.format), \(formatBytes(b.size)), sha256 \(b.sha256.prefix(12))…" + (b.reference.map { ", kept in \($0)" } ?? "")))
                }
                let width = rows.map(\.0.count).max() ?? 0
                for (k, v) in rows { print(pad(k, width) + "  " + v) }
                if let recipe = m.recipe { print("recipe:"); print(recipe.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n")) }
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a style (its blobs go with the next gc).")
        @Argument var name: String
        @OptionGroup var quiet: QuietOption
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runStyles {
                let r = try registry.registry()
                let dependents = try r.withLock { try r.remove(name) }
                if !dependents.isEmpty {
                    warn("style '\(name)' was the base of \(dependents.map { "'\($0)'" }.joined(separator: ", ")); "
                         + "they now need their base given as a file (--base FILE)")
                }
                if !quiet.quiet { print("removed style '\(name)'; run mumu styles gc to free its blobs") }
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-hash blobs; report corruption, missing blobs and orphans.")
        @Argument var names: [String] = []
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runStyles {
                let result = try registry.registry(create: false).verify(names.isEmpty ? nil : names)
                for p in result.problems { print("problem: \(p)") }
                if !result.orphans.isEmpty { print("\(result.orphans.count) orphan blobs (mumu styles gc removes them)") }
                print("\(result.checked) blobs checked, \(result.problems.count) problems")
                if !result.problems.isEmpty { throw ExitCode(1) }
            }
        }
    }

    struct GC: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "gc", abstract: "Remove blobs no style uses, and stale temporary files.")
        @OptionGroup var quiet: QuietOption
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runStyles {
                let (removed, bytes) = try registry.registry().gc()
                if !quiet.quiet { print("removed \(removed) files, \(formatBytes(bytes))") }
            }
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register what an A1111 or ComfyUI models folder holds.")
        @Argument(help: "The models folder (or its Stable-diffusion/, checkpoints/, Lora/ or loras/ folder).") var dir: String
        @Option(help: "A checkpoint LoRAs are checked against and recorded as trained on (a file or a full style); optional.") var base: String?
        @Flag(help: "Copy the files into the registry (default: keep them where they are, by reference).") var copy = false
        @Flag(help: "Replace styles of the same names.") var force = false
        @OptionGroup var quiet: QuietOption
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runStyles {
                let bar = ProgressBar("import", quiet: quiet.quiet)
                let (added, skipped) = try registry.registry().importFolder(dir, base: base, byReference: !copy, replace: force,
                                                                            notes: { bar.finish(); warn($0) }, progress: bar.update)
                bar.finish()
                if !quiet.quiet { for m in added { print("added \(m.name) (\(m.kind.rawValue))") } }
                for s in skipped { warn("skipped \(s)") }
                if !quiet.quiet { print("\(added.count) styles added, \(skipped.count) files skipped") }
            }
        }
    }

    struct Materialize: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a style as a full checkpoint any tool loads.")
        @Argument var name: String
        @Option(name: [.short, .customLong("output")], help: "Output .safetensors file.") var output: String
        @Option(help: "The base file (default: the file recorded when the style was added, if unchanged, or a registered full style).") var base: String?
        @Flag(help: "Overwrite the output.") var force = false
        @Option(help: "Worker threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
        @OptionGroup var quiet: QuietOption
        @OptionGroup var registry: RegistryOptions
        func run() throws {
            try runStyles {
                let bar = ProgressBar("materialize \(name)", quiet: quiet.quiet)
                try registry.registry().materialize(name, base: base, to: output, overwrite: force, threads: max(1, threads),
                                                    notes: { bar.finish(); warn($0) }, progress: bar.update)
                bar.finish()
                if !quiet.quiet { print("wrote \(output)") }
            }
        }
    }
}

extension LoraExtractor.Layers: ExpressibleByArgument {}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }

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
        @Option(help: ArgumentHelp("Which layers: kohya (its LoRANetwork targets) or full (also the UNet's time and label embeddings at --rank and conv_in / conv_out at --conv-rank, as LyCORIS's full preset).",
                                   valueName: "kohya|full"))
        var layers: LoraExtractor.Layers = .kohya
        @Option(help: ArgumentHelp("Clamp the factors to this quantile of their values, as kohya's --clamp_quantile (1: no clamp; a fine-tune trained as a LoRA of at most --rank then comes back whole).",
                                   valueName: "q"))
        var clampQuantile: Float = LoraExtractor.defaultClampQuantile
        @Option(name: [.short, .customLong("output")], help: "Output .safetensors file.") var output: String
        @OptionGroup var out: OutputOptions
        func validate() throws {
            guard rank >= 1, (convRank ?? 0) >= 0 else { throw ValidationError("--rank must be at least 1 and --conv-rank at least 0") }
            guard clampQuantile > 0, clampQuantile <= 1 else {
                throw ValidationError("--clamp-quantile must be above 0 and at most 1 (1: no clamp; got \(clampQuantile))")
            }
        }
        func run() throws {
            try runReportingErrors {
                try OutputPath.check(output, overwrite: out.force)
                let b = try ModelFile.open(base).source, t = try ModelFile.open(tuned).source
                let bar = ProgressBar("extract", quiet: out.quiet)
                let report = try LoraExtractor.extract(base: b, tuned: t, rank: rank, convRank: convRank ?? 0, layers: layers,
                                                       clampQuantile: clampQuantile, to: output,
                                                       threads: max(1, out.threads), overwrite: out.force) { done, total in
                    bar.update(WorkProgress(done: done, total: total, unit: .modules))
                }
                bar.finish()
                if out.quiet { return }
                print("wrote \(output): \(report.modules) modules, rank \(rank), relative error of the kept delta \(String(format: "%.4f", report.relativeError))")
                for note in report.summary { print("note: \(note)") }
            }
        }
    }
}
