import Foundation
import MumuFormats

/// The CLIP byte-level BPE tokenizer both SDXL text encoders use (CLIP-L and OpenCLIP bigG share the
/// vocabulary; they differ only in the padding id).
///
/// Semantics are those of transformers 5's `CLIPTokenizer` (the `tokenizers` backend), checked id for
/// id against it by `Tests/MumuSamplerTests/Fixtures/tokenizer.json`:
/// 1. `<|startoftext|>` and `<|endoftext|>` written literally in the raw text become their ids
///    (special tokens, matched before normalization and case-sensitively);
/// 2. each stretch between them is normalized: NFC, every run of White_Space characters becomes one
///    space, then each scalar is lowercased on its own (full mapping, no final-sigma context);
/// 3. it is split by `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
///    (what matches is kept, the rest, i.e. spaces, dropped); a piece that is a special-token spelling
///    is split again by the byte-level GPT-2 pattern into `<|`, the word, `|>` (the only piece that
///    pattern changes); letters and numbers are the Unicode 16.0 categories (the Oniguruma tables the
///    reference uses: characters new in Unicode 17 count as neither);
/// 4. each piece's UTF-8 bytes become the `bytes_to_unicode` symbols, the last one with `</w>`, and
///    merge by rank (the first 48,894 merges of `bpe_simple_vocab_16e6.txt`).
/// Ids: 0..<256 the byte symbols, 256..<512 the same with `</w>`, 512 + k the k-th merge, then 49406
/// `<|startoftext|>` and 49407 `<|endoftext|>`.
///
/// Thread-safe; BPE results are cached per piece.
public struct CLIPTokenizer: Sendable {
    public static let startOfText: Int32 = 49406
    public static let endOfText: Int32 = 49407
    public static let vocabularySize = 49408
    /// Merges used: 49152 - 256 - 2, as open_clip and the Hugging Face files have it.
    public static let mergeCount = 48894
    /// The context length of both SDXL text encoders.
    public static let contextLength = 77
    /// CLIP-L (diffusers `tokenizer`) pads with `<|endoftext|>`.
    public static let padCLIPL: Int32 = 49407
    /// OpenCLIP bigG (diffusers `tokenizer_2`, pad token "!") pads with 0.
    public static let padBigG: Int32 = 0

    public enum Error: Swift.Error, CustomStringConvertible, Equatable {
        case malformedMerge(line: Int, text: String)
        case unknownSymbol(line: Int, symbol: String)
        case tooFewMerges(found: Int, needed: Int)
        case folder(path: String, reason: String)

        public var description: String {
            switch self {
            case .malformedMerge(let line, let text): return "merges line \(line): expected two symbols, got \"\(text)\""
            case .unknownSymbol(let line, let symbol): return "merges line \(line): symbol \"\(symbol)\" is not in the vocabulary"
            case let .tooFewMerges(found, needed): return "merges: \(found) merges, need \(needed)"
            case let .folder(path, reason): return "tokenizer \(path): \(reason)"
            }
        }
    }

    /// The tokenizer over the merges compiled into the binary (`vocab/clip_merges.txt`). Built on first
    /// use (tens of milliseconds).
    public static let shared: CLIPTokenizer = {
        do { return try CLIPTokenizer(merges: EmbeddedVocab.clipMerges) } catch {
            fatalError("embedded CLIP merges: \(error)")
        }
    }()

    private let storage: Storage

    /// Builds the tokenizer from merges text in the Hugging Face `merges.txt` form (one "a b" pair a
    /// line, an optional `#version` first line) or the raw `bpe_simple_vocab_16e6.txt` (its first line
    /// is a header too). Uses the first 48,894 merges.
    public init(merges text: String) throws {
        storage = try Storage(merges: text, count: Self.mergeCount)
    }

    /// A tokenizer over the first `count` merges only: a prefix of CLIP's vocabulary (the 512 byte symbols,
    /// the merged symbols, then `<|startoftext|>` = 512 + count and `<|endoftext|>` = 513 + count), as small
    /// test models ship.
    public init(merges text: String, count: Int) throws {
        precondition(count >= 0 && count <= Self.mergeCount, "merge count \(count) outside 0...\(Self.mergeCount)")
        storage = try Storage(merges: text, count: count)
    }

