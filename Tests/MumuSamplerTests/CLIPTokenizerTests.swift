import Foundation
import MumuSampler
import XCTest

/// Conformance with transformers' CLIPTokenizer on the prompts of Fixtures/tokenizer.json
/// (scripts/gen_fixtures_tokenizer.py), plus the API's own rules.
final class CLIPTokenizerTests: XCTestCase {
    struct Case {
        let name: String, text: String, ids: [Int32], clipL: [Int32], clipG: [Int32], short: [Int32]
        let truncated: Bool, eos: Int, decoded: String
    }

    static let fixture: [String: Any] = {
        let url = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/tokenizer.json")
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }()

    static func ints(_ value: Any?) -> [Int32] { (value as! [NSNumber]).map { $0.int32Value } }

    static let cases: [Case] = (fixture["cases"] as! [[String: Any]]).map {
        Case(name: $0["name"] as! String, text: $0["text"] as! String, ids: ints($0["ids"]),
             clipL: ints($0["clip_l"]), clipG: ints($0["clip_g"]), short: ints($0["short"]),
             truncated: ($0["truncated"] as! NSNumber).boolValue, eos: ($0["eos"] as! NSNumber).intValue,
             decoded: $0["decoded"] as! String)
    }

    let tokenizer = CLIPTokenizer.shared

    func testFixtureCorpus() {
        XCTAssertGreaterThanOrEqual(Self.cases.count, 60)
        XCTAssertEqual(Self.fixture["length"] as? Int, 77)
        XCTAssertTrue(Self.cases.contains { $0.truncated })
        XCTAssertTrue(Self.cases.contains { $0.text.isEmpty })
    }

    func testEncodeMatchesTransformers() {
        for c in Self.cases {
            XCTAssertEqual(tokenizer.encode(c.text), c.ids, "\(c.name): \(c.text.debugDescription)")
        }
    }

    func testRandomStringsMatchTransformers() {
        let random = Self.fixture["random"] as! [[String: Any]]
        XCTAssertEqual(random.count, 300)
        for r in random {
            let text = r["text"] as! String
            XCTAssertEqual(tokenizer.encode(text), Self.ints(r["ids"]), text.debugDescription)
        }
    }

    func testPaddingTruncationAndEOS() {
        let short = Self.fixture["short_length"] as! Int
        for c in Self.cases {
            let l = tokenizer.tokenize(c.text, pad: CLIPTokenizer.padCLIPL)
            XCTAssertEqual(l.ids, c.clipL, c.name)
            XCTAssertEqual(l.truncated, c.truncated, c.name)
            XCTAssertEqual(l.eos, c.eos, c.name)
            let g = tokenizer.tokenize(c.text, length: 77, pad: CLIPTokenizer.padBigG)
            XCTAssertEqual(g.ids, c.clipG, c.name)
            XCTAssertEqual(g.truncated, c.truncated, c.name)
            XCTAssertEqual(g.eos, c.eos, c.name)
            XCTAssertEqual(CLIPTokenizer.eosPosition(g.ids), c.eos, c.name)
            let s = tokenizer.tokenize(c.text, length: short, pad: CLIPTokenizer.padCLIPL)
            XCTAssertEqual(s.ids, c.short, c.name)
            XCTAssertEqual(s.truncated, c.ids.count > short - 2, c.name)
        }
    }

    func testDecodeMatchesTransformers() {
        for c in Self.cases {
            XCTAssertEqual(tokenizer.decode(c.clipL), c.decoded, c.name)
        }
        XCTAssertEqual(tokenizer.decode([49406, 320, 2368, 49407], skipSpecial: false),
                       "<|startoftext|>a cat <|endoftext|>")
    }

