import Foundation
import MumuFormats

/// A Hugging Face `tokenizer.json` of the sentencepiece-style BPE kind (Mistral, Llama; Idefics2's is Mistral
/// v1's plus three added tokens), encoding to the ids `PreTrainedTokenizerFast(tokenizer_file=...)` gives.
///
/// Implemented components, each as the `tokenizers` crate defines it; any other type is refused:
/// - `added_tokens`: split out of the raw text first, leftmost match, longest at a position (tokenizers'
///   Aho-Corasick LeftmostLongest); each remaining piece is encoded on its own.
/// - `normalizer`: null, `Prepend`, `Replace` (string pattern), or a `Sequence` of those (the older Llama form,
///   applied to each piece).
/// - `pre_tokenizer`: null or `Metaspace` (spaces replaced by the replacement, `prepend_scheme` always / first
///   (only the piece that starts the text) / never, a prefix added only when the piece does not already start
///   with the replacement; `split` true cuts before each replacement character).
/// - `model`: `BPE` with `byte_fallback` (`<0xNN>` tokens for each UTF-8 byte of a character not in the vocabulary),
///   merges as `"a b"` strings or `["a", "b"]` pairs, applied lowest rank first, leftmost first on ties;
///   `ignore_merges`; no dropout, no subword prefix or suffix.
/// - `post_processor`: null or `TemplateProcessing` (the `single` template: special tokens and sequence A).
/// - `decoder`: checked to be of a known type, otherwise unused (this type only encodes).
/// Loading is bounded: the file at most 64 MiB, the JSON parsed by MumuFormats' strict parser, at most 1 Mi
/// vocabulary entries and 4 Mi merges, ids in 0..<2^24.
public final class SentencePieceBPETokenizer: @unchecked Sendable {
    public static let maxFileBytes = 64 << 20

    public let path: String
    /// Token string -> id, vocabulary and added tokens.
    public let vocab: [String: Int]
    /// Added tokens (content, id) in file order.
    public let addedTokens: [(content: String, id: Int)]
    /// `<s>` or whatever the post-processor's template puts first (nil when there is no post-processor).
    public let prefixIds: [Int]
    public let suffixIds: [Int]
    /// The Idefics2 tokens, looked up by content.
    public let imageTokenId: Int
    public let fakeImageTokenId: Int
    public let endOfUtteranceId: Int?
    public let bosId: Int?

    enum NormalizerStep { case prepend(String), replace(String, String) }
    enum PrependScheme { case always, first, never }
    struct Metaspace { var replacement: String; var scheme: PrependScheme; var split: Bool }

    let normalizer: [NormalizerStep]
    let metaspace: Metaspace?
    let byteFallback: Bool
    let ignoreMerges: Bool
    let unkId: Int?
    /// (left id << 32 | right id) -> (rank, merged id).
    let merges: [UInt64: (rank: Int32, id: Int32)]
    let byteIds: [Int]?               // <0x00>...<0xFF>
    /// Added tokens by first UTF-8 byte, longest first.
    let addedByByte: [UInt8: [(bytes: [UInt8], id: Int)]]
    let addedNormalizedMatchesRaw: Bool