    /// `<|startoftext|>`'s id in this vocabulary (49406 for CLIP's).
    public var startOfTextId: Int32 { Int32(storage.spellings.count - 2) }
    /// `<|endoftext|>`'s id (49407 for CLIP's); CLIP-L pads with it.
    public var endOfTextId: Int32 { Int32(storage.spellings.count - 1) }
    /// Entries in the vocabulary.
    public var vocabularyCount: Int { storage.spellings.count }

    /// The tokenizer a diffusers folder ships (`tokenizer/` or `tokenizer_2/`: `tokenizer.json`, or `vocab.json`
    /// with `merges.txt`). CLIP's BPE is the only kind SDXL uses, so the folder must hold CLIP's vocabulary or a
    /// prefix of it (checked entry by entry); the full vocabulary gives `shared`.
    public static func load(folder: String) throws -> CLIPTokenizer {
        let fm = FileManager.default
        var merges: [String]
        var vocab: [(String, JSONValue)]
        func json(_ name: String) throws -> JSONValue {
            let path = folder + "/" + name
            guard let data = fm.contents(atPath: path) else { throw Error.folder(path: folder, reason: "cannot read \(name)") }
            do { return try data.withUnsafeBytes { try JSONParser.parse($0) } } catch {
                throw Error.folder(path: folder, reason: "\(name): \(error)")
            }
        }
        if fm.fileExists(atPath: folder + "/tokenizer.json") {
            let root = try json("tokenizer.json")
            guard let model = root["model"], model["type"]?.stringValue ?? "BPE" == "BPE",
                  let v = model["vocab"]?.objectValue, let m = model["merges"]?.arrayValue else {
                throw Error.folder(path: folder, reason: "tokenizer.json has no BPE model with vocab and merges")
            }
            vocab = v
            // "a b" strings (tokenizers < 0.20) or ["a", "b"] pairs.
            merges = try m.map { entry in
                if let s = entry.stringValue { return s }
                if let pair = entry.arrayValue, pair.count == 2, let a = pair[0].stringValue, let b = pair[1].stringValue { return a + " " + b }
                throw Error.folder(path: folder, reason: "tokenizer.json: a merge that is neither \"a b\" nor [a, b]")
            }
        } else if fm.fileExists(atPath: folder + "/merges.txt") {
            guard let v = try json("vocab.json").objectValue else { throw Error.folder(path: folder, reason: "vocab.json is not an object") }
            vocab = v
            guard let text = fm.contents(atPath: folder + "/merges.txt").map({ String(decoding: $0, as: UTF8.self) }) else {
                throw Error.folder(path: folder, reason: "cannot read merges.txt")
            }
            merges = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init).filter { !$0.hasPrefix("#version") }
        } else {
            throw Error.folder(path: folder, reason: "no tokenizer.json, nor vocab.json with merges.txt")
        }
        let count = vocab.count - 514
        guard count >= 0, count <= mergeCount, merges.count >= count else {
            throw Error.folder(path: folder, reason: "\(vocab.count) vocabulary entries and \(merges.count) merges do not make a CLIP vocabulary (512 byte symbols + merges + 2 specials, up to \(vocabularySize))")
        }
        let tokenizer = count == mergeCount ? shared : try CLIPTokenizer(merges: merges.prefix(count).joined(separator: "\n"), count: count)
        // The ids must be ours: CLIP's order (byte symbols, merged symbols, specials).
        for (token, id) in vocab {
            guard let id = id.intValue, id >= 0, id < tokenizer.vocabularyCount, tokenizer.token(Int32(id)) == token else {
                throw Error.folder(path: folder, reason: "vocabulary entry \"\(token)\" -> \(id) is not CLIP's; only CLIP BPE vocabularies are supported")
            }
        }
        return tokenizer
    }

    /// The token ids of `text`, without `<|startoftext|>` / `<|endoftext|>` around them.
    public func encode(_ text: String) -> [Int32] {
        storage.encode(text)
    }

    /// `<|startoftext|>`, the ids of `text` cut to `length - 2`, `<|endoftext|>`, then `pad` up to
    /// `length` (transformers with `padding="max_length", truncation=True`; open_clip's truncation gives
    /// the same ids). `truncated` says whether ids were cut; `eos` is the pooling position,
    /// `eosPosition(ids)`. `length` must be at least 2.
    ///
    /// `pad` only pads: a "!" in the text stays text for bigG too, as in open_clip and Stability's sgm
    /// (what SDXL was trained with). diffusers' `tokenizer_2` differs there: its pad token "!" is an
    /// added special token, so each literal "!" becomes id 0 instead of merging with its neighbours.
    public func tokenize(_ text: String, length: Int = CLIPTokenizer.contextLength, pad: Int32)
        -> (ids: [Int32], truncated: Bool, eos: Int)
    {
        precondition(length >= 2, "CLIPTokenizer.tokenize: length \(length) < 2")
        let content = encode(text)
        let room = length - 2
        var ids = [Int32]()
        ids.reserveCapacity(length)
        ids.append(startOfTextId)
        ids.append(contentsOf: content.prefix(room))
        ids.append(endOfTextId)
        while ids.count < length { ids.append(pad) }
        return (ids, content.count > room, Self.eosPosition(ids))
    }

    /// The position whose hidden state is pooled: the first occurrence of the largest id (open_clip's
    /// `text.argmax(dim=-1)`; transformers' `(input_ids == eos_token_id).int().argmax(-1)` is the same
    /// here, since `<|endoftext|>` is the largest id). -1 for an empty array.
    public static func eosPosition(_ ids: [Int32]) -> Int {
        var best = -1
        var bestValue = Int32.min
        for (i, id) in ids.enumerated() where best < 0 || id > bestValue {
            best = i
            bestValue = id
        }
        return best
    }

    /// The text of `ids` (transformers' decode: symbols back to bytes, `</w>` becomes a space, invalid
    /// UTF-8 becomes U+FFFD, then the ends are trimmed of whitespace as Python's `str.strip()` does).
    /// Special tokens are dropped when `skipSpecial`, otherwise spelled out; ids outside the
    /// vocabulary are skipped.
    public func decode(_ ids: [Int32], skipSpecial: Bool = true) -> String {
        storage.decode(ids, skipSpecial: skipSpecial)
    }

    /// The vocabulary entry of `id` (byte-level symbols, e.g. "cat</w>"), nil outside the vocabulary.
    public func token(_ id: Int32) -> String? {
        id >= 0 && Int(id) < storage.spellings.count ? String(decoding: storage.spellings[Int(id)], as: UTF8.self) : nil
    }
}