    func testBoundaries() {
        let a74 = tokenizer.tokenize(Array(repeating: "a", count: 74).joined(separator: " "), pad: 0)
        XCTAssertFalse(a74.truncated)
        XCTAssertEqual(a74.eos, 75)
        XCTAssertEqual(a74.ids[76], 0)
        let a75 = tokenizer.tokenize(Array(repeating: "a", count: 75).joined(separator: " "), pad: 0)
        XCTAssertFalse(a75.truncated)
        XCTAssertEqual(a75.eos, 76)
        let a76 = tokenizer.tokenize(Array(repeating: "a", count: 76).joined(separator: " "), pad: 0)
        XCTAssertTrue(a76.truncated)
        XCTAssertEqual(a76.ids.count, 77)
        XCTAssertEqual(a76.ids.last, CLIPTokenizer.endOfText)
        let empty = tokenizer.tokenize("", pad: CLIPTokenizer.padCLIPL)
        XCTAssertEqual(Array(empty.ids.prefix(3)), [49406, 49407, 49407])
        XCTAssertEqual(empty.eos, 1)
        XCTAssertFalse(empty.truncated)
        let two = tokenizer.tokenize("a cat", length: 2, pad: 0)
        XCTAssertEqual(two.ids, [49406, 49407])
        XCTAssertTrue(two.truncated)
        XCTAssertEqual(CLIPTokenizer.eosPosition([]), -1)
        // A literal <|endoftext|> is the special token, so pooling takes the first one (as the references do).
        XCTAssertEqual(tokenizer.tokenize("a <|endoftext|> cat", pad: 0).eos, 2)
    }

    func testVocabulary() {
        XCTAssertEqual(tokenizer.token(0), "!")
        XCTAssertEqual(tokenizer.token(256), "!</w>")
        XCTAssertEqual(tokenizer.token(320), "a</w>")
        XCTAssertEqual(tokenizer.token(2368), "cat</w>")
        XCTAssertEqual(tokenizer.token(512), "in")  // the first merge, "i n"
        XCTAssertEqual(tokenizer.token(49405), "jeky ll</w>".replacingOccurrences(of: " ", with: ""))
        XCTAssertEqual(tokenizer.token(49406), "<|startoftext|>")
        XCTAssertEqual(tokenizer.token(49407), "<|endoftext|>")
        XCTAssertNil(tokenizer.token(49408))
        XCTAssertNil(tokenizer.token(-1))
        XCTAssertEqual(tokenizer.encode("a photo of a cat"), [320, 1125, 539, 320, 2368])
    }

    func testMergesTextIsChecked() {
        XCTAssertThrowsError(try CLIPTokenizer(merges: "#version: 0.2\ni n\nt h\n")) {
            XCTAssertEqual($0 as? CLIPTokenizer.Error, .tooFewMerges(found: 2, needed: CLIPTokenizer.mergeCount))
        }
        XCTAssertThrowsError(try CLIPTokenizer(merges: "#version: 0.2\ni n x\n")) {
            XCTAssertEqual($0 as? CLIPTokenizer.Error, .malformedMerge(line: 2, text: "i n x"))
        }
        // 48,894 merges, the first naming a symbol no byte or merge spells.
        let unknown = "#version: 0.2\nzz q\n" + String(repeating: "i n\n", count: CLIPTokenizer.mergeCount - 1)
        XCTAssertThrowsError(try CLIPTokenizer(merges: unknown)) {
            XCTAssertEqual($0 as? CLIPTokenizer.Error, .unknownSymbol(line: 2, symbol: "zz"))
        }
    }

    /// Runs early (tests run in name order), while the cache is still cold for these strings.
    func testConcurrentEncodingAgrees() {
        let random = Self.fixture["random"] as! [[String: Any]]
        let texts = random.map { $0["text"] as! String }
        let expected = random.map { Self.ints($0["ids"]) }
        var results = [[[Int32]]](repeating: [], count: 8)
        results.withUnsafeMutableBufferPointer { out in
            DispatchQueue.concurrentPerform(iterations: 8) { t in
                // Each thread walks the strings from a different starting point.
                let order = Array(texts.indices.dropFirst(t * 37)) + Array(texts.indices.prefix(t * 37))
                var ids = [[Int32]](repeating: [], count: texts.count)
                for k in order { ids[k] = tokenizer.encode(texts[k]) }
                out[t] = ids
            }
        }
        for r in results { XCTAssertEqual(r, expected) }
    }
}
