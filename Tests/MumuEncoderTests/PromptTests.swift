import Foundation
import MumuEncoder
import XCTest

final class PromptTests: XCTestCase {
    func testParsing() throws {
        let p = try MultimodalPrompt(parsing: "a <image:man.jpg> man and his <image: /abs/dog.png > dog", workingDirectory: "/work/dir")
        XCTAssertEqual(p.pieces, [
            .text("a "), .image(path: "/work/dir/man.jpg", written: "man.jpg"), .text(" man and his "),
            .image(path: "/abs/dog.png", written: "/abs/dog.png"), .text(" dog"),
        ])
        XCTAssertEqual(p.imagePaths, ["/work/dir/man.jpg", "/abs/dog.png"])
        XCTAssertEqual(try MultimodalPrompt(parsing: "<image:../x.png>", workingDirectory: "/a/b").imagePaths, ["/a/x.png"])
        XCTAssertEqual(try MultimodalPrompt(parsing: "plain", workingDirectory: "/").pieces, [.text("plain")])
        XCTAssertEqual(try MultimodalPrompt(parsing: "", workingDirectory: "/").pieces, [])
        XCTAssertFalse(try MultimodalPrompt(parsing: "<image> <img:x>", workingDirectory: "/").hasImages)
        XCTAssertThrowsError(try MultimodalPrompt(parsing: "日本 <image:a.png", workingDirectory: "/")) { e in
            XCTAssertEqual(e as? PromptError, .unclosedImage(position: 3, prompt: "日本 <image:a.png"))
            XCTAssertTrue("\(e)".contains("character 3"))
        }
        XCTAssertThrowsError(try MultimodalPrompt(parsing: "x <image: >", workingDirectory: "/")) { e in
            XCTAssertEqual(e as? PromptError, .emptyImagePath(position: 2, prompt: "x <image: >"))
        }
    }

    /// Prompts with 0, 1 and 3 images against transformers 5's Idefics2Processor (text path) ids.
    func testTokensEqualIdefics2Processor() throws {
        let tok = try TokenizerTests.shared.get()
        let prompts = try XCTUnwrap(EncoderFixtures.json(EncoderFixtures.tokenizerFile("prompts.json")).arrayValue)
        var byImages = [Int: Int]()
        for entry in prompts {
            let text = try XCTUnwrap(entry["prompt"]?.stringValue)
            let counts = try XCTUnwrap(entry["counts"]?.arrayValue).map { $0.intValue! }
            let expected = try XCTUnwrap(entry["ids"]?.arrayValue).map { $0.intValue! }
            let prompt = try MultimodalPrompt(parsing: text, workingDirectory: "/tmp")
            XCTAssertEqual(prompt.imagePaths.count, counts.count, text)
            XCTAssertEqual(try prompt.tokens(tokenizer: tok, imagePatchCounts: counts), expected, text)
            byImages[counts.count, default: 0] += 1
        }
        XCTAssertEqual(Set(byImages.keys), [0, 1, 3])
    }

    func testDifferentCountsPerImage() throws {
        let tok = try TokenizerTests.shared.get()
        let prompt = try MultimodalPrompt(parsing: "a <image:a.png> and <image:b.png><image:c.png>x", workingDirectory: "/")
        let f = "<fake_token_around_image>", i = "<image>"
        let text = try prompt.expandedText(imagePatchCounts: [2, 1, 3])
        XCTAssertEqual(text, "a \(f)\(i)\(i)\(f) and \(f)\(i)\(f)\(i)\(i)\(i)\(f) x")
        let ids = try prompt.tokens(tokenizer: tok, imagePatchCounts: [2, 1, 3])
        XCTAssertEqual(ids, try tok.encode(text))
        XCTAssertEqual(ids.filter { $0 == tok.imageTokenId }.count, 6)
        XCTAssertEqual(ids.first, 1)
    }

    func testBadUses() throws {
        let tok = try TokenizerTests.shared.get()
        let one = try MultimodalPrompt(parsing: "a <image:a.png>", workingDirectory: "/")
        XCTAssertThrowsError(try one.tokens(tokenizer: tok, imagePatchCounts: [])) { e in
            XCTAssertEqual(e as? PromptError, .imageCountMismatch(images: 1, counts: 0))
        }
        XCTAssertThrowsError(try one.tokens(tokenizer: tok, imagePatchCounts: [0]))
        for text in ["a <image> b", "x<fake_token_around_image>"] {
            let p = try MultimodalPrompt(parsing: text, workingDirectory: "/")
            XCTAssertThrowsError(try p.tokens(tokenizer: tok, imagePatchCounts: [])) { e in
                guard case .literalSpecialToken? = e as? PromptError else { return XCTFail("\(e)") }
            }
        }
    }
}
