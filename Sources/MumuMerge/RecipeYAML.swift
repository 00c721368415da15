import Yams

/// Reading recipe YAML in time and memory linear in the text: keys checked before Yams composes,
/// values read once per anchor.
enum YAMLKeyScan {
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
