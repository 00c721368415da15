import Foundation
import MumuFormats
import Yams

/// A merge recipe as written (YAML, docs/merging.md): named input models, one expression, output
/// options. Parsing checks the shape of the document, `RecipeGraph` the expression, `MergePlan` the
/// recipe against its inputs.
public struct Recipe: Sendable {
    /// Where the recipe came from (for messages), and the folder model paths are relative to.
    public var origin: String
    public var directory: String
    public var title: String?
    /// Input models in the order written: name -> path (absolute after parsing).
    public var models: [(name: String, path: String)]
    public var merge: RecipeValue
    public var output: OutputOptions
    public var missing: MissingKeyPolicy?

    public struct OutputOptions: Sendable {
        /// nil = keep each tensor's input dtype.
        public var dtype: String = "f16"
        public var components: [String]?
        public var excludeComponents: [String] = []
        public init() {}
    }

    public init(origin: String, directory: String, title: String? = nil, models: [(name: String, path: String)],
                merge: RecipeValue, output: OutputOptions = OutputOptions(), missing: MissingKeyPolicy? = nil) {
        self.origin = origin; self.directory = directory; self.title = title
        self.models = models; self.merge = merge; self.output = output; self.missing = missing
    }

    public static let version = 1

    /// The most values the canonical recipe in an output's metadata writes out without its aliases;
    /// beyond, shared parts are written once (`RecipeValue.canonical(expandingUpTo:)`). Reading,
    /// checking and merging never expand a recipe.
    public static let maximumExpandedSize = 100_000

