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
        public init(sha256: String, name: String) { self.sha256 = sha256; self.name = name }
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

    /// A style name is a slug: letters, digits, '-', '_', '.'; never a path, never hidden, at most 100 characters.
    public static func validName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 100, !name.hasPrefix("."), name != "..", name != "." else { return false }
        return name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
        }
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
        do { return try JSONDecoder().decode(StyleManifest.self, from: data) } catch {
            throw StyleError.corrupt(path, "manifest does not match schema \(schema): \(error)")
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
    case invalid(String)

    public var description: String {
        switch self {
        case .badName(let n):
            return "'\(n)' is not a style name: use letters, digits, '-', '_' and '.', not a path (at most 100 characters)"
        case .exists(let n): return "a style named '\(n)' exists; pass --force to replace it"
        case .notFound(let n, let s):
            return "no style named '\(n)'" + (s.isEmpty ? "" : "; did you mean \(s.map { "'\($0)'" }.joined(separator: ", "))?")
        case .corrupt(let what, let why): return "\(what): \(why)"
        case .newerSchema(let path, let got, let known):
            return "\(path): manifest schema \(got) is newer than this mumu reads (\(known)); update mumu"
        case .baseMismatch(let style, let expected, let got):
            return "style '\(style)' applies to base \(expected.name) (sha256 \(expected.sha256.prefix(12))…), not to this one (sha256 \(got.prefix(12))…)"
        case .invalid(let why): return why
        }
    }
}