// MARK: - Implementation

/// Byte <-> symbol tables of `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100 onwards, in byte order. Ids 0..<256 follow the symbols' order: first the
/// printable bytes ascending, then the others.
private enum ByteSymbols {
    /// (byte -> id, id -> symbol)
    static let tables: (byteToId: [Int32], symbols: [Unicode.Scalar]) = {
        var printable: [UInt8] = []
        for b in 0..<256 where (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
            printable.append(UInt8(b))
        }
        var order: [UInt8] = printable
        var symbols: [Unicode.Scalar] = printable.map { Unicode.Scalar($0) }
        var n: UInt32 = 0
        for b in 0..<256 where !printable.contains(UInt8(b)) {
            order.append(UInt8(b))
            symbols.append(Unicode.Scalar(256 + n)!)
            n += 1
        }
        var byteToId = [Int32](repeating: 0, count: 256)
        for (id, b) in order.enumerated() { byteToId[Int(b)] = Int32(id) }
        return (byteToId, symbols)
    }()
}

private final class Storage: @unchecked Sendable {
    let byteToId: [Int32]
    /// id -> the vocabulary entry's UTF-8 (byte-level symbols, maybe `</w>`).
    let spellings: [[UInt8]]
    /// id -> the bytes it decodes to (without `</w>`), and whether it ends a word.
    let tokenBytes: [[UInt8]]
    let tokenEndsWord: [Bool]
    /// (left id << 32 | right id) -> (rank << 32 | merged id)
    let merges: [UInt64: UInt64]

    private let lock = NSLock()
    private var cache: [[UInt8]: [Int32]] = [:]
    private static let cacheLimit = 1 << 16

