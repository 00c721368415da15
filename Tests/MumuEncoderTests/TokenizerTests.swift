import Foundation
import MumuEncoder
import XCTest

/// The real Idefics2 tokenizer (Mistral v1 + three added tokens, built by scripts/gen_fixtures_encoder_tokenizer.py
/// with transformers 5) against PreTrainedTokenizerFast's ids.
final class TokenizerTests: XCTestCase {
    static let shared: Result<SentencePieceBPETokenizer, Error> = Result {
        try SentencePieceBPETokenizer(path: EncoderFixtures.tokenizerFile("tokenizer.json"))
    }

    func testCorpusIdsEqualTransformers() throws {
        let tok = try Self.shared.get()
        let corpus = try XCTUnwrap(EncoderFixtures.json(EncoderFixtures.tokenizerFile("corpus.json")).arrayValue)
        XCTAssertGreaterThanOrEqual(corpus.count, 200)
        var mismatches = 0
        for entry in corpus {
            let text = try XCTUnwrap(entry["text"]?.stringValue)
            let expected = try XCTUnwrap(entry["ids"]?.arrayValue).map { $0.intValue! }
            let ids = try tok.encode(text)
            if ids != expected {
                mismatches += 1
                XCTFail("\(text.debugDescription): \(ids) != \(expected)")
            }
        }
        print("TokenizerTests: \(corpus.count) corpus strings, \(mismatches) mismatches")
    }

    func testIdefics2TokenIds() throws {
        let tok = try Self.shared.get()
        XCTAssertEqual(tok.fakeImageTokenId, 32000)
        XCTAssertEqual(tok.imageTokenId, 32001)
        XCTAssertEqual(tok.endOfUtteranceId, 32002)
        XCTAssertEqual(tok.bosId, 1)
        XCTAssertEqual(tok.prefixIds, [1])
        XCTAssertEqual(tok.suffixIds, [])
        XCTAssertEqual(try tok.encode("a cat", addSpecialTokens: false), Array(try tok.encode("a cat").dropFirst()))
    }

    func testTokenizerWithoutImageTokensIsRefused() throws {
        let text = try String(contentsOfFile: EncoderFixtures.tokenizerFile("tokenizer.json"), encoding: .utf8)
        for (token, replacement) in [("<image>", "<picture>"), ("<fake_token_around_image>", "<fake>")] {
            let edited = text.replacingOccurrences(of: "\"content\":\"\(token)\"", with: "\"content\":\"\(replacement)\"")
            XCTAssertNotEqual(edited, text)
            XCTAssertThrowsError(try SentencePieceBPETokenizer(json: Array(edited.utf8), path: "edited.json")) { error in
                XCTAssertEqual(error as? TokenizerError, .missingToken(path: "edited.json", token: token))
            }
        }
    }

    /// A small tokenizer.json written here, for the forms the real one does not use.
    static func tiny(merges: String, normalizer: String = "null", preTokenizer: String? = nil, extra: String = "") -> [UInt8] {
        let pre = preTokenizer ?? #"{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":false}"#
        let json = """
        {"version":"1.0","added_tokens":[{"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true},
         {"id":9,"content":"<fake_token_around_image>","special":true},{"id":10,"content":"<image>","special":true}\(extra)],
         "normalizer":\(normalizer),"pre_tokenizer":\(pre),
         "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
           "special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
         "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"}]},
         "model":{"type":"BPE","dropout":null,"unk_token":"<unk>","byte_fallback":false,
           "vocab":{"<unk>":0,"<s>":1,"▁":2,"a":3,"b":4,"▁a":5,"ab":6,"▁ab":7,"c":8},"merges":\(merges)}}
        """
        return Array(json.utf8)
    }

