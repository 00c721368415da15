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
/// Tolerance: 1e-4 of the largest |value| (the issue's bound). The networks alone agree to ~2e-6 (NetworkTests);
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

    /// `--encoder-lora`: a PEFT LoRA on the text model and projector (scripts/gen_fixtures_encoder_lora.py), kept
    /// unmerged, equals PEFT's own forward; the same factors under kohya's names with alpha tensors equal it too;
    /// taken off, the encoder is the base again bit for bit. Tolerance as above (1e-4 of max |x|); the LoRA moves
    /// the states by more than their max |x|, so a module missed or scaled wrong fails by far.
    func testEncoderLoraMatchesPEFT() throws {
        let folder = try Self.encoderFolder()
        let lora = Self.fixtures.appendingPathComponent("encode/lora")
        let want = try readTensors(lora.appendingPathComponent("expected.safetensors").path)
        let cwd = Self.fixtures.appendingPathComponent("encode").path
        let prompt = try MultimodalPrompt(parsing: try Self.cases().first { $0["name"] as? String == "one" }!["prompt"] as! String,
                                          workingDirectory: cwd)
        let scale = want["hidden"]!.data.map(abs).max()!
        for file in ["adapter_model.safetensors", "kohya.safetensors"] {
            let encoder = try MultimodalEncoder(folder: folder, imageSize: 56, lora: lora.appendingPathComponent(file).path)
            checkMaxError(try encoder.encode(prompt).hidden, want["hidden"]!, "\(file) (max |x| \(scale))", tolerance: 1e-4 * scale)
            EncoderLora.detach(from: encoder.encoder)
            let base = try encoder.encode(prompt).hidden
            checkMaxError(base, want["hidden_base"]!, "\(file) detached", tolerance: 1e-4 * scale)
            let plain = try MultimodalEncoder(folder: folder, imageSize: 56)
            XCTAssertEqual(base.data, try plain.encode(prompt).hidden.data, "\(file): detached equals never attached")
        }
        let parsed = try EncoderLora.check(path: lora.appendingPathComponent("adapter_model.safetensors").path,
                                           folder: try Idefics2Folder(path: folder))
        XCTAssertEqual(parsed.modules.count, 17)
        XCTAssertEqual(Set(parsed.modules.map(\.scale)), [1.5], "lora_alpha 6 / r 4 from adapter_config.json")
        XCTAssertTrue(parsed.modules.contains { $0.layer == "connector.modality_projection.gate_proj" })
    }

    /// Encoder LoRAs that do not fit are refused before the encoder loads, naming the file and the module.
    func testBadEncoderLoras() throws {
        let folder = try Idefics2Folder(path: try Self.encoderFolder())
        let dir = try makeTemporaryDirectory("encoder-lora")
        func refused(_ tensors: [(String, [Int], [Float])], _ expected: [String], config: String? = nil,
                     file: StaticString = #filePath, line: UInt = #line) throws {
            let sub = dir + "/\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
            let path = sub + "/lora.safetensors"
            try writeTensors(path, tensors)
            if let config { try config.write(toFile: sub + "/adapter_config.json", atomically: true, encoding: .utf8) }
            XCTAssertThrowsError(try EncoderLora.check(path: path, folder: folder), file: file, line: line) { error in
                for text in expected + [config == nil ? path : sub + "/adapter_config.json"] { XCTAssertTrue("\(error)".contains(text), "\(error) lacks \(text)", file: file, line: line) }
            }
        }
        let a = [Float](repeating: 0.1, count: 4 * 64), b = [Float](repeating: 0.1, count: 64 * 4)
        let q = "base_model.model.text_model.layers.0.self_attn.q_proj"
        try refused([("text_model.layers.9.self_attn.q_proj.lora_A.weight", [4, 64], a),
                     ("text_model.layers.9.self_attn.q_proj.lora_B.weight", [64, 4], b)], ["text_model.layers.9.self_attn.q_proj", "names no layer"])
        try refused([(q + ".lora_A.weight", [4, 32], [Float](repeating: 0, count: 128)), (q + ".lora_B.weight", [64, 4], b)],
                    [q, "[64, 32]"])
        try refused([(q + ".lora_A.weight", [4, 64], a)], [q, "no down / up factor pair"])
        try refused([(q + ".lora_A.weight", [4, 64], a), (q + ".lora_B.weight", [64, 4], b), ("extra.bias", [3], [1, 2, 3])],
                    ["extra.bias", "not a LoRA factor"])
        try refused([(q + ".lora_A.weight", [4, 64], a), (q + ".lora_B.weight", [64, 4], b)], ["rank_pattern"],
                    config: #"{"r": 4, "lora_alpha": 8, "rank_pattern": {"q_proj": 8}}"#)
        try refused([("base_model.model.lm_head.lora_A.weight", [4, 64], a), ("base_model.model.lm_head.lora_B.weight", [64, 4], b)],
                    ["no module for the encoder", "lm_head"])
        var nan = a
        nan[5] = .nan
        let path = dir + "/nan.safetensors"
        try writeTensors(path, [(q + ".lora_A.weight", [4, 64], nan), (q + ".lora_B.weight", [64, 4], b)])
        let encoder = try Idefics2Encoder(folder: folder)
        XCTAssertThrowsError(try EncoderLora.attach(path: path, to: encoder)) { XCTAssertTrue("\($0)".contains("nan"), "\($0)") }
        XCTAssertThrowsError(try EncoderLora.check(path: dir + "/none.safetensors", folder: folder)) {
            XCTAssertTrue("\($0)".contains("none.safetensors"), "\($0)")
        }
    }
}