    init(merges text: String, count: Int) throws {
        let (byteToId, symbols) = ByteSymbols.tables
        self.byteToId = byteToId

        // The merge lines, parsed as bytes: skip a leading header ("#version: 0.2", or the raw vocab
        // file's first line), blank lines, and a "\r" before each "\n".
        var pairs: [(a: [UInt8], b: [UInt8], line: Int)] = []
        pairs.reserveCapacity(count)
        let header = Array("#version".utf8)
        var text = text
        try text.withUTF8 { utf8 in
            var lineNumber = 0
            var start = 0
            while start < utf8.count && pairs.count < count {
                var end = start
                while end < utf8.count && utf8[end] != 0x0A { end += 1 }
                lineNumber += 1
                let line = UnsafeBufferPointer(rebasing: utf8[start..<(end > start && utf8[end - 1] == 0x0D ? end - 1 : end)])
                start = end + 1
                if lineNumber == 1 && Self.contains(line, header) { continue }
                if line.isEmpty { continue }
                // Exactly two non-empty fields around one space (as in every known merges file).
                guard let space = line.firstIndex(of: 0x20), space > 0, space + 1 < line.count,
                      line[(space + 1)...].firstIndex(of: 0x20) == nil
                else {
                    throw CLIPTokenizer.Error.malformedMerge(line: lineNumber, text: String(decoding: line, as: UTF8.self))
                }
                pairs.append((Array(line[..<space]), Array(line[(space + 1)...]), lineNumber))
            }
        }
        guard pairs.count == count else { throw CLIPTokenizer.Error.tooFewMerges(found: pairs.count, needed: count) }

        // The vocabulary in id order, as UTF-8 (a later duplicate spelling would win, as in the
        // reference dicts). Byte keys: exact, and far cheaper to hash than String.
        let endOfWord = Array("</w>".utf8)
        var spellings: [[UInt8]] = symbols.map { Array(String($0).utf8) }
        spellings += symbols.map { Array(String($0).utf8) + endOfWord }
        for pair in pairs { spellings.append(pair.a + pair.b) }
        spellings += [Array("<|startoftext|>".utf8), Array("<|endoftext|>".utf8)]
        var vocab: [[UInt8]: Int32] = [:]
        vocab.reserveCapacity(spellings.count)
        for (id, spelling) in spellings.enumerated() { vocab[spelling] = Int32(id) }

        var table: [UInt64: UInt64] = [:]
        table.reserveCapacity(pairs.count)
        for (rank, pair) in pairs.enumerated() {
            guard let left = vocab[pair.a] else {
                throw CLIPTokenizer.Error.unknownSymbol(line: pair.line, symbol: String(decoding: pair.a, as: UTF8.self))
            }
            guard let right = vocab[pair.b] else {
                throw CLIPTokenizer.Error.unknownSymbol(line: pair.line, symbol: String(decoding: pair.b, as: UTF8.self))
            }
            let merged = vocab[spellings[512 + rank]]!
            table[UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))] = UInt64(rank) << 32 | UInt64(UInt32(merged))
        }
        self.merges = table
        self.spellings = spellings

        // Decoding tables: symbols (all below U+0144) back to bytes.
        var symbolToByte = [UInt8](repeating: 0, count: 0x144)
        for b in 0..<256 { symbolToByte[Int(symbols[Int(byteToId[b])].value)] = UInt8(b) }
        var tokenBytes: [[UInt8]] = []
        var endsWord: [Bool] = []
        tokenBytes.reserveCapacity(spellings.count)
        endsWord.reserveCapacity(spellings.count)
        for (id, spelling) in spellings.enumerated() {
            if id >= spellings.count - 2 {
                tokenBytes.append(spelling)
                endsWord.append(false)
                continue
            }
            let end = spelling.count >= 4 && Array(spelling.suffix(4)) == endOfWord
            let body = end ? spelling.dropLast(4) : spelling[...]
            // The symbols' UTF-8 is one byte (below U+0080) or two.
            var bytes: [UInt8] = []
            bytes.reserveCapacity(body.count)
            var k = body.startIndex
            while k < body.endIndex {
                let lead = body[k]
                if lead < 0x80 {
                    bytes.append(symbolToByte[Int(lead)])
                    k += 1
                } else {
                    bytes.append(symbolToByte[Int(lead & 0x1F) << 6 | Int(body[k + 1] & 0x3F)])
                    k += 2
                }
            }
            tokenBytes.append(bytes)
            endsWord.append(end)
        }
        self.tokenBytes = tokenBytes
        self.tokenEndsWord = endsWord
    }

    private static func contains(_ haystack: UnsafeBufferPointer<UInt8>, _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count else { return false }
        for i in 0...(haystack.count - needle.count) where haystack[i..<i + needle.count].elementsEqual(needle) {
            return true
        }
        return false
    }

    // MARK: Encoding

    private static let specials: [(bytes: [UInt8], fromEnd: Int32)] = [
        (Array("<|startoftext|>".utf8), 2),
        (Array("<|endoftext|>".utf8), 1),
    ]

    func encode(_ text: String) -> [Int32] {
        var out: [Int32] = []
        var text = text
        text.withUTF8 { utf8 in
            var segmentStart = 0
            var i = 0
            while i < utf8.count {
                if utf8[i] == UInt8(ascii: "<"), let special = special(in: utf8, at: i) {
                    encodeSegment(UnsafeBufferPointer(rebasing: utf8[segmentStart..<i]), into: &out)
                    out.append(special.id)
                    i += special.length
                    segmentStart = i
                } else {
                    i += 1
                }
            }
            encodeSegment(UnsafeBufferPointer(rebasing: utf8[segmentStart..<utf8.count]), into: &out)
        }
        return out
    }

    private func special(in utf8: UnsafeBufferPointer<UInt8>, at i: Int) -> (id: Int32, length: Int)? {
        for (bytes, fromEnd) in Self.specials where utf8.count - i >= bytes.count {
            var match = true
            for k in 0..<bytes.count where utf8[i + k] != bytes[k] { match = false; break }
            if match { return (Int32(spellings.count) - fromEnd, bytes.count) }
        }
        return nil
    }

    private enum Class { case space, letter, number, other }

    /// Oniguruma's `\p{L}` / `\p{N}` (Unicode 16.0 tables in the reference `tokenizers` build).
    private static func classify(_ s: Unicode.Scalar) -> Class {
        let v = s.value
        if v < 0x80 {
            switch v {
            case 0x09...0x0D, 0x20: return .space
            case 0x30...0x39: return .number
            case 0x41...0x5A, 0x61...0x7A: return .letter
            default: return .other
            }
        }
        let p = s.properties
        if p.isWhitespace { return .space }
        let cls: Class
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: cls = .letter
        case .decimalNumber, .letterNumber, .otherNumber: cls = .number
        default: return .other
        }
        guard let age = p.age, age.major < 16 || (age.major == 16 && age.minor == 0) else { return .other }
        return cls
    }

    /// Normalizes one stretch between special tokens, splits it into pieces and appends their BPE ids.
    private func encodeSegment(_ utf8: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        if utf8.isEmpty { return }
        var ascii = true
        for b in utf8 where b >= 0x80 { ascii = false; break }
        var string = String(decoding: utf8, as: UTF8.self)
        if !ascii { string = string.precomposedStringWithCanonicalMapping }

        // Whitespace runs -> one space; lowercase each scalar on its own.
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(utf8.count)
        var inSpace = false
        for s in string.unicodeScalars {
            let v = s.value
            if v < 0x80 {
                if (0x09...0x0D).contains(v) || v == 0x20 {
                    if !inSpace { scalars.append(" ") }
                    inSpace = true
                    continue
                }
                inSpace = false
                scalars.append((0x41...0x5A).contains(v) ? Unicode.Scalar(v + 0x20)! : s)
                continue
            }
            let p = s.properties
            if p.isWhitespace {
                if !inSpace { scalars.append(" ") }
                inSpace = true
                continue
            }
            inSpace = false
            scalars.append(contentsOf: p.lowercaseMapping.unicodeScalars)
        }

        // The split pattern, alternative by alternative at each position.
        let classes = scalars.map(Self.classify)
        let n = scalars.count
        var i = 0
        while i < n {
            let s = scalars[i]
            if s == "<", let length = Self.specialSpelling(scalars, at: i) {
                // Re-split by the byte-level pattern: "<|", the word, "|>".
                bpe(scalars[i..<i + 2], into: &out)
                bpe(scalars[i + 2..<i + length - 2], into: &out)
                bpe(scalars[i + length - 2..<i + length], into: &out)
                i += length
                continue
            }
            if s == "'", i + 1 < n {
                let next = scalars[i + 1]
                if next == "s" || next == "t" || next == "m" || next == "d" {
                    bpe(scalars[i..<i + 2], into: &out)
                    i += 2
                    continue
                }
                if i + 2 < n {
                    let third = scalars[i + 2]
                    if (next == "r" && third == "e") || (next == "v" && third == "e") || (next == "l" && third == "l") {
                        bpe(scalars[i..<i + 3], into: &out)
                        i += 3
                        continue
                    }
                }
            }
            switch classes[i] {
            case .space:
                i += 1
            case .number:
                bpe(scalars[i..<i + 1], into: &out)
                i += 1
            case .letter, .other:
                let cls = classes[i]
                var j = i + 1
                while j < n && classes[j] == cls { j += 1 }
                bpe(scalars[i..<j], into: &out)
                i = j
            }
        }
    }

    private static let specialSpellings: [[Unicode.Scalar]] = [
        Array("<|startoftext|>".unicodeScalars), Array("<|endoftext|>".unicodeScalars),
    ]

    private static func specialSpelling(_ scalars: [Unicode.Scalar], at i: Int) -> Int? {
        for spelling in specialSpellings where scalars.count - i >= spelling.count {
            var match = true
            for k in 0..<spelling.count where scalars[i + k] != spelling[k] { match = false; break }
            if match { return spelling.count }
        }
        return nil
    }

    /// The BPE ids of one piece, from the cache or computed.
    private func bpe(_ piece: ArraySlice<Unicode.Scalar>, into out: inout [Int32]) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(piece.count)
        for s in piece { bytes.append(contentsOf: UTF8.encode(s)!) }
        lock.lock()
        let cached = cache[bytes]
        lock.unlock()
        if let cached { out.append(contentsOf: cached); return }

        let ids = merge(bytes)
        lock.lock()
        if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[bytes] = ids
        lock.unlock()
        out.append(contentsOf: ids)
    }

    /// Applies the merges to one piece: repeatedly the lowest-ranked adjacent pair, every occurrence
    /// of it left to right (the reference's order; its heap-based merge gives the same result).
    private func merge(_ bytes: [UInt8]) -> [Int32] {
        var word = bytes.map { byteToId[Int($0)] }
        word[word.count - 1] += 256
        while word.count > 1 {
            var bestRank = UInt64.max
            var bestLeft: Int32 = 0, bestRight: Int32 = 0, bestMerged: Int32 = 0
            for k in 0..<(word.count - 1) {
                if let entry = merges[UInt64(UInt32(word[k])) << 32 | UInt64(UInt32(word[k + 1]))],
                   entry >> 32 < bestRank {
                    bestRank = entry >> 32
                    bestLeft = word[k]; bestRight = word[k + 1]
                    bestMerged = Int32(truncatingIfNeeded: entry & 0xFFFF_FFFF)
                }
            }
            if bestRank == UInt64.max { break }
            var next: [Int32] = []
            next.reserveCapacity(word.count)
            var k = 0
            while k < word.count {
                if k + 1 < word.count && word[k] == bestLeft && word[k + 1] == bestRight {
                    next.append(bestMerged)
                    k += 2
                } else {
                    next.append(word[k])
                    k += 1
                }
            }
            word = next
        }
        return word
    }

    // MARK: Decoding

    func decode(_ ids: [Int32], skipSpecial: Bool) -> String {
        var bytes: [UInt8] = []
        for id in ids {
            guard id >= 0 && Int(id) < tokenBytes.count else { continue }
            if id >= tokenBytes.count - 2 && skipSpecial { continue }
            bytes.append(contentsOf: tokenBytes[Int(id)])
            if tokenEndsWord[Int(id)] { bytes.append(0x20) }
        }
        // Python's str.strip(): White_Space plus U+001C..U+001F.
        let scalars = Array(String(decoding: bytes, as: UTF8.self).unicodeScalars)
        func isSpace(_ s: Unicode.Scalar) -> Bool { (0x1C...0x1F).contains(s.value) || s.properties.isWhitespace }
        var start = 0, end = scalars.count
        while start < end && isSpace(scalars[start]) { start += 1 }
        while end > start && isSpace(scalars[end - 1]) { end -= 1 }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars[start..<end])
        return String(view)
    }
}