    /// Reads a recipe file.
    public static func load(path: String) throws -> Recipe {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MergeError.recipe(path, "cannot read the file")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw MergeError.recipe(path, "not UTF-8 text") }
        let dir = (URL(fileURLWithPath: path).deletingLastPathComponent().path)
        return try parse(text, origin: path, directory: dir)
    }

    /// Parses recipe text; model paths are taken relative to `directory`.
    ///
    /// Work and memory are linear in the text, whatever its aliases: the document is composed by Yams
    /// (an alias is a copy of its anchor's node, sharing storage), unknown top-level fields are refused
    /// before any value is read, and values are read once per anchor (`RecipeValue.anchor` keeps the
    /// sharing), so a "billion laughs" document is never expanded here. A shared sub-expression is one
    /// node of `RecipeGraph`, and the copy an output's metadata records writes shared parts once when
    /// written out they would exceed `Recipe.maximumExpandedSize` values.
    public static func parse(_ text: String, origin: String, directory: String) throws -> Recipe {
        try YAMLKeyScan.checkKeysArePlain(text, origin: origin)
        // Nodes refer to their anchors weakly and the parser owns them: keep it alive while reading.
        let parser: Yams.Parser
        let node: Yams.Node?
        do {
            parser = try Yams.Parser(yaml: text)
            node = try parser.singleRoot()
        } catch {
            throw MergeError.recipe(origin, "not valid YAML: \(error)")
        }
        return try withExtendedLifetime(parser) {
            guard let node else { throw MergeError.recipe(origin, "the file is empty") }
            return try parse(document: node, origin: origin, directory: directory)
        }
    }

    /// The top-level fields a recipe may have.
    public static let fields = ["version", "name", "title", "models", "merge", "output", "missing"]

    private static func parse(document node: Yams.Node, origin: String, directory: String) throws -> Recipe {
        guard case .mapping(let top) = node else {
            throw MergeError.recipe(origin, "the top level must be a mapping (version, models, merge, output)")
        }
        // Field names first, reading no value: an unknown field (where a YAML file would keep its anchors)
        // is refused before anything under it is looked at.
        for (k, _) in top {
            guard case .scalar(let ks) = k else {
                throw MergeError.recipe(origin, "top-level keys must be plain text (line \(k.mark?.line ?? 0))")
            }
            guard fields.contains(ks.string) else {
                throw MergeError.unknownName(origin: origin, at: "", kind: "top-level field", name: ks.string, valid: fields.sorted())
            }
        }
        var reader = YAMLReader(origin: origin)
        var dict: [String: RecipeValue] = [:]
        for (k, v) in top {
            let name = k.string ?? ""
            guard dict[name] == nil else {
                throw MergeError.recipe(origin, "key '\(name)' appears twice in one mapping (line \(k.mark?.line ?? 0))")
            }
            dict[name] = try reader.value(v)
        }
        guard let versionValue = dict["version"]?.resolved else { throw MergeError.recipe(origin, "field 'version' is missing (write version: 1)") }
        guard case .number(let v) = versionValue, v == Double(Int(v)) else {
            throw MergeError.recipe(origin, "field 'version' must be an integer")
        }
        guard Int(v) <= version else {
            throw MergeError.recipe(origin, "recipe version \(Int(v)) is newer than this mumu reads (\(version)); update mumu")
        }
        guard Int(v) >= 1 else { throw MergeError.recipe(origin, "recipe version \(Int(v)) is not valid (write version: 1)") }

        var models: [(String, String)] = []
        guard case .map(let modelEntries)? = dict["models"]?.resolved, !modelEntries.isEmpty else {
            throw MergeError.recipe(origin, "field 'models' must map names to files (e.g. base: sd_xl_base_1.0.safetensors)")
        }
        for (name, value) in modelEntries {
            guard isValidName(name) else {
                throw MergeError.recipe(origin, "model name '\(name)' must be letters, digits, '_', '-' or '.'")
            }
            guard case .string(let p) = value.resolved else { throw MergeError.recipe(origin, "models.\(name) must be a file path") }
            let expanded = (p as NSString).expandingTildeInPath
            let absolute = expanded.hasPrefix("/") ? expanded : URL(fileURLWithPath: directory).appendingPathComponent(expanded).standardized.path
            models.append((name, absolute))
        }
        guard let merge = dict["merge"] else { throw MergeError.recipe(origin, "field 'merge' is missing") }

        var output = OutputOptions()
        if let o = dict["output"] {
            guard case .map(let oe) = o.resolved else { throw MergeError.recipe(origin, "field 'output' must be a mapping") }
            for (k, value) in oe {
                switch k {
                case "dtype":
                    guard case .string(let s) = value.resolved, ["f16", "bf16", "f32", "keep"].contains(s) else {
                        throw MergeError.recipe(origin, "output.dtype must be f16, bf16, f32 or keep")
                    }
                    output.dtype = s
                case "components", "exclude_components":
                    let list = try value.stringList(origin: origin, field: "output.\(k)")
                    for c in list where !MergePlan.componentNames.contains(c) {
                        throw MergeError.unknownName(origin: origin, at: "output.\(k)", kind: "component", name: c, valid: MergePlan.componentNames)
                    }
                    if k == "components" { output.components = list } else { output.excludeComponents = list }
                default:
                    throw MergeError.unknownName(origin: origin, at: "output", kind: "field", name: k,
                                                 valid: ["dtype", "components", "exclude_components"])
                }
            }
        }
        var missing: MissingKeyPolicy?
        if let m = dict["missing"] {
            guard case .string(let s) = m.resolved, let p = MissingKeyPolicy(rawValue: s) else {
                throw MergeError.recipe(origin, "field 'missing' must be error, keep-first or skip")
            }
            missing = p
        }
        var title: String?
        for field in ["name", "title"] {
            guard let v = dict[field]?.resolved else { continue }
            guard case .string(let t) = v else { throw MergeError.recipe(origin, "field '\(field)' must be text (quote it: \(field): \"...\")") }
            if title == nil || field == "title" { title = t }
        }
        return Recipe(origin: origin, directory: directory, title: title, models: models, merge: merge, output: output, missing: missing)
    }

    static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2D || c == 0x2E
        }
    }
}

/// What to do with a key that some inputs lack.
public enum MissingKeyPolicy: String, Sendable, CaseIterable {
    /// Refuse the merge, naming the keys and the inputs that lack them.
    case error
    /// Copy the key, unmerged, from the first input (in `models:` order) that has it.
    case keepFirst = "keep-first"
    /// Leave the key out of the output.
    case skip
}
