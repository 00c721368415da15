import Foundation
import MumuFormats

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

    /// Canonical JSON (keys of mappings sorted, aliases expanded). Where the value may come from a
    /// file, use `canonical(expandingUpTo:)`, which never writes out more than its limit.
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

extension RecipeValue {
    /// The canonical JSON of a value that may be shared enormously: written out (`json`) when that is
    /// at most `limit` values, else with every anchored list or mapping written once under `anchors`
    /// (names as in the file, `name#2`... where a name is reused) and referred to as `{"*": name}`.
    /// Linear in the file either way.
    public func canonical(expandingUpTo limit: Int) -> (value: JSONValue, anchors: [(String, JSONValue)]) {
        if expandedSize <= limit { return (json, []) }
        var names: [ObjectIdentifier: String] = [:]
        var taken = Set<String>()
        var anchors: [(String, JSONValue)] = []
        func write(_ v: RecipeValue) -> JSONValue {
            switch v {
            case .anchor(let a):
                switch a.value {
                case .list, .map, .anchor: break
                default: return a.value.json
                }
                if let n = names[ObjectIdentifier(a)] { return .object([("*", .string(n))]) }
                var n = a.name, k = 2
                while taken.contains(n) { n = "\(a.name)#\(k)"; k += 1 }
                taken.insert(n)
                names[ObjectIdentifier(a)] = n
                anchors.append((n, write(a.value)))
                return .object([("*", .string(n))])
            case .list(let l): return .array(l.map(write))
            case .map(let m): return .object(m.sorted { $0.0 < $1.0 }.map { ($0.0, write($0.1)) })
            default: return v.json
            }
        }
        let root = write(self)
        return (root, anchors.sorted { $0.0 < $1.0 })
    }
}

/// A value written once with a YAML anchor and shared by its aliases.
public final class RecipeAnchor: Sendable {
    /// The anchor's name as written (`&name`; names may be reused in a file, identity is the object).
    public let name: String
    public let value: RecipeValue
    public init(name: String, value: RecipeValue) { self.name = name; self.value = value }
}
