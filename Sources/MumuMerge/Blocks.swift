import Foundation
import MumuFormats

/// Merge blocks, the names SuperMerger and sd-mecha users set weights by: BASE (text encoders, and
/// MUMU's connector), IN00..IN08 (`input_blocks.N`; `time_embed` and `label_emb` count as IN00, as in
/// SuperMerger), M00 (`middle_block`), OUT00..OUT08 (`output_blocks.N`; the final `out.` layers count as
/// the last OUT block), VAE.
///
/// A tensor's block comes from the descriptor of its model's architecture (the `block` column of
/// formats/*.json, `BlockTable`); `Blocks.block(of:lastOutput:)` is the rule only for tensors no
/// descriptor knows (files of an unknown architecture and family, extra keys).
public enum Blocks {
    /// The fallback rule: the block of an sgm key, or nil for a key outside the known prefixes.
    /// `lastOutput` is the index of the model's last output block (where `out.` goes).
    /// The component comes from the one list of sgm prefixes (`SGMPrefix`): text encoders and the connector are
    /// BASE, the VAE is VAE, the UNet's keys go by their block index.
    public static func block(of key: String, lastOutput: Int = 8) -> String? {
        if key.hasPrefix(SGMPrefix.connector) { return "BASE" }
        guard let (prefix, local) = SGMPrefix.split(key) else { return nil }
        switch prefix.component {
        case .te1, .te2: return "BASE"
        case .vae: return "VAE"
        case .unet: break
        }
        let rest = Substring(local)
        if rest.hasPrefix("time_embed.") || rest.hasPrefix("label_emb.") { return "IN00" }
        if rest.hasPrefix("middle_block.") { return "M00" }
        if rest.hasPrefix("out.") { return String(format: "OUT%02d", lastOutput) }
        for (prefix, name) in [("input_blocks.", "IN"), ("output_blocks.", "OUT")] where rest.hasPrefix(prefix) {
            if let n = index(rest, after: prefix) { return String(format: "%@%02d", name, n) }
        }
        return nil
    }

    /// N in "PREFIXN." at the start of `rest`.
    static func index(_ rest: Substring, after prefix: String) -> Int? {
        guard rest.hasPrefix(prefix) else { return nil }
        return Int(rest.dropFirst(prefix.count).prefix { $0.isNumber })
    }

    /// Blocks in order: BASE, IN00.., M00, OUT00.., VAE (SDXL counts by default).
    public static func all(inputs: Int = 9, outputs: Int = 9) -> [String] {
        ["BASE"] + (0..<inputs).map { String(format: "IN%02d", $0) } + ["M00"]
            + (0..<outputs).map { String(format: "OUT%02d", $0) } + ["VAE"]
    }

    /// Splits a block name into its family and index ("OUT03" -> ("OUT", 3); "BASE" -> ("BASE", 0)).
    static func parse(_ name: String) -> (String, Int)? {
        for family in ["IN", "OUT", "M"] where name.hasPrefix(family) {
            let digits = name.dropFirst(family.count)
            if !digits.isEmpty, digits.allSatisfy(\.isNumber), let n = Int(digits) { return (family, n) }
        }
        if name == "BASE" || name == "VAE" { return (name, 0) }
        return nil
    }
}

/// The merge block of each key of a merge's inputs, from the descriptors (formats/*.json):
/// 1. the descriptors of the inputs' detected architectures (the first listed wins where two know a key);
/// 2. for a key none of them knows (an input of unknown architecture: a pruned or partial file), the
///    descriptors of the inputs' detected families, where every one of them that knows the key agrees
///    (sd1's `out.` is OUT11; SDXL's base and refiner disagree on `out.`, so it falls through);
/// 3. else the rule `Blocks.block(of:lastOutput: 8)`.
public struct BlockTable: Sendable {
    private let known: [String: String]

    public init(architectures: [ArchitectureDescriptor], families: [String] = []) {
        var known: [String: String] = [:]
        for a in architectures {
            for t in a.tensors where known[t.name] == nil { known[t.name] = t.block }
        }
        var family: [String: String] = [:]
        var disputed = Set<String>()
        for a in Architectures.all where families.contains(a.family) {
            for t in a.tensors where known[t.name] == nil {
                if let b = family[t.name], b != t.block { disputed.insert(t.name) } else { family[t.name] = t.block }
            }
        }
        for (name, block) in family where !disputed.contains(name) { known[name] = block }
        self.known = known
    }

