import Foundation

/// What a registered style is (docs/styles.md has the JSON schema). Stored as
/// `styles/<name>.json` in the registry; the bytes it needs live in content-addressed blobs.
public struct StyleManifest: Codable, Sendable, Equatable {
    /// The schema this mumu writes; a manifest of a newer schema is refused, not misread.
    public static let currentSchema = 1

    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// A whole checkpoint.
        case full
        /// The difference to a base: lossless (XOR of the bits, zstd) or low-rank (a LoRA-format blob).
        case delta
        /// A low-rank patch applied at a strength.
        case lora
        /// A merge recipe, evaluated on first use and cached as a blob.
        case recipe
    }

    /// The decoder a delta, LoRA or recipe style applies to.
    public struct Base: Codable, Sendable, Equatable {
        public var sha256: String
        public var name: String
        /// Where the base file was when the style was added (absolute), when it was given as a file; used when the
        /// base is not given again and the file there still has `sha256`. Absent in manifests written before it.
        public var path: String?
        public init(sha256: String, name: String, path: String? = nil) { self.sha256 = sha256; self.name = name; self.path = path }
    }

    /// A blob the style uses, and what it holds.
    public struct Blob: Codable, Sendable, Equatable {
        /// weights (a checkpoint) | delta | lora | recipe | preview | cache (a recipe's evaluated result)
        public var role: String
        public var sha256: String
        public var size: Int
        /// safetensors | mumu-xor-delta | yaml | png
        public var format: String
        /// For styles imported by reference: the file the bytes stay in, instead of a blob.
        public var reference: String?
        public init(role: String, sha256: String, size: Int, format: String, reference: String? = nil) {
            self.role = role; self.sha256 = sha256; self.size = size; self.format = format; self.reference = reference
        }
    }

    /// A file the style was made from.
    public struct Source: Codable, Sendable, Equatable {
        public var path: String
        public var sha256: String?
        public init(path: String, sha256: String?) { self.path = path; self.sha256 = sha256 }
    }

    public var schema: Int = StyleManifest.currentSchema
    public var name: String
    public var title: String
    public var kind: Kind
    public var architecture: String?
    public var base: Base?
    public var strength: Double
    public var trigger: String?
    public var description: String?
    public var tags: [String]
    /// ISO-8601.
    public var created: String
    public var sources: [Source]
    /// The recipe text, for recipe styles and styles made by a merge.
    public var recipe: String?
    /// Lossy delta styles: the rank kept.
    public var rank: Int?
    public var blobs: [Blob]

    public init(name: String, title: String, kind: Kind, architecture: String?, base: Base?, strength: Double = 1,
                trigger: String? = nil, description: String? = nil, tags: [String] = [], created: String,
                sources: [Source] = [], recipe: String? = nil, rank: Int? = nil, blobs: [Blob] = []) {
        self.name = name; self.title = title; self.kind = kind; self.architecture = architecture; self.base = base
        self.strength = strength; self.trigger = trigger; self.description = description; self.tags = tags
        self.created = created; self.sources = sources; self.recipe = recipe; self.rank = rank; self.blobs = blobs
    }

    /// Bytes on disk of the style's own blobs (referenced files not counted), written when registered.
    public var size: Int?

    /// `size`, or the sum of the blobs for a manifest not yet registered.
    public var bytesOnDisk: Int { size ?? blobs.filter { $0.reference == nil }.reduce(0) { $0 + $1.size } }

    public func blob(_ role: String) -> Blob? { blobs.first { $0.role == role } }

    /// Whether the style is a difference to one exact base file (a lossless delta): LoRA and low-rank styles
    /// apply to any checkpoint of their architecture, and `base` then names what they were trained on.
    public var needsExactBase: Bool { kind == .delta && blob("lora") == nil }

    /// Characters a style name never holds: path separators, ':' (`--style NAME:STRENGTH`), and what file names on
    /// common file systems cannot hold (`* ? " < > |`). Whitespace and control characters are refused as well.
    static let forbidden: Set<Unicode.Scalar> = ["/", "\\", ":", "*", "?", "\"", "<", ">", "|"]

    static func allowed(_ c: Unicode.Scalar) -> Bool {
        !forbidden.contains(c) && !c.properties.isWhitespace && c.properties.generalCategory != .control
            && c.properties.generalCategory != .format && c.properties.generalCategory != .unassigned
            && c.properties.generalCategory != .surrogate && c.properties.generalCategory != .privateUse
    }

    /// The one name rule, for `styles add` and `styles import` alike: letters and digits of any script and
    /// punctuation, but no whitespace, control characters, path separators, ':' or `* ? " < > |`; not starting
    /// with '.' or '-'; at most 100 characters (and 200 bytes of UTF-8, so `NAME.json` fits any file system).
    /// Names are compared in Unicode NFC (`normalizedName`), as typed on Linux and as macOS stores them alike.
    public static func validName(_ name: String) -> Bool {
        guard !name.isEmpty, name.count <= 100, name.utf8.count <= 200, !name.hasPrefix("."), !name.hasPrefix("-") else { return false }
        return name.unicodeScalars.allSatisfy(allowed)
    }

    /// `name` in Unicode NFC.
    public static func normalizedName(_ name: String) -> String { name.precomposedStringWithCanonicalMapping }

    /// Any text (a file name) turned into a valid name: whitespace becomes '-', what the rule refuses is dropped,
    /// letters of every script are kept (`ünïcode lora` -> `ünïcode-lora`). Nil when nothing is left.
    public static func name(from text: String) -> String? {
        var out = ""
        for c in normalizedName(text).unicodeScalars {
            if c.properties.isWhitespace { if !out.hasSuffix("-") { out += "-" } }
            else if allowed(c) { out.unicodeScalars.append(c) }
        }
        while out.hasPrefix(".") || out.hasPrefix("-") { out.removeFirst() }
        while out.hasSuffix("-") { out.removeLast() }
        var clipped = ""
        for ch in out {
            if clipped.count >= 100 || clipped.utf8.count + String(ch).utf8.count > 200 { break }
            clipped.append(ch)
        }
        return clipped.isEmpty || !validName(clipped) ? nil : clipped
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    public func encoded() throws -> Data { try StyleManifest.encoder.encode(self) }

    /// Decodes a manifest, refusing newer schemas by name.
    public static func decode(_ data: Data, path: String) throws -> StyleManifest {
        struct Probe: Decodable { var schema: Int? }
        let probe: Probe
        do { probe = try JSONDecoder().decode(Probe.self, from: data) } catch {
            throw StyleError.corrupt(path, "not a style manifest (\(error.localizedDescription))")
        }
        guard let schema = probe.schema else { throw StyleError.corrupt(path, "no schema field") }
        guard schema <= currentSchema else {
            throw StyleError.newerSchema(path, schema, currentSchema)
        }
        do { return try JSONDecoder().decode(StyleManifest.self, from: data) } catch let e as DecodingError {
            throw StyleError.corrupt(path, describe(e))
        } catch {
            throw StyleError.corrupt(path, "manifest does not match schema \(schema): \(error)")
        }
    }

    /// "field 'base.sha256': missing" for a decoding error.
    static func describe(_ error: DecodingError) -> String {
        func field(_ path: [CodingKey], _ last: CodingKey? = nil) -> String {
            let parts = (path + (last.map { [$0] } ?? [])).map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            let joined = parts.reduce("") { $0.isEmpty || $1.hasPrefix("[") ? $0 + $1 : $0 + "." + $1 }
            return joined.isEmpty ? "the manifest" : "field '\(joined)'"
        }
        switch error {
        case .keyNotFound(let key, let ctx): return "\(field(ctx.codingPath, key)): missing"
        case .valueNotFound(_, let ctx): return "\(field(ctx.codingPath)): null where a value is needed"
        case .typeMismatch(let type, let ctx): return "\(field(ctx.codingPath)): not a \(type == String.self ? "string" : "\(type)")"
        case .dataCorrupted(let ctx): return "\(field(ctx.codingPath)): \(ctx.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

/// What can go wrong with styles; every message names the style, file or hash concerned.
public enum StyleError: Error, CustomStringConvertible, Equatable {
    case badName(String)
    case exists(String)
    case notFound(String, suggestions: [String])
    case corrupt(String, String)
    case newerSchema(String, Int, Int)
    case baseMismatch(style: String, expected: StyleManifest.Base, got: String)
    /// A style's recorded base file is no longer where it was, or no longer holds the same bytes.
    case baseUnavailable(style: String, base: String, path: String?, reason: String)
    /// An option that means nothing for the kind of style being added (e.g. a rank for a LoRA).
    case optionNotForKind(option: String, kind: StyleManifest.Kind, why: String)
    /// `styles import` of a folder that is missing or holds no model files.
    case nothingToImport(String, reason: String)
    /// A kind of style that needs a base (delta, recipe) was given none.
    case needsBase(StyleManifest.Kind)
    case invalid(String)

    public var description: String {
        switch self {
        case .badName(let n):
            return "'\(n)' is not a style name: use letters and digits (any script) and punctuation, without spaces, '/', '\\', ':', "
                + "'*', '?', '\"', '<', '>' or '|', not starting with '.' or '-' (at most 100 characters)"
        case .exists(let n): return "a style named '\(n)' exists (replace it to overwrite)"
        case .notFound(let n, let s):
            return "no style named '\(n)'" + (s.isEmpty ? "" : "; did you mean \(s.map { "'\($0)'" }.joined(separator: ", "))?")
        case .corrupt(let what, let why): return "\(what): \(why)"
        case .newerSchema(let path, let got, let known):
            return "\(path): manifest schema \(got) is newer than this mumu reads (\(known)); update mumu"
        case .baseMismatch(let style, let expected, let got):
            return "style '\(style)' applies to base \(expected.name) (sha256 \(expected.sha256.prefix(12))…), not to this one (sha256 \(got.prefix(12))…)"
        case .baseUnavailable(let style, let base, let path, let reason):
            return "style '\(style)': base \(base)" + (path.map { " was at \($0), now \(reason)" } ?? " \(reason)") + ": give the base file"
        case .optionNotForKind(let option, let kind, let why): return "\(option) does nothing for a \(kind.rawValue) style (\(why))"
        case .nothingToImport(let dir, let reason): return "\(dir): nothing to import: \(reason)"
        case .needsBase(let kind):
            return "a \(kind.rawValue) style needs a base (the checkpoint it " + (kind == .recipe ? "is used with)" : "is a difference to)")
        case .invalid(let why): return why
        }
    }
}
