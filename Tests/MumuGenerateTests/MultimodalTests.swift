import Foundation
import MumuEncoder
import MumuFormats
import MumuGenerate
import MumuSampler
import MumuTensor
import MumuTestSupport
import XCTest

/// Multimodal prompts through `mumu encode` and `mumu generate --encoder` on a tiny mumu-decoder (a synthesized
/// sdxl-tiny UNet and VAE plus the fixture connector of scripts/gen_fixtures_encoder_networks.py), against the
/// conditioning PIL + transformers + torch computed (scripts/gen_fixtures_encode.py).
final class MultimodalTests: XCTestCase {
    static var fixtures: URL { testsFolder.appendingPathComponent("MumuEncoderTests/Fixtures") }
    static var imagesDir: String { fixtures.appendingPathComponent("encode").path }

    /// The Idefics2 fixture folder with its tokenizer.json beside it, and a mumu-decoder with the fixture connector.
    static func setUp() throws -> (encoder: String, decoder: String, dir: URL) {
        let dir = try makeTemporaryURL("multimodal")
        let encoder = dir.appendingPathComponent("tiny-idefics2")
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("networks/tiny-idefics2"), to: encoder)
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("tokenizer/tokenizer.json"),
                                         to: encoder.appendingPathComponent("tokenizer.json"))
        let models = TinyModels(label: "multimodal")
        let sdxl = try SafetensorsFile(path: try models.synth("unet-vae", seed: 3, components: ["unet", "vae"]))
        let connector = try SafetensorsFile(path: fixtures.appendingPathComponent("networks/connector-w96.safetensors").path)
        let decoder = dir.appendingPathComponent("tiny-mumu-decoder.safetensors").path
        let writer = try SafetensorsWriter(path: decoder, tensors: sdxl.tensors + connector.tensors, overwrite: true)
        for info in sdxl.tensors { try writer.write(try sdxl.tensor(info.name)) }
        for info in connector.tensors { try writer.write(try connector.tensor(info.name)) }
        try writer.finish()
        return (encoder.path, decoder, dir)
    }

    static func reference(_ name: String) throws -> [String: Tensor] {
        try readTensors(fixtures.appendingPathComponent("encode/\(name).safetensors").path)
    }

    static func prompt(_ name: String) throws -> (prompt: String, negative: String) {
        let data = try Data(contentsOf: fixtures.appendingPathComponent("encode/cases.json"))
        let cases = (try JSONSerialization.jsonObject(with: data) as! [String: Any])["cases"] as! [[String: Any]]
        let c = cases.first { $0["name"] as? String == name }!
        return (c["prompt"] as! String, c["negative"] as! String)
    }

    /// `mumu encode` writes the reference's conditioning (1e-4 of the largest value, as EncodeTests), the negative
    /// at its own length, and the prompt and image hashes in the metadata.
    func testEncodeWritesTheReferenceConditioning() throws {
        let (encoder, decoder, dir) = try Self.setUp()
        let (prompt, negative) = try Self.prompt("three")
        var request = EncodeJob.Request(prompt: prompt, encoder: encoder, decoder: decoder, output: dir.appendingPathComponent("cond.safetensors").path)
        request.negativePrompt = negative
        request.imageSize = 56
        request.workingDirectory = Self.imagesDir
        let report = try EncodeJob(request).run()
        XCTAssertEqual(report.images.map(\.written), ["b.png", "c.jpg", "a.png", "c.jpg"])
        let got = try readTensors(request.output), want = try Self.reference("three")
        for key in ["context", "pooled", "negative_context", "negative_pooled"] {
            let scale = want[key]!.data.map(abs).max()!
            checkMaxError(got[key]!, want[key]!, "encode \(key)", tolerance: 1e-4 * scale)
        }
        let meta = try SafetensorsFile(path: request.output).metadata
        XCTAssertEqual(meta["mumu_prompt"], prompt)
        XCTAssertTrue(meta["mumu_image_hashes"]?.hasPrefix("b.png: ") ?? false, "\(meta)")
        // The output exists now: refused without --force, before any model loads.
        XCTAssertThrowsError(try EncodeJob(request)) { XCTAssertTrue("\($0)".contains("already exists"), "\($0)") }
    }

    /// `generate --encoder` with a multimodal prompt gives the image `generate --conditioning` gives for the
    /// reference's conditioning (within 2/255: the conditioning agrees to ~1e-5, the sampler is the same code), with
    /// the prompt as written and each image's SHA-256 in the infotext; a negative of another length runs as two
    /// UNet passes.
    func testGenerateWithImagesEqualsConditioningFile() throws {
        let (encoder, decoder, dir) = try Self.setUp()
        let (prompt, negative) = try Self.prompt("one")
        var s = GenerationSettings(prompt: prompt)
        s.negativePrompt = negative
        s.width = 64; s.height = 64; s.steps = 3; s.cfg = 5; s.seed = 11
        var r = GenerateRequest(settings: s, output: dir.appendingPathComponent("mm.png").path)
        r.checkpoint = decoder
        r.encoder = encoder
        r.imageSize = 56
        r.workingDirectory = Self.imagesDir
        r.registryHome = dir.appendingPathComponent("registry").path
        let job = try GenerateJob(r)
        let report = try job.run()
        // Without an encoder precision the encoder runs in generation's (f32 here, as the reference computed it).
        XCTAssertEqual(report.json(job)["encoder_precision"]?.stringValue, "f32")
        XCTAssertEqual(report.json(job)["gemm_path"]?.stringValue, "sgemm", "f32 weights multiply with sgemm")

        let want = try Self.reference("one")
        let condPath = dir.appendingPathComponent("ref-cond.safetensors").path
        try ConditioningFile.write(cond: Conditioning(context: want["context"]!, pooled: want["pooled"]!),
                                   uncond: Conditioning(context: want["negative_context"]!, pooled: want["negative_pooled"]!),
                                   to: condPath, overwrite: true)
        var byFile = r
        byFile.encoder = nil
        byFile.settings.prompt = ""
        byFile.settings.negativePrompt = ""
        byFile.conditioning = condPath
        byFile.output = dir.appendingPathComponent("file.png").path
        try GenerateJob(byFile).run()
        let a = try PNG.read(r.output!).image, b = try PNG.read(byFile.output!).image
        let worst = zip(a.pixels, b.pixels).map { abs(Int($0) - Int($1)) }.max()!
        XCTAssertLessThanOrEqual(worst, 2, "pixels differ by \(worst)/255")

        let info = InfoText.parse(report.images[0].infotext)
        XCTAssertEqual(info.prompt, prompt)
        XCTAssertEqual(info.negativePrompt, negative)
        let sha = try XCTUnwrap(FileManager.default.contents(atPath: Self.imagesDir + "/a.png")).withUnsafeBytes { Hashing.sha256($0) }
        XCTAssertEqual(info["Image hashes"], "a.png: \(sha.prefix(12))")
    }

    /// `--encoder-lora` through both commands: `mumu encode` writes the connector's conditioning of PEFT's hidden
    /// states with the LoRA (scripts/gen_fixtures_encoder_lora.py; 1e-4 of the largest value) and names the LoRA
    /// with its AutoV3 hash in the metadata; `generate` puts the same into the infotext and renders another image
    /// than without it. An encoder LoRA without an encoder is refused.
    func testEncoderLora() throws {
        let (encoder, decoder, dir) = try Self.setUp()
        let lora = Self.fixtures.appendingPathComponent("encode/lora/adapter_model.safetensors").path
        let (prompt, _) = try Self.prompt("one")
        var request = EncodeJob.Request(prompt: prompt, encoder: encoder, decoder: decoder, output: dir.appendingPathComponent("lora-cond.safetensors").path)
        request.imageSize = 56
        request.encoderLora = lora
        request.workingDirectory = Self.imagesDir
        try EncodeJob(request).run()
        let hidden = try readTensors(Self.fixtures.appendingPathComponent("encode/lora/expected.safetensors").path)["hidden"]!
        let connector = try MumuConnector(path: Self.fixtures.appendingPathComponent("networks/connector-w96.safetensors").path)
        let want = try connector.conditioning(hidden), got = try readTensors(request.output)
        for (key, ref) in [("context", want.context), ("pooled", want.pooled)] {
            checkMaxError(got[key]!, ref, "encode --encoder-lora \(key)", tolerance: 1e-4 * ref.data.map(abs).max()!)
        }
        let file = try SafetensorsFile(path: lora)
        let autoV3 = try Hashing.hashes(of: file.file, dataStart: file.header.dataStart).autoV3!
        XCTAssertEqual(try SafetensorsFile(path: request.output).metadata["mumu_encoder_lora"], "adapter_model.safetensors: \(autoV3)")

        var s = GenerationSettings(prompt: prompt)
        s.width = 64; s.height = 64; s.steps = 2; s.cfg = 5; s.seed = 11
        var r = GenerateRequest(settings: s, output: dir.appendingPathComponent("lora.png").path)
        r.checkpoint = decoder
        r.encoder = encoder
        r.encoderLora = lora
        r.imageSize = 56
        r.workingDirectory = Self.imagesDir
        r.registryHome = dir.appendingPathComponent("registry").path
        let report = try GenerateJob(r).run()
        XCTAssertEqual(InfoText.parse(report.images[0].infotext)["Encoder LoRA"], "adapter_model.safetensors: \(autoV3)")
        var plain = r
        plain.encoderLora = nil
        plain.output = dir.appendingPathComponent("plain.png").path
        try GenerateJob(plain).run()
        XCTAssertNotEqual(try PNG.read(r.output!).image.pixels, try PNG.read(plain.output!).image.pixels)
        var noEncoder = plain
        noEncoder.encoder = nil
        noEncoder.settings.prompt = "a red circle"
        noEncoder.encoderLora = lora
        XCTAssertThrowsError(try GenerateJob(noEncoder)) { XCTAssertTrue("\($0)".contains("encoder LoRA"), "\($0)") }
    }

    /// What is missing is said before anything loads: images without an encoder, an encoder without a connector,
    /// a missing image.
    func testMissingPartsAreNamed() throws {
        let (encoder, decoder, dir) = try Self.setUp()
        var s = GenerationSettings(prompt: "a <image:a.png> next to a blue square")
        s.width = 64; s.height = 64; s.steps = 1
        var r = GenerateRequest(settings: s, output: dir.appendingPathComponent("x.png").path)
        r.checkpoint = decoder
        r.workingDirectory = Self.imagesDir
        r.registryHome = dir.appendingPathComponent("registry").path
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("needs MUMU's encoder"), "\($0)") }
        var precisionOnly = r
        precisionOnly.settings.prompt = "a red circle"
        precisionOnly.encoderPrecision = .bf16
        XCTAssertThrowsError(try GenerateJob(precisionOnly)) { XCTAssertTrue("\($0)".contains("encoder precision needs"), "\($0)") }
        r.encoder = encoder
        r.checkpoint = DecoderFixtures.pipeline
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("no MUMU connector"), "\($0)") }
        r.checkpoint = decoder
        r.settings.prompt = "a <image:missing.png> dog"
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("missing.png"), "\($0)") }
        r.settings.prompt = "a <image:a.png dog"
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("<image:"), "\($0)") }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".png") }, [])
    }
}