    func testMergeFormsAgree() throws {
        let strings = try SentencePieceBPETokenizer(json: Self.tiny(merges: #"["▁ a","a b","▁a b"]"#), path: "s.json")
        let arrays = try SentencePieceBPETokenizer(json: Self.tiny(merges: #"[["▁","a"],["a","b"],["▁a","b"]]"#), path: "a.json")
        for text in ["ab", "abab", " ab c", "a<image>b", "cab", "", "x"] {
            XCTAssertEqual(try strings.encode(text), try arrays.encode(text), text)
        }
        XCTAssertEqual(try strings.encode("ab"), [1, 7])          // ▁ a -> ▁a, then ▁a b -> ▁ab
        XCTAssertEqual(try strings.encode("cab"), [1, 2, 8, 6])   // ▁ c a b: "a b" ranks below nothing else
        XCTAssertEqual(try strings.encode("a<image>b"), [1, 5, 10, 4])  // prepend on the first piece only
        XCTAssertEqual(try strings.encode("x"), [1, 2, 0])        // no byte fallback: <unk>
    }

    func testLegacyNormalizerForm() throws {
        // The older Llama/Mistral tokenizer.json: normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer;
        // every piece between added tokens gets the prefix.
        let tok = try SentencePieceBPETokenizer(json: Self.tiny(
            merges: #"["▁ a","a b","▁a b"]"#,
            normalizer: #"{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]}"#,
            preTokenizer: "null"), path: "legacy.json")
        XCTAssertEqual(try tok.encode("a<image>b"), [1, 5, 10, 2, 4])
    }

    func testMalformedTokenizersAreErrors() throws {
        let good = String(decoding: Self.tiny(merges: #"["▁ a"]"#), as: UTF8.self)
        func check(_ json: String, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try SentencePieceBPETokenizer(json: Array(json.utf8), path: "bad.json"), what, file: file, line: line) { e in
                XCTAssertTrue(e is TokenizerError, "\(what): \(e)", file: file, line: line)
                XCTAssertTrue("\(e)".contains("bad.json"), "\(what): \(e)", file: file, line: line)
            }
        }
        check("", "empty")
        check("[]", "not an object")
        check(String(good.prefix(good.count / 2)), "truncated")
        check(String(repeating: "[", count: 100_000), "nesting bomb")
        check(good.replacingOccurrences(of: #""type":"BPE""#, with: #""type":"Unigram""#), "unknown model")
        check(good.replacingOccurrences(of: #""type":"Metaspace""#, with: #""type":"ByteLevel""#), "unknown pre-tokenizer")
        check(good.replacingOccurrences(of: #""type":"Fuse""#, with: #""type":"WordPiece""#), "unknown decoder")
        check(good.replacingOccurrences(of: #""normalizer":null"#, with: #""normalizer":{"type":"NFKC"}"#), "unknown normalizer")
        check(good.replacingOccurrences(of: #""TemplateProcessing""#, with: #""RobertaProcessing""#), "unknown post-processor")
        check(good.replacingOccurrences(of: #"["▁ a"]"#, with: #"["▁ z"]"#), "merge of an unknown token")
        check(good.replacingOccurrences(of: #"["▁ a"]"#, with: #"["b c"]"#), "merge result not in the vocabulary")
        check(good.replacingOccurrences(of: #"["▁ a"]"#, with: #"[["▁"]]"#), "merge pair of one")
        check(good.replacingOccurrences(of: #""c":8"#, with: #""c":-8"#), "negative id")
        check(good.replacingOccurrences(of: #""c":8"#, with: #""c":"8""#), "string id")
        check(good.replacingOccurrences(of: #""dropout":null"#, with: #""dropout":0.1"#), "dropout")
        check(good.replacingOccurrences(of: #""vocab":{"#, with: #""vocab":{"a":3,"#), "duplicate vocab entry")
        XCTAssertThrowsError(try SentencePieceBPETokenizer(path: "/nonexistent/tokenizer.json")) { e in
            XCTAssertTrue("\(e)".contains("/nonexistent/tokenizer.json"))
        }
    }
}
