import Foundation
import MumuEncoder
import MumuFormats
import MumuSampler
import MumuTensor
import MumuTestSupport
import XCTest

/// MUMU's encoder end to end (prompt with <image:PATH> -> conditioning) against PIL + transformers + the connector
/// in torch (scripts/gen_fixtures_encode.py), on the tiny random Idefics2 with the real Mistral v1 tokenizer.
///
/// Tolerance: 1e-4 of the largest |value| (the bound). The networks alone agree to ~2e-6 (NetworkTests);
/// the pixels are PIL's exactly (ResizeTests) and the ids transformers' (TokenizerTests), so a wrong image size,
/// token or merge order shows as an error of order 1.
final class EncodeTests: XCTestCase {
    static var fixtures: URL { testsFolder.appendingPathComponent("MumuEncoderTests/Fixtures") }

    /// An encoder folder as users have it: the tiny Idefics2 with the tokenizer.json beside it.
    static func encoderFolder() throws -> String {
        let dir = try makeTemporaryURL("encoder").appendingPathComponent("tiny-idefics2")
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("networks/tiny-idefics2"), to: dir)
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("tokenizer/tokenizer.json"),
                                         to: dir.appendingPathComponent("tokenizer.json"))
        return dir.path
    }

    static func cases() throws -> [[String: Any]] {
        let data = try Data(contentsOf: fixtures.appendingPathComponent("encode/cases.json"))
        return (try JSONSerialization.jsonObject(with: data) as! [String: Any])["cases"] as! [[String: Any]]
    }

    func testPromptsWithZeroOneAndThreeImagesMatchReference() throws {
        let encoder = try MultimodalEncoder(folder: try Self.encoderFolder(), imageSize: 56)
        let connector = try MumuConnector(path: Self.fixtures.appendingPathComponent("networks/connector-w96.safetensors").path)
        let cwd = Self.fixtures.appendingPathComponent("encode").path
        for c in try Self.cases() {
            let name = c["name"] as! String
            let want = try readTensors(Self.fixtures.appendingPathComponent("encode/\(name).safetensors").path)
            for (prompt, key) in [(c["prompt"] as! String, ""), (c["negative"] as! String, "negative_")] {
                let encoded = try encoder.encode(try MultimodalPrompt(parsing: prompt, workingDirectory: cwd))
                XCTAssertEqual(encoded.tokens, want[key + "ids"]!.count, "\(name) \(key)tokens")
                let cond = try connector.conditioning(encoded.hidden)
                for (got, ref, what) in [(cond.context, want[key + "context"]!, "context"), (cond.pooled, want[key + "pooled"]!, "pooled")] {
                    let scale = ref.data.map(abs).max()!
                    checkMaxError(got, ref, "\(name) \(key)\(what) (max |x| \(scale))", tolerance: 1e-4 * scale)
                }
            }
        }
    }

    /// Bad prompts are refused with their own message before any network runs.
    func testBadPromptsAndImages() throws {
        let cwd = Self.fixtures.appendingPathComponent("encode").path
        XCTAssertThrowsError(try MultimodalPrompt(parsing: "a <image:a.png", workingDirectory: cwd)) { XCTAssertTrue("\($0)".contains("<image:"), "\($0)") }
        let missing = try MultimodalPrompt(parsing: "a <image:nope.png> dog", workingDirectory: cwd)
        XCTAssertThrowsError(try MultimodalEncoder.prepareImages(missing, imageSize: 56)) { XCTAssertTrue("\($0)".contains("nope.png"), "\($0)") }
        let notImage = try MultimodalPrompt(parsing: "a <image:cases.json> dog", workingDirectory: cwd)
        XCTAssertThrowsError(try MultimodalEncoder.prepareImages(notImage, imageSize: 56)) { XCTAssertTrue("\($0)".contains("cases.json"), "\($0)") }
        // A tokenizer without <image> is named.
        let folder = try Self.encoderFolder()
        let tokPath = folder + "/tokenizer.json"
        var text = try String(contentsOfFile: tokPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "\"<image>\"", with: "\"<picture>\"")
        try text.write(toFile: tokPath, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try MultimodalEncoder(folder: folder, imageSize: 56)) { XCTAssertTrue("\($0)".contains("<image>"), "\($0)") }
        // An SDXL folder is not an encoder.
        XCTAssertThrowsError(try MultimodalEncoder(folder: DecoderFixtures.pipeline)) { XCTAssertTrue("\($0)".contains(DecoderFixtures.pipeline), "\($0)") }
    }
}