    public func block(of key: String) -> String? {
        known[key] ?? Blocks.block(of: key)
    }
}

/// A scalar argument: one number, or a map from blocks, block ranges and key regexes to numbers.
/// Resolution per key: the first `re:` entry whose regex matches the key, else a block or range
/// entry that contains the key's block, else `default`, else the method's default.
public struct ScalarArgument: Sendable, Hashable {
    public enum Selector: Sendable, Hashable {
        case block(String)
        case range(String, Int, Int)
        case regex(String)
    }
    public var constant: Double?
    public var fallback: Double?
    public var entries: [(Selector, Double)]

    public static func == (a: ScalarArgument, b: ScalarArgument) -> Bool {
        a.constant == b.constant && a.fallback == b.fallback && a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }
    public func hash(into h: inout Hasher) {
        h.combine(constant); h.combine(fallback)
        for (s, v) in entries { h.combine(s); h.combine(v) }
    }

    public init(_ value: Double) { constant = value; fallback = nil; entries = [] }

    /// Parses a block map, checking block names and regexes.
    init(map: [(String, RecipeValue)], origin: String, field: String) throws {
        constant = nil
        fallback = nil
        entries = []
        for (k, v) in map {
            guard case .number(let x) = v.resolved else { throw MergeError.recipe(origin, "\(field).\(k) must be a number") }
            if k == "default" { fallback = x; continue }
            if k.hasPrefix("re:") {
                let pattern = String(k.dropFirst(3))
                do { _ = try NSRegularExpression(pattern: pattern) } catch {
                    throw MergeError.recipe(origin, "\(field): '\(pattern)' is not a valid regular expression")
                }
                entries.append((.regex(pattern), x))
                continue
            }
            let parts = k.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
            if parts.count == 2, let (f1, a) = Blocks.parse(parts[0]), let (f2, b) = Blocks.parse(parts[1]), f1 == f2, a <= b, f1 != "BASE", f1 != "VAE" {
                entries.append((.range(f1, a, b), x))
            } else if parts.count == 1, Blocks.parse(k) != nil {
                entries.append((.block(k), x))
            } else {
                throw MergeError.recipe(origin, "\(field): '\(k)' is not a block (BASE, IN00..IN08, M00, OUT00..OUT08, VAE), a range like OUT00-OUT08, 're:REGEX' or 'default'")
            }
        }
    }

    /// The value for a key in a block; nil when nothing applies (the method's default is used).
    public func value(key: String, block: String?, regexes: RegexCache) -> Double? {
        if let constant { return constant }
        for (s, v) in entries {
            if case .regex(let p) = s, regexes.matches(p, key) { return v }
        }
        if let block, let (family, index) = Blocks.parse(block) {
            for (s, v) in entries {
                switch s {
                case .block(let b) where b == block: return v
                case .range(let f, let a, let b) where f == family && index >= a && index <= b: return v
                default: continue
                }
            }
        }
        return fallback
    }

    var json: JSONValue {
        if let constant { return RecipeValue.number(constant).json }
        var members: [(String, JSONValue)] = []
        if let fallback { members.append(("default", RecipeValue.number(fallback).json)) }
        for (s, v) in entries {
            let k: String
            switch s {
            case .block(let b): k = b
            case .range(let f, let a, let b): k = String(format: "%@%02d-%@%02d", f, a, f, b)
            case .regex(let p): k = "re:" + p
            }
            members.append((k, RecipeValue.number(v).json))
        }
        return .object(members)
    }
}

/// Compiled regexes shared by every key of a merge.
public final class RegexCache: @unchecked Sendable {
    private var compiled: [String: NSRegularExpression] = [:]
    private let lock = NSLock()
    public init() {}
    public func matches(_ pattern: String, _ key: String) -> Bool {
        lock.lock()
        var re = compiled[pattern]
        if re == nil {
            re = try? NSRegularExpression(pattern: pattern)   // validated when the recipe was read
            compiled[pattern] = re
        }
        lock.unlock()
        guard let re else { return false }
        return re.firstMatch(in: key, range: NSRange(key.startIndex..., in: key)) != nil
    }
}
