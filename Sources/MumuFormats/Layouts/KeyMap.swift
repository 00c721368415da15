/// One step of a conversion: the target tensors `targets` are made from the source tensors `sources`
/// by `transform`. Most mappings are renames (one source, one target, `.identity`).
public struct Mapping: Hashable, Sendable, CustomStringConvertible {
    public var sources: [String]
    public var targets: [String]
    public var transform: TensorTransform

    public init(sources: [String], targets: [String], transform: TensorTransform = .identity) {
        self.sources = sources; self.targets = targets; self.transform = transform
    }

    /// A one-to-one mapping.
    public static func rename(_ source: String, _ target: String, _ transform: TensorTransform = .identity) -> Mapping {
        Mapping(sources: [source], targets: [target], transform: transform)
    }

    /// The same mapping with `prefix` put before its source names and `targetPrefix` before its targets.
    func prefixed(sources prefix: String, targets targetPrefix: String) -> Mapping {
        Mapping(sources: sources.map { prefix + $0 }, targets: targets.map { targetPrefix + $0 }, transform: transform)
    }

    public var description: String {
        let s = sources.joined(separator: " + "), t = targets.joined(separator: " + ")
        return transform == .identity ? "\(s) -> \(t)" : "\(s) -> \(t) (\(transform))"
    }
}

/// The sgm <-> diffusers name map of one component, over names inside the component (no file prefix:
/// `input_blocks.4.1.proj_in.weight`, not `model.diffusion_model.input_blocks.…`). Pure functions of names.
public protocol ComponentKeyMap: Sendable {
    /// The mapping that produces the diffusers tensor(s) from the sgm tensor `name`; nil when the name
    /// has no diffusers counterpart. The mapping's sources include `name` (and its group, for fused tensors).
    func toDiffusers(_ name: String) -> Mapping?
    /// The mapping that produces the sgm tensor(s) from the diffusers tensor `name`; nil when it has no
    /// sgm counterpart. Accepts the spellings diffusers folders use in the wild (see `canonicalDiffusers`).
    func toSGM(_ name: String) -> Mapping?
    /// The spelling of a diffusers name this map produces (`encoder.…` -> `text_model.encoder.…` for CLIP).
    func canonicalDiffusers(_ name: String) -> String
}

extension ComponentKeyMap {
    public func canonicalDiffusers(_ name: String) -> String { name }

    /// The mapping for `name` in the direction `from` -> the other layout.
    func mapping(_ name: String, from layout: Layout) -> Mapping? {
        layout == .sgm ? toDiffusers(name) : toSGM(name)
    }
}

/// A two-way table of renames between sgm and diffusers names: exact names, and module-path prefixes
/// whose remainder carries over unchanged (`input_blocks.4.1.` <-> `down_blocks.1.attentions.0.`).
/// Lookup takes an exact entry first, else the longest matching prefix that ends at a dot.
struct RenameTable: Sendable {
    private struct Entry: Sendable {
        var target: String
        var transform: TensorTransform
    }
    private var sgmExact: [String: Entry] = [:]
    private var sgmPrefix: [String: Entry] = [:]
    private var diffusersExact: [String: Entry] = [:]
    private var diffusersPrefix: [String: Entry] = [:]

    /// `sgm.rest` <-> `diffusers.rest` for any `rest` (module paths, no trailing dot).
    mutating func prefix(_ sgm: String, _ diffusers: String) {
        sgmPrefix[sgm + "."] = Entry(target: diffusers + ".", transform: .identity)
        diffusersPrefix[diffusers + "."] = Entry(target: sgm + ".", transform: .identity)
    }

    /// `sgm` <-> `diffusers` exactly, `transform` going sgm -> diffusers (its inverse the other way).
    mutating func exact(_ sgm: String, _ diffusers: String, _ transform: TensorTransform = .identity) {
        sgmExact[sgm] = Entry(target: diffusers, transform: transform)
        diffusersExact[diffusers] = Entry(target: sgm, transform: transform.inverse)
    }

    /// A diffusers spelling read but never written (old diffusers names), exact.
    mutating func diffusersAlias(_ diffusers: String, _ sgm: String, _ transform: TensorTransform = .identity) {
        diffusersExact[diffusers] = Entry(target: sgm, transform: transform)
    }

    func toDiffusers(_ name: String) -> Mapping? { Self.lookup(name, exact: sgmExact, prefixes: sgmPrefix) }
    func toSGM(_ name: String) -> Mapping? { Self.lookup(name, exact: diffusersExact, prefixes: diffusersPrefix) }

    private static func lookup(_ name: String, exact: [String: Entry], prefixes: [String: Entry]) -> Mapping? {
        if let e = exact[name] { return .rename(name, e.target, e.transform) }
        var end = name.endIndex
        while let dot = name[..<end].lastIndex(of: ".") {
            let head = name[...dot]
            if let e = prefixes[String(head)] {
                return .rename(name, e.target + name[name.index(after: dot)...], e.transform)
            }
            end = dot
        }
        return nil
    }
}

/// Helpers for names with numbered parts (`down_blocks.1.resnets.0.…`).
enum NameParts {
    /// Splits `prefix` + `N` + (`.` + rest or end) into (N, rest); rest is "" at the end of the name.
    static func indexAndRest(after prefix: String, in name: String) -> (index: Int, rest: String)? {
        guard name.hasPrefix(prefix) else { return nil }
        let tail = name.dropFirst(prefix.count)
        let digits = tail.prefix(while: { $0.isASCII && $0.isNumber })
        guard !digits.isEmpty, let n = Int(digits) else { return nil }
        let after = tail.dropFirst(digits.count)
        if after.isEmpty { return (n, "") }
        guard after.first == "." else { return nil }
        return (n, String(after.dropFirst()))
    }

    /// The integer right after `prefix` (`index(after: "down_blocks.", in: "down_blocks.2.x")` = 2).
    static func index(after prefix: String, in name: String) -> Int? {
        indexAndRest(after: prefix, in: name)?.index
    }
}