    public convenience init(path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw TokenizerError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw TokenizerError.unreadable(path: path, reason: "not a regular file") }
        guard Int(st.st_size) <= Self.maxFileBytes else {
            throw TokenizerError.unreadable(path: path, reason: "\(st.st_size) bytes, over the \(Self.maxFileBytes)-byte limit")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenizerError.unreadable(path: path, reason: "cannot read the file")
        }
        try self.init(json: [UInt8](data), path: path)
    }

    public init(json bytes: [UInt8], path: String) throws {
        self.path = path
        guard bytes.count <= Self.maxFileBytes else {
            throw TokenizerError.unreadable(path: path, reason: "over the \(Self.maxFileBytes)-byte limit")
        }
        let root: JSONValue
        do {
            root = try bytes.withUnsafeBytes { try JSONParser.parse($0, maxDepth: 32) }
        } catch {
            throw TokenizerError.invalidJSON(path: path, reason: "\(error)")
        }
        guard root.objectValue != nil else { throw TokenizerError.invalidField(path: path, field: "the top level", reason: "is not an object") }
        func fail(_ field: String, _ reason: String) -> TokenizerError { .invalidField(path: path, field: field, reason: reason) }
        func typeOf(_ v: JSONValue, _ field: String) throws -> String {
            guard let t = v["type"]?.stringValue else { throw fail(field, "has no string \"type\"") }
            return t
        }
        func checkId(_ v: JSONValue?, _ field: String) throws -> Int {
            guard let i = v?.intValue, i >= 0, i < 1 << 24 else { throw fail(field, "is not an id in 0..<2^24") }
            return i
        }

        // Model.
        guard let model = root["model"], model.objectValue != nil else { throw TokenizerError.missingField(path: path, field: "model") }
        let modelType = try typeOf(model, "model")
        guard modelType == "BPE" else { throw TokenizerError.unsupported(path: path, field: "model", type: modelType) }
        if let d = model["dropout"], d != .null { throw fail("model.dropout", "must be null (BPE dropout is random)") }
        for f in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = model[f], v != .null, v != .string("") { throw fail("model.\(f)", "must be null (not a sentencepiece-style BPE)") }
        }
        if let v = model["byte_fallback"], v != .null, v != .bool(true), v != .bool(false) { throw fail("model.byte_fallback", "is not a boolean") }
        byteFallback = model["byte_fallback"] == .bool(true)
        ignoreMerges = model["ignore_merges"] == .bool(true)
        guard let vocabObject = model["vocab"]?.objectValue else { throw TokenizerError.missingField(path: path, field: "model.vocab") }
        guard vocabObject.count <= 1 << 20 else { throw fail("model.vocab", "has over 2^20 entries") }
        var vocab = [String: Int](minimumCapacity: vocabObject.count + 16)
        for (token, value) in vocabObject {
            let id = try checkId(value, "model.vocab[\(token.debugDescription)]")
            if vocab.updateValue(id, forKey: token) != nil { throw fail("model.vocab", "has \(token.debugDescription) twice") }
        }
        if let unk = model["unk_token"], unk != .null {
            guard let s = unk.stringValue, let id = vocab[s] else { throw fail("model.unk_token", "is not a token of the vocabulary") }
            unkId = id
        } else {
            unkId = nil
        }
        guard let mergeList = model["merges"]?.arrayValue else { throw TokenizerError.missingField(path: path, field: "model.merges") }
        guard mergeList.count <= 1 << 22 else { throw fail("model.merges", "has over 2^22 entries") }
        var merges = [UInt64: (rank: Int32, id: Int32)](minimumCapacity: mergeList.count)
        for (rank, m) in mergeList.enumerated() {
            let a: String, b: String
            if let s = m.stringValue {
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw fail("model.merges[\(rank)]", "is not \"a b\"") }
                (a, b) = (String(parts[0]), String(parts[1]))
            } else if let arr = m.arrayValue, arr.count == 2, let x = arr[0].stringValue, let y = arr[1].stringValue {
                (a, b) = (x, y)
            } else {
                throw fail("model.merges[\(rank)]", "is neither \"a b\" nor [\"a\", \"b\"]")
            }
            guard let ia = vocab[a], let ib = vocab[b] else { throw fail("model.merges[\(rank)]", "names a token not in the vocabulary") }
            guard let merged = vocab[a + b] else { throw fail("model.merges[\(rank)]", "makes \((a + b).debugDescription), not in the vocabulary") }
            let key = UInt64(ia) << 32 | UInt64(ib)
            if merges[key] == nil { merges[key] = (Int32(rank), Int32(merged)) }
        }
        self.merges = merges
        if byteFallback {
            var ids = [Int]()
            for b in 0..<256 {
                guard let id = vocab[String(format: "<0x%02X>", b)] else { break }
                ids.append(id)
            }
            byteIds = ids.count == 256 ? ids : nil
        } else {
            byteIds = nil
        }

        // Added tokens.
        var added = [(content: String, id: Int)]()
        var anyNormalized = false
        if let list = root["added_tokens"], list != .null {
            guard let arr = list.arrayValue else { throw fail("added_tokens", "is not an array") }
            guard arr.count <= 1 << 16 else { throw fail("added_tokens", "has over 65536 entries") }
            for (i, t) in arr.enumerated() {
                guard let content = t["content"]?.stringValue, !content.isEmpty else { throw fail("added_tokens[\(i)].content", "is not a non-empty string") }
                let id = try checkId(t["id"], "added_tokens[\(i)].id")
                for f in ["lstrip", "rstrip", "single_word"] where t[f] == .bool(true) {
                    throw fail("added_tokens[\(i)].\(f)", "is true: not supported")
                }
                if t["normalized"] == .bool(true) { anyNormalized = true }
                added.append((content, id))
                vocab[content] = id
            }
        }
        addedTokens = added
        self.vocab = vocab
        var byByte = [UInt8: [(bytes: [UInt8], id: Int)]]()
        for (content, id) in added {
            let b = Array(content.utf8)
            byByte[b[0], default: []].append((b, id))
        }
        for k in byByte.keys { byByte[k]!.sort { $0.bytes.count > $1.bytes.count } }
        addedByByte = byByte

        // Normalizer.
        func normalizerSteps(_ v: JSONValue, _ field: String, depth: Int) throws -> [NormalizerStep] {
            let t = try typeOf(v, field)
            switch t {
            case "Prepend":
                guard let s = v["prepend"]?.stringValue else { throw TokenizerError.missingField(path: path, field: "\(field).prepend") }
                return [.prepend(s)]
            case "Replace":
                guard let content = v["content"]?.stringValue else { throw TokenizerError.missingField(path: path, field: "\(field).content") }
                guard let pattern = v["pattern"]?["String"]?.stringValue, !pattern.isEmpty else {
                    throw TokenizerError.unsupported(path: path, field: "\(field).pattern", type: "Regex")
                }
                return [.replace(pattern, content)]
            case "Sequence":
                guard depth < 4, let list = v["normalizers"]?.arrayValue else { throw fail("\(field).normalizers", "is not a list (or nests too deeply)") }
                return try list.enumerated().flatMap { try normalizerSteps($1, "\(field).normalizers[\($0)]", depth: depth + 1) }
            default:
                throw TokenizerError.unsupported(path: path, field: field, type: t)
            }
        }
        if let n = root["normalizer"], n != .null {
            normalizer = try normalizerSteps(n, "normalizer", depth: 0)
        } else {
            normalizer = []
        }
        addedNormalizedMatchesRaw = normalizer.isEmpty
        if anyNormalized && !normalizer.isEmpty {
            throw fail("added_tokens", "has a normalized token with a normalizer present: not supported")
        }

        // Pre-tokenizer.
        if let p = root["pre_tokenizer"], p != .null {
            let t = try typeOf(p, "pre_tokenizer")
            guard t == "Metaspace" else { throw TokenizerError.unsupported(path: path, field: "pre_tokenizer", type: t) }
            guard let r = p["replacement"]?.stringValue, r.unicodeScalars.count == 1 else {
                throw fail("pre_tokenizer.replacement", "is not one character")
            }
            let scheme: PrependScheme
            switch p["prepend_scheme"]?.stringValue {
            case "always": scheme = .always
            case "first": scheme = .first
            case "never": scheme = .never
            case nil: scheme = p["add_prefix_space"] == .bool(false) ? .never : .always
            case let other?: throw fail("pre_tokenizer.prepend_scheme", "is \"\(other)\", not always/first/never")
            }
            metaspace = Metaspace(replacement: r, scheme: scheme, split: p["split"] == .bool(true))
        } else {
            metaspace = nil
        }

        // Post-processor.
        var prefix = [Int](), suffix = [Int]()
        if let pp = root["post_processor"], pp != .null {
            let t = try typeOf(pp, "post_processor")
            guard t == "TemplateProcessing" else { throw TokenizerError.unsupported(path: path, field: "post_processor", type: t) }
            guard let single = pp["single"]?.arrayValue else { throw TokenizerError.missingField(path: path, field: "post_processor.single") }
            var seenSequence = false
            for (i, item) in single.enumerated() {
                if let special = item["SpecialToken"] {
                    guard let name = special["id"]?.stringValue, let ids = pp["special_tokens"]?[name]?["ids"]?.arrayValue else {
                        throw fail("post_processor.single[\(i)]", "names a special token not in post_processor.special_tokens")
                    }
                    let values = try ids.enumerated().map { try checkId($1, "post_processor.special_tokens.\(name).ids[\($0)]") }
                    if seenSequence { suffix += values } else { prefix += values }
                } else if let seq = item["Sequence"] {
                    guard seq["id"]?.stringValue == "A", !seenSequence else { throw fail("post_processor.single[\(i)]", "is not the one sequence A") }
                    seenSequence = true
                } else {
                    throw fail("post_processor.single[\(i)]", "is neither SpecialToken nor Sequence")
                }
            }
            guard seenSequence else { throw fail("post_processor.single", "has no sequence A") }
        }
        prefixIds = prefix
        suffixIds = suffix

        // Decoder: only checked.
        func checkDecoder(_ v: JSONValue, _ field: String, depth: Int) throws {
            let t = try typeOf(v, field)
            switch t {
            case "Replace", "ByteFallback", "Fuse", "Strip", "Metaspace": return
            case "Sequence":
                guard depth < 4, let list = v["decoders"]?.arrayValue else { throw fail("\(field).decoders", "is not a list (or nests too deeply)") }
                for (i, d) in list.enumerated() { try checkDecoder(d, "\(field).decoders[\(i)]", depth: depth + 1) }
            default:
                throw TokenizerError.unsupported(path: path, field: field, type: t)
            }
        }
        if let d = root["decoder"], d != .null { try checkDecoder(d, "decoder", depth: 0) }

        // The Idefics2 tokens.
        func addedId(_ content: String) -> Int? { added.first { $0.content == content }?.id }
        guard let image = addedId("<image>") else { throw TokenizerError.missingToken(path: path, token: "<image>") }
        guard let fake = addedId("<fake_token_around_image>") else {
            throw TokenizerError.missingToken(path: path, token: "<fake_token_around_image>")
        }
        imageTokenId = image
        fakeImageTokenId = fake
        endOfUtteranceId = addedId("<end_of_utterance>")
        bosId = vocab["<s>"]
    }

    /// The id of a token (vocabulary or added), by content.
    public func id(of token: String) -> Int? { vocab[token] }

    /// The ids of `text`, with the post-processor's special tokens (BOS) when `addSpecialTokens`.
    public func encode(_ text: String, addSpecialTokens: Bool = true) throws -> [Int] {
        var ids = addSpecialTokens ? prefixIds : []
        let bytes = Array(text.utf8)
        var start = 0, i = 0
        while i < bytes.count {
            if let candidates = addedByByte[bytes[i]],
               let match = candidates.first(where: { c in
                   c.bytes.count <= bytes.count - i && bytes[i..<(i + c.bytes.count)].elementsEqual(c.bytes)
               }) {
                if start < i { try encodePiece(bytes[start..<i], offset: start, into: &ids) }
                ids.append(match.id)
                i += match.bytes.count
                start = i
            } else {
                i += 1
            }
        }
        if start < bytes.count { try encodePiece(bytes[start..<bytes.count], offset: start, into: &ids) }
        if addSpecialTokens { ids += suffixIds }
        return ids
    }

    func encodePiece(_ bytes: ArraySlice<UInt8>, offset: Int, into ids: inout [Int]) throws {
        var s = String(decoding: bytes, as: UTF8.self)
        for step in normalizer {
            switch step {
            case let .prepend(p): if !s.isEmpty { s = p + s }
            case let .replace(pattern, content): s = s.replacingOccurrences(of: pattern, with: content)
            }
        }
        var words = [s]
        if let m = metaspace {
            s = s.replacingOccurrences(of: " ", with: m.replacement)
            let prepend: Bool
            switch m.scheme {
            case .always: prepend = true
            case .first: prepend = offset == 0
            case .never: prepend = false
            }
            if prepend && !s.hasPrefix(m.replacement) { s = m.replacement + s }
            if m.split {
                words = []
                var current = ""
                let r = m.replacement.unicodeScalars.first!
                for u in s.unicodeScalars {
                    if u == r && !current.isEmpty { words.append(current); current = "" }
                    current.unicodeScalars.append(u)
                }
                if !current.isEmpty { words.append(current) }
            } else {
                words = [s]
            }
        }
        for w in words where !w.isEmpty { try bpe(w, into: &ids) }
    }

    /// BPE over one word: characters (Unicode scalars) to ids (byte fallback for unknown ones), then merges.
    func bpe(_ word: String, into ids: inout [Int]) throws {
        if ignoreMerges, let id = vocab[word] { ids.append(id); return }
        var symbols = [Int32]()
        for u in word.unicodeScalars {
            let c = String(u)
            if let id = vocab[c] {
                symbols.append(Int32(id))
            } else if let byteIds {
                for b in c.utf8 { symbols.append(Int32(byteIds[Int(b)])) }
            } else if let unkId {
                symbols.append(Int32(unkId))
            } else {
                throw TokenizerError.unencodable(path: path, character: c)
            }
        }
        // ranks[i]: the merge of symbols[i] and symbols[i + 1] (rank, id), or rank Int32.max.
        @inline(__always) func pair(_ a: Int32, _ b: Int32) -> (rank: Int32, id: Int32) {
            merges[UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))] ?? (Int32.max, -1)
        }
        var ranks = [(rank: Int32, id: Int32)]()
        ranks.reserveCapacity(symbols.count)
        for i in 0..<max(0, symbols.count - 1) { ranks.append(pair(symbols[i], symbols[i + 1])) }
        while !ranks.isEmpty {
            var best = 0
            for i in 1..<ranks.count where ranks[i].rank < ranks[best].rank { best = i }
            if ranks[best].rank == Int32.max { break }
            symbols[best] = ranks[best].id
            symbols.remove(at: best + 1)
            ranks.remove(at: best)
            if best > 0 { ranks[best - 1] = pair(symbols[best - 1], symbols[best]) }
            if best < ranks.count { ranks[best] = pair(symbols[best], symbols[best + 1]) }
        }
        for s in symbols { ids.append(Int(s)) }
    }
}
