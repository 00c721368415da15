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
