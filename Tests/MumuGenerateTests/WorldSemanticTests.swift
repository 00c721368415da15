import Foundation
import MumuGenerate
import MumuSampler
import MumuTestSupport
import XCTest

/// The shapes world's shipped models (models/shapes, issue 14) through mumu's own pipeline: held-out prompts
/// (scene seeds 10^9 + i, never trained on; noise seed 10^9 + i), 64x64, 20 steps euler, cfg 7, checked by the
/// Swift port of world.py's checker (colors and masks, no network). The full figures on 200 prompts are
/// scripts/eval_world.py's (docs/world-models.md); these tests run the first 12 fixture prompts (4 each of one,
/// two and three shapes), so their thresholds sit below the 200-prompt figures by the spread a 12-prompt sample
/// shows (stated per test).
final class WorldSemanticTests: XCTestCase {
    static let prompts = 12

    static func render(_ pipe: SDXLPipeline, _ scene: World.Scene) throws -> RGBImage {
        var s = GenerationSettings(prompt: scene.caption)
        s.width = 64; s.height = 64; s.steps = 20; s.cfg = 7; s.seed = UInt64(scene.seed)
        let cond = try pipe.encode(s.prompt).conditioning
        let pixels = SDXLPipeline.rgbBytes(try pipe.decode(try pipe.denoise(s, cond: cond, uncond: nil)))[0]
        return RGBImage(width: 64, height: 64, pixels: pixels)
    }

    /// A shipped model, checked against models/shapes/SHA256SUMS (a missing or damaged file fails the test with
    /// the command that rebuilds it).
    static func model(_ name: String) throws -> String {
        try ShippedModels(folder: World.models.path).path(name)
    }

    /// The base draws each named color at its named position. Skipped until models/shapes ships the base (its
    /// training run is in progress: docs/world-models.md); once SHA256SUMS lists it, a missing file fails.
    func testBasePutsColorsWherePromptsSay() throws {
        guard try ShippedModels(folder: World.models.path).sums["base.safetensors"] != nil else {
            throw XCTSkip("models/shapes does not ship base.safetensors yet (docs/world-models.md)")
        }
        let (constants, scenes) = try World.load()
        let checker = World.Checker(constants)
        let pipe = try SDXLPipeline(checkpoint: DecoderCheckpoint(path: try Self.model("base.safetensors")))
        var passed = 0, shapes = 0, styled = 0
        for scene in scenes.prefix(Self.prompts) {
            let image = try Self.render(pipe, scene)
            let r = checker.check(image, scene)
            passed += r.filter { $0 }.count
            shapes += r.count
            styled += checker.styles(image, scene).values.filter { $0 }.count
        }
        XCTAssertEqual(shapes, 24)
        // Provisional: the 90% less a 12-prompt sample's spread. To be set from the base's measured
        // 200-prompt figure (docs/world-models.md) when the base ships; until then the test skips.
        XCTAssertGreaterThanOrEqual(passed, 18, "\(passed)/\(shapes) shapes at their named color and position")
        // The base is flat: no style classifier claims more than one of its 12 images.
        XCTAssertLessThanOrEqual(styled, 1)
    }
}
