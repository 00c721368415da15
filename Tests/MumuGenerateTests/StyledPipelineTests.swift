import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuGenerate
import MumuMerge
import MumuSampler
import MumuStyles
import MumuTensor

/// Styles on the resident tiny pipeline against diffusers (Fixtures/generate/lora.safetensors: the euler case with
/// a random kohya LoRA on the UNet and both text encoders fused in at scale 0.8; scripts/gen_fixtures_generate.py).
/// Tolerances as GenerateFixtures.
final class StyledPipelineTests: XCTestCase {
    static var loraPath: String { DecoderFixtures.generate.appendingPathComponent("tiny-lora.safetensors").path }

    /// A temporary registry holding the fixture LoRA as style "tiny-lora" (default strength 0.8), registered against
    /// a single sgm file of the tiny pipeline (a LoRA style records its base).
    static func registry(home: String? = nil) throws -> StyleRegistry {
        let home = try home ?? makeTemporaryURL("decoder").path
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let registry = try StyleRegistry(home: home)
        let base = home + "/tiny-sdxl.safetensors"
        try writeSubset(of: try DecoderCheckpoint(path: DecoderFixtures.pipeline).view.source, to: base)
        var request = StyleAddRequest(name: "tiny-lora", from: loraPath)
        request.base = base
        request.strength = 0.8
        try registry.add(request)
        return registry
    }

    func loraCase() throws -> (GenerationSettings, [String: Tensor]) {
        let c = try GenerateFixtures.cases().first { $0["name"] as? String == "lora" }!
        return (GenerateFixtures.settings(c), try readTensors(DecoderFixtures.generate.appendingPathComponent("lora.safetensors").path))
    }

    func render(_ styled: StyledPipeline, _ s: GenerationSettings) throws -> Tensor {
        let cond = try styled.pipeline.encode(s.prompt).conditioning
        return try styled.pipeline.denoise(s, cond: cond, uncond: nil)
    }

    /// Kept unmerged (low-rank adapters), the LoRA gives diffusers' fused image; taken off, the base image comes back
    /// exactly.
    func testLoraUnmergedMatchesDiffusersAndRestores() throws {
        let (s, want) = try loraCase()
        let styled = try StyledPipeline(checkpoint: DecoderCheckpoint(path: DecoderFixtures.pipeline))
        let base = try render(styled, s)
        let plugin = try Self.registry().plugin("tiny-lora", baseSHA256: nil)
        let applied = try styled.apply(plugin)
        XCTAssertEqual(applied.mode, .lowRank)
        XCTAssertTrue(applied.touchesText)
        XCTAssertEqual(applied.strength, 0.8)
        XCTAssertGreaterThan(applied.changed, 200)
        try GenerateFixtures.compare(try render(styled, s), styled.pipeline, want, "lora (unmerged)", images: 1)
        try styled.restore()
        XCTAssertNil(styled.current)
        XCTAssertEqual(try render(styled, s), base)
    }

    /// Patched into the weights instead (the route of full, delta and recipe styles), the same image; restoring
    /// puts the base back bit for bit. A patched tensor is stored in the base's dtype (f16 here), so this route
    /// carries f16 rounding of W + dW (latents 4e-2 from the f32 reference, against 7e-5 unmerged).
    func testLoraPatchedMatchesDiffusersAndRestores() throws {
        let (s, want) = try loraCase()
        let styled = try StyledPipeline(checkpoint: DecoderCheckpoint(path: DecoderFixtures.pipeline))
        let base = try render(styled, s)
        let plugin = try Self.registry().plugin("tiny-lora", baseSHA256: nil)
        let patch = try plugin.apply(to: styled.resident, strength: 0.8)
        XCTAssertGreaterThan(styled.resident.patched.count, 200)
        // Every module of the LoRA lands on a resident tensor (UNet, CLIP-L, bigG).
        let set = try LoraPatchSet(source: try ModelFile.open(Self.loraPath).source, target: styled.resident.infos)
        XCTAssertEqual(set.unmatchedModules, [])
        XCTAssertTrue(styled.resident.patched.contains { $0.hasPrefix("conditioner.embedders.1.model.") }, "bigG patched")
        try GenerateFixtures.compare(try render(styled, s), styled.pipeline, want, "lora (patched)", images: 1)
        try patch.restore(styled.resident)
        XCTAssertTrue(styled.resident.patched.isEmpty)
        XCTAssertEqual(try render(styled, s), base)
    }

    /// bf16 weights: patching repacks in place, and restoring gives the same packed bits (the same image).
    func testBF16PatchRestoresExactly() throws {
        var (s, _) = try loraCase()
        s.steps = 2
        let styled = try StyledPipeline(checkpoint: DecoderCheckpoint(path: DecoderFixtures.pipeline), precision: .bf16)
        let base = try render(styled, s)
        let plugin = try Self.registry().plugin("tiny-lora", baseSHA256: nil)
        let patch = try plugin.apply(to: styled.resident, strength: 0.8)
        let patched = try render(styled, s)
        XCTAssertGreaterThan(zip(patched.data, base.data).map { abs($0 - $1) }.max()!, 0.1)
        try patch.restore(styled.resident)
        XCTAssertEqual(try render(styled, s), base)
    }
}
