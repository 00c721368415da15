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

    /// The most expressions a merge may have written out without its aliases (shared sub-expressions
    /// counted each time they are used): the output's metadata records the recipe that way. Reading and
    /// checking a recipe never expands it, so this bounds only what a merge writes.
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
    /// node of `RecipeGraph`; expanding the recipe (the copy recorded in an output's metadata) is capped
    /// by `Recipe.maximumExpandedSize`.
    public static func parse(_ text: String, origin: String, directory: String) throws -> Recipe {
        // Nodes refer to their anchors weakly and the parser owns them: keep it alive while reading.
        try checkKeysArePlain(text, origin: origin)
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

    /// Refuses, before Yams composes the document, mapping keys that are not plain text: an alias
    /// (`*x: ...`), a complex key (`? ...`) or a collection (`[a]: ...`). A recipe never needs one, and
    /// Yams hashes every key of a mapping to find duplicates, which would expand an alias used as a key
    /// (a billion laughs in the key position). A lexical scan (quotes and comments skipped): text that
    /// only looks like such a key inside a block scalar is refused too.
    static func checkKeysArePlain(_ text: String, origin: String) throws {
        let b = Array(text.utf8)
        var i = 0, line = 1
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }
        func isTokenStart(_ at: Int) -> Bool {
            guard at > 0 else { return true }
            let p = b[at - 1]
            return isSpace(p) || p == UInt8(ascii: "[") || p == UInt8(ascii: "{") || p == UInt8(ascii: ",")
        }
        /// Whether a ':' that makes what precedes it a key follows (after blanks) at `j`.
        func keyColon(_ j: Int) -> Bool {
            var j = j
            while j < b.count, b[j] == 0x20 || b[j] == 0x09 { j += 1 }
            guard j < b.count, b[j] == UInt8(ascii: ":") else { return false }
            return j + 1 == b.count || isSpace(b[j + 1]) || b[j + 1] == UInt8(ascii: ",") || b[j + 1] == UInt8(ascii: "]")
                || b[j + 1] == UInt8(ascii: "}")
        }
        func refuse(_ what: String) -> MergeError {
            MergeError.recipe(origin, "line \(line): \(what) used as a mapping key; recipe keys are plain names")
        }
        while i < b.count {
            let c = b[i]
            switch c {
            case 0x0A:
                line += 1
            case UInt8(ascii: "#") where isTokenStart(i):
                while i < b.count, b[i] != 0x0A { i += 1 }
                continue
            case UInt8(ascii: "'") where isTokenStart(i) || (i > 0 && b[i - 1] == UInt8(ascii: ":")):
                i += 1
                while i < b.count {
                    if b[i] == 0x0A { line += 1 }
                    if b[i] == UInt8(ascii: "'") {
                        if i + 1 < b.count, b[i + 1] == UInt8(ascii: "'") { i += 2; continue }
                        break
                    }
                    i += 1
                }
            case UInt8(ascii: "\"") where isTokenStart(i) || (i > 0 && b[i - 1] == UInt8(ascii: ":")):
                i += 1
                while i < b.count, b[i] != UInt8(ascii: "\"") {
                    if b[i] == 0x0A { line += 1 }
                    i += b[i] == UInt8(ascii: "\\") ? 2 : 1
                }
            case UInt8(ascii: "*") where isTokenStart(i):
                // libyaml's anchor names: letters, digits, '_' and '-'.
                var j = i + 1
                while j < b.count, (b[j] >= 0x30 && b[j] <= 0x39) || (b[j] >= 0x41 && b[j] <= 0x5A) || (b[j] >= 0x61 && b[j] <= 0x7A)
                        || b[j] == UInt8(ascii: "_") || b[j] == UInt8(ascii: "-") { j += 1 }
                if keyColon(j) { throw refuse("an alias") }
                i = j
                continue
            case UInt8(ascii: "?") where isTokenStart(i) && (i + 1 == b.count || isSpace(b[i + 1])):
                throw refuse("a complex key ('? ')")
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                if keyColon(i + 1) { throw refuse("a list or mapping") }
            default:
                break
            }
            i += 1
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

/// A YAML value, kept in the order written (mappings are lists of pairs). A value written with an
/// anchor (`&name`) is `.anchor`: the anchor's node and every alias (`*name`) to it are that one
/// object, so reading, checking and building the graph stay linear in the file however often a value
/// is shared (hash-consing by anchor identity), and nothing is expanded unless asked (`json`,
/// `expandedSize`). Code that looks at a value's shape looks through anchors with `resolved`.
public indirect enum RecipeValue: Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case list([RecipeValue])
    case map([(String, RecipeValue)])
    /// A value with a YAML anchor; every alias to it is the same `RecipeAnchor`.
    case anchor(RecipeAnchor)

    /// The value with any anchor looked through.
    public var resolved: RecipeValue {
        var v = self
        while case .anchor(let a) = v { v = a.value }
        return v
    }

    func stringList(origin: String, field: String) throws -> [String] {
        switch resolved {
        case .string(let s): return s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        case .list(let items):
            return try items.map {
                guard case .string(let s) = $0.resolved else { throw MergeError.recipe(origin, "\(field) must be a list of names") }
                return s
            }
        default: throw MergeError.recipe(origin, "\(field) must be a list of names")
        }
    }

    /// How many values the fully expanded tree holds (every alias counted each time it is used),
    /// computed once per anchor and saturating at `Int.max`.
    public var expandedSize: Int {
        var memo: [ObjectIdentifier: Int] = [:]
        func add(_ a: Int, _ b: Int) -> Int { let (sum, overflow) = a.addingReportingOverflow(b); return overflow ? Int.max : sum }
        func size(_ v: RecipeValue) -> Int {
            switch v {
            case .null, .bool, .number, .string: return 1
            case .list(let items): return items.reduce(1) { add($0, size($1)) }
            case .map(let pairs): return pairs.reduce(1) { add($0, size($1.1)) }
            case .anchor(let a):
                if let n = memo[ObjectIdentifier(a)] { return n }
                let n = size(a.value)
                memo[ObjectIdentifier(a)] = n
                return n
            }
        }
        return size(self)
    }

    /// Canonical JSON (keys of mappings sorted, aliases expanded), the form embedded in outputs and
    /// hashed. Check `expandedSize` first where the value may come from a file.
    public var json: JSONValue {
        switch self {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? .int(Int(d)) : .double(d)
        case .string(let s): return .string(s)
        case .list(let l): return .array(l.map(\.json))
        case .map(let m): return .object(m.sorted { $0.0 < $1.0 }.map { ($0.0, $0.1.json) })
        case .anchor(let a): return a.value.json
        }
    }
}

/// A value written once with a YAML anchor and shared by its aliases.
public final class RecipeAnchor: Sendable {
    /// The anchor's name as written (`&name`; names may be reused in a file, identity is the object).
    public let name: String
    public let value: RecipeValue
    public init(name: String, value: RecipeValue) { self.name = name; self.value = value }
}

/// Turns Yams nodes into `RecipeValue`s, once per anchor. Yams composes an alias as a copy of its
/// anchor's node that refers to the same `Anchor` object, which is the identity used here.
struct YAMLReader {
    let origin: String
    private var anchors: [ObjectIdentifier: RecipeValue] = [:]

    init(origin: String) { self.origin = origin }

    mutating func value(_ node: Yams.Node) throws -> RecipeValue {
        guard let anchor = node.anchor else { return try plain(node) }
        if let v = anchors[ObjectIdentifier(anchor)] { return v }
        let v = RecipeValue.anchor(RecipeAnchor(name: anchor.rawValue, value: try plain(node)))
        anchors[ObjectIdentifier(anchor)] = v
        return v
    }

    private mutating func plain(_ node: Yams.Node) throws -> RecipeValue {
        switch node {
        case .scalar(let s):
            if s.style == .plain {
                if let b = Bool.construct(from: s) { return .bool(b) }
                if s.string == "~" || s.string == "null" || s.string.isEmpty { return .null }
                if let i = Int.construct(from: s) { return .number(Double(i)) }
                if let d = Double.construct(from: s) { return .number(d) }
            }
            return .string(s.string)
        case .sequence(let seq):
            var items: [RecipeValue] = []
            items.reserveCapacity(seq.count)
            for item in seq { items.append(try value(item)) }
            return .list(items)
        case .mapping(let m):
            var pairs: [(String, RecipeValue)] = []
            var seen = Set<String>()
            for (k, v) in m {
                guard case .scalar(let ks) = k else { throw MergeError.recipe(origin, "mapping keys must be plain text (line \(k.mark?.line ?? 0))") }
                guard seen.insert(ks.string).inserted else {
                    throw MergeError.recipe(origin, "key '\(ks.string)' appears twice in one mapping (line \(k.mark?.line ?? 0))")
                }
                pairs.append((ks.string, try value(v)))
            }
            return .map(pairs)
        case .alias:
            throw MergeError.recipe(origin, "unresolved YAML alias")
        }
    }
}
