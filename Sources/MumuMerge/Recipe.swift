import Foundation
import MumuFormats
import Yams

/// A merge recipe as written (YAML, docs/merging.md): named input models, one expression, output
/// options. Parsing checks the shape of the document; `MergePlanner` checks it against the inputs.
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
    public static func parse(_ text: String, origin: String, directory: String) throws -> Recipe {
        let node: Yams.Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw MergeError.recipe(origin, "not valid YAML: \(error)")
        }
        guard let node else { throw MergeError.recipe(origin, "the file is empty") }
        let root = try RecipeValue(yaml: node, origin: origin)
        guard case .map(let entries) = root else { throw MergeError.recipe(origin, "the top level must be a mapping (version, models, merge, output)") }
        let known: Set = ["version", "name", "title", "models", "merge", "output", "missing"]
        for (k, _) in entries where !known.contains(k) {
            throw MergeError.recipe(origin, "unknown top-level field '\(k)' (expected: \(known.sorted().joined(separator: ", ")))")
        }
        let dict = Dictionary(entries, uniquingKeysWith: { a, _ in a })
        guard let versionValue = dict["version"] else { throw MergeError.recipe(origin, "field 'version' is missing (write version: 1)") }
        guard case .number(let v) = versionValue, v == Double(Int(v)) else {
            throw MergeError.recipe(origin, "field 'version' must be an integer")
        }
        guard Int(v) <= version else {
            throw MergeError.recipe(origin, "recipe version \(Int(v)) is newer than this mumu reads (\(version)); update mumu")
        }
        guard Int(v) >= 1 else { throw MergeError.recipe(origin, "recipe version \(Int(v)) is not valid (write version: 1)") }

        var models: [(String, String)] = []
        guard case .map(let modelEntries)? = dict["models"], !modelEntries.isEmpty else {
            throw MergeError.recipe(origin, "field 'models' must map names to files (e.g. base: sd_xl_base_1.0.safetensors)")
        }
        for (name, value) in modelEntries {
            guard isValidName(name) else {
                throw MergeError.recipe(origin, "model name '\(name)' must be letters, digits, '_', '-' or '.'")
            }
            guard case .string(let p) = value else { throw MergeError.recipe(origin, "models.\(name) must be a file path") }
            let expanded = (p as NSString).expandingTildeInPath
            let absolute = expanded.hasPrefix("/") ? expanded : URL(fileURLWithPath: directory).appendingPathComponent(expanded).standardized.path
            models.append((name, absolute))
        }
        guard let merge = dict["merge"] else { throw MergeError.recipe(origin, "field 'merge' is missing") }

        var output = OutputOptions()
        if let o = dict["output"] {
            guard case .map(let oe) = o else { throw MergeError.recipe(origin, "field 'output' must be a mapping") }
            for (k, value) in oe {
                switch k {
                case "dtype":
                    guard case .string(let s) = value, ["f16", "bf16", "f32", "keep"].contains(s) else {
                        throw MergeError.recipe(origin, "output.dtype must be f16, bf16, f32 or keep")
                    }
                    output.dtype = s
                case "components", "exclude_components":
                    let list = try value.stringList(origin: origin, field: "output.\(k)")
                    for c in list where !MergePlan.componentNames.contains(c) {
                        throw MergeError.recipe(origin, "output.\(k): unknown component '\(c)' (use \(MergePlan.componentNames.joined(separator: ", ")))")
                    }
                    if k == "components" { output.components = list } else { output.excludeComponents = list }
                default:
                    throw MergeError.recipe(origin, "unknown field output.\(k) (expected dtype, components, exclude_components)")
                }
            }
        }
        var missing: MissingKeyPolicy?
        if let m = dict["missing"] {
            guard case .string(let s) = m, let p = MissingKeyPolicy(rawValue: s) else {
                throw MergeError.recipe(origin, "field 'missing' must be error, keep-first or skip")
            }
            missing = p
        }
        var title: String?
        if case .string(let t)? = dict["title"] ?? dict["name"] { title = t }
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

/// A YAML value, kept in the order written (mappings are lists of pairs). Aliases (`*name`) are
/// resolved by the YAML reader, so a shared sub-expression simply appears twice.
public indirect enum RecipeValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case list([RecipeValue])
    case map([(String, RecipeValue)])

    public static func == (a: RecipeValue, b: RecipeValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.number(let x), .number(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.list(let x), .list(let y)): return x == y
        case (.map(let x), .map(let y)): return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    public func hash(into h: inout Hasher) {
        switch self {
        case .null: h.combine(0)
        case .bool(let b): h.combine(1); h.combine(b)
        case .number(let d): h.combine(2); h.combine(d)
        case .string(let s): h.combine(3); h.combine(s)
        case .list(let l): h.combine(4); h.combine(l)
        case .map(let m): h.combine(5); for (k, v) in m { h.combine(k); h.combine(v) }
        }
    }

    init(yaml node: Yams.Node, origin: String) throws {
        switch node {
        case .scalar(let s):
            if s.style == .plain {
                if let b = Bool.construct(from: s) { self = .bool(b); return }
                if s.string == "~" || s.string == "null" || s.string.isEmpty { self = .null; return }
                if let i = Int.construct(from: s) { self = .number(Double(i)); return }
                if let d = Double.construct(from: s) { self = .number(d); return }
            }
            self = .string(s.string)
        case .sequence(let seq):
            self = .list(try seq.map { try RecipeValue(yaml: $0, origin: origin) })
        case .mapping(let m):
            var pairs: [(String, RecipeValue)] = []
            var seen = Set<String>()
            for (k, v) in m {
                guard case .scalar(let ks) = k else { throw MergeError.recipe(origin, "mapping keys must be plain text (line \(k.mark?.line ?? 0))") }
                guard seen.insert(ks.string).inserted else {
                    throw MergeError.recipe(origin, "key '\(ks.string)' appears twice in one mapping (line \(k.mark?.line ?? 0))")
                }
                pairs.append((ks.string, try RecipeValue(yaml: v, origin: origin)))
            }
            self = .map(pairs)
        case .alias:
            throw MergeError.recipe(origin, "unresolved YAML alias")
        }
    }

    func stringList(origin: String, field: String) throws -> [String] {
        switch self {
        case .string(let s): return s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        case .list(let items):
            return try items.map {
                guard case .string(let s) = $0 else { throw MergeError.recipe(origin, "\(field) must be a list of names") }
                return s
            }
        default: throw MergeError.recipe(origin, "\(field) must be a list of names")
        }
    }

    /// Canonical JSON (keys of mappings sorted), the form embedded in outputs and hashed.
    public var json: JSONValue {
        switch self {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? .int(Int(d)) : .double(d)
        case .string(let s): return .string(s)
        case .list(let l): return .array(l.map(\.json))
        case .map(let m): return .object(m.sorted { $0.0 < $1.0 }.map { ($0.0, $0.1.json) })
        }
    }
}
