import Foundation
import MumuGenerate
import MumuMerge
import MumuSampler
import MumuStyles
import MumuTestSupport
import XCTest

/// The shapes world's shipped models (models/shapes, issue 14) through mumu's own pipeline: held-out prompts
/// (scene seeds 10^9 + i, never trained on; noise seed 10^9 + i), 64x64, 20 steps euler, cfg 7, checked by the
/// Swift port of world.py's checker (colors and masks, no network). The full figures on 200 prompts are
/// scripts/eval_world.py's (docs/world-models.md); these tests run a few of the fixture prompts, with bounds set
/// from what eval_world.py measured on the same prompts and seeds (stated per test).
final class WorldSemanticTests: XCTestCase {
    static let prompts = 12

    static func render(_ pipe: SDXLPipeline, _ scene: World.Scene) throws -> RGBImage {
        var s = GenerationSettings(prompt: scene.caption)
        s.width = 64; s.height = 64; s.steps = 20; s.cfg = 7; s.seed = UInt64(scene.seed)
        let cond = try pipe.encode(s.prompt).conditioning
        let pixels = SDXLPipeline.rgbBytes(try pipe.decode(try pipe.denoise(s, cond: cond, uncond: nil)))[0]
        return RGBImage(width: 64, height: 64, pixels: pixels)
    }

    /// The base's images of the fixture scenes, rendered once for every test that looks at them.
    static let baseImages = Result { () throws -> [RGBImage] in
        let pipe = try SDXLPipeline(checkpoint: DecoderCheckpoint(path: try model("base.safetensors")))
        return try World.load().scenes.map { try render(pipe, $0) }
    }

    /// A shipped model, checked against models/shapes/SHA256SUMS (a missing or damaged file fails the test with
    /// the command that rebuilds it).
    static func model(_ name: String) throws -> String {
        try ShippedModels(folder: World.models.path).path(name)
    }

    /// The base draws the named colors at the named positions, well above chance: on the 24 fixture prompts (8 each
    /// of one, two and three shapes) its images pass the checker for their own prompts far more often than for
    /// other prompts with as many shapes (the same images checked against prompts 3, 6 and 9 places on: what
    /// passes by chance, as a background or a blob happening to match). Measured here on the step-14,000 base with
    /// the run-17 VAE: 44 of 48 shapes against 5.0 by chance (the run-15 and run-12 VAEs 44, the run-8 VAE 42; the
    /// step-7,600 base: 39); scripts/eval_world.py on 200 prompts: 92.5% (the run-15 VAE 93.2%, the run-12 VAE 93.0%,
    /// the run-8 VAE 91.5%; the issue's floor is 90%; the step-7,600 base 76.7%; docs/world-models.md; the step-3,600 base passed
    /// 15 of 48 here and 28.1% there). The bound (38, 79%) sits four shapes below the measured figure, so a rounding
    /// difference cannot flip it, while a base that lost a tenth of its accuracy, or ignored its prompt (passing at
    /// the chance rate), fails.
    func testBasePutsColorsWherePromptsSay() throws {
        guard try ShippedModels(folder: World.models.path).sums["base.safetensors"] != nil else {
            throw XCTSkip("models/shapes does not ship base.safetensors yet (docs/world-models.md)")
        }
        let (constants, scenes) = try World.load()
        let checker = World.Checker(constants)
        let n = scenes.count
        var passed = 0, shapes = 0, chance = 0, claimed = [String: Int]()
        for (i, (scene, image)) in zip(scenes, try Self.baseImages.get()).enumerated() {
            let r = checker.check(image, scene)
            passed += r.filter { $0 }.count
            shapes += r.count
            for k in [3, 6, 9] { chance += checker.check(image, scenes[(i + k) % n]).filter { $0 }.count }
            for (style, yes) in checker.styles(image, scene) where yes { claimed[style, default: 0] += 1 }
        }
        XCTAssertEqual(shapes, 48)
        print("WorldSemanticTests base: \(passed) of \(shapes) shapes at their color and position, \(Double(chance) / 3) by chance; style claims of 24: \(claimed)")
        XCTAssertGreaterThanOrEqual(passed, 38, "\(passed)/\(shapes) shapes at their named color and position")
        XCTAssertGreaterThanOrEqual(Double(passed), 2 * Double(chance) / 3, "\(passed) against \(Double(chance) / 3) by chance")
        // The base is flat: on 200 prompts every classifier claims at most 1% of its images (the issue's
        // bound is 10%); here striped and outline claim 1 of 24 each with the run-17 VAE (striped 2 with run 15's,
        // none with run 12's; the step-7,600 base: striped 2, pastel 1). The bound: no
        // classifier claims more than 3 (12.5%).
        for (style, count) in claimed { XCTAssertLessThan(count, 4, "\(style) claims \(count) of 24 base images") }
    }

    /// `mumu generate`'s library call at the world's settings (64x64, 20 steps euler, cfg 7, noise seed = the
    /// scene's): one image per style (the base's when `styles` is empty).
    static func generate(_ prompt: String, seed: Int, checkpoint: String, styles: [String] = [], registry: String? = nil,
                         encoder: String? = nil, dir: URL) throws -> [RGBImage] {
        var s = GenerationSettings(prompt: prompt)
        s.width = 64; s.height = 64; s.steps = 20; s.cfg = 7; s.seed = UInt64(seed)
        var r = GenerateRequest(settings: s, output: dir.appendingPathComponent("\(seed).png").path)
        r.checkpoint = checkpoint
        r.styles = styles.map { StyleChoice(name: $0) }
        r.registryHome = registry
        r.encoder = encoder
        r.workingDirectory = World.fixtures.path
        r.overwrite = true
        let report = try GenerateJob(r).run()
        return try report.images.map { try PNG.read($0.path).image }
    }

    /// The first `count` fixture prompts' images rendered under a shipped style (its LoRA, added to a fresh registry
    /// as `mumu styles add` does); nil when the style does not ship.
    static func styleImages(_ style: String, count: Int) throws -> [(scene: World.Scene, image: RGBImage)]? {
        let shipped = try ShippedModels(folder: World.models.path)
        guard shipped.sums["base.safetensors"] != nil, shipped.sums["\(style).safetensors"] != nil else { return nil }
        let dir = try makeTemporaryURL("world-\(style)")
        let registry = try StyleRegistry(home: dir.appendingPathComponent("registry").path)
        try registry.add(StyleAddRequest(name: style, from: try shipped.path("\(style).safetensors")))
        return try World.load().scenes.prefix(count).map { scene in
            (scene, try generate(scene.caption, seed: scene.seed, checkpoint: try model("base.safetensors"),
                                 styles: [style], registry: registry.home, dir: dir)[0])
        }
    }

    /// How many of the first `count` fixture prompts' images under a shipped style its own classifier claims; nil
    /// when the style does not ship.
    static func styleClaims(_ style: String, count: Int = 6) throws -> Int? {
        guard let rendered = try styleImages(style, count: count) else { return nil }
        let checker = World.Checker(try World.load().constants)
        let claimed = rendered.filter { checker.styles($0.image, $0.scene)[style] == true }.count
        print("WorldSemanticTests \(style): the classifier claims \(claimed) of \(count) images")
        return claimed
    }

    /// The pastel fine-tune (trained as a LoRA, shipped as mumu's rank-8 extraction of it with rank-1 3x3
    /// convolutions and the UNet's embeddings, `lora extract --layers full`) draws in pastel: on 6 held-out prompts
    /// the pastel classifier claims at least 4 of its images (6 here, as the earlier extraction of a full fine-tune);
    /// eval_world.py on 200 prompts: 97% of them (the fine-tune 97%, the base 0%).
    /// Skipped until the style ships.
    func testPastelStyleDrawsInPastel() throws {
        guard let claimed = try Self.styleClaims("pastel") else {
            throw XCTSkip("models/shapes does not ship the pastel fine-tune yet (docs/world-models.md)")
        }
        XCTAssertGreaterThanOrEqual(claimed, 4, "the pastel classifier claims \(claimed) of 6 images")
    }

    /// The outline fine-tune (trained as a LoRA; its rank-8 extraction, 3x3 convolutions rank 1, with the UNet's
    /// embeddings, unclamped) draws hollow shapes: on 12 held-out prompts the outline classifier claims 9 of its
    /// images here (the earlier LoRA too), where it claims 1 of the base's 24 (testBasePutsColorsWherePromptsSay).
    /// eval_world.py with the run-17 VAE on 200 prompts: 87.5%, as its fine-tune (the base 0.5%), below the issue's
    /// 90%: large rings and small stars come out hollow in 40% (docs/world-models.md). The bound (6) leaves three
    /// images of margin and fails a LoRA that changed nothing.
    func testOutlineStyleDrawsHollowShapes() throws {
        guard let claimed = try Self.styleClaims("outline", count: 12) else {
            throw XCTSkip("models/shapes does not ship the outline fine-tune yet (docs/world-models.md)")
        }
        XCTAssertGreaterThanOrEqual(claimed, 6, "the outline classifier claims \(claimed) of 12 images")
    }

    /// The striped fine-tune (trained as a LoRA; its rank-8 extraction, 3x3 convolutions rank 1, with the UNet's
    /// embeddings) fills shapes with stripes. Inside the shapes of 12 held-out prompts' images (world.py's
    /// interior_fill: pixels near the background's color among the shape's interior), the background shows through
    /// more under the striped LoRA than in the base's images of the same prompts: measured here 0.389 against 0.071
    /// (the share of interior pixels at the background's color; the earlier, clamped extraction of a 1e-3 LoRA:
    /// 0.289). eval_world.py on 200 prompts: 68.5% striped images, as its fine-tune (the base 0.5%), below the
    /// issue's 90% (docs/world-models.md). The bound (0.1 above the base) is about a third of the measured gap: a
    /// LoRA that changed nothing fails it.
    func testStripedStyleFillsShapesWithStripes() throws {
        guard let rendered = try Self.styleImages("striped", count: 12) else {
            throw XCTSkip("models/shapes does not ship the striped fine-tune yet (docs/world-models.md)")
        }
        let checker = World.Checker(try World.load().constants)
        func background(_ images: [(World.Scene, RGBImage)]) -> Double {
            let fills = images.flatMap { checker.interiorFill($0.1, $0.0).map(\.1) }
            return fills.reduce(0, +) / Double(max(fills.count, 1))
        }
        let striped = background(rendered.map { ($0.scene, $0.image) })
        let base = background(Array(zip(rendered.map(\.scene), try Self.baseImages.get())))
        print("WorldSemanticTests striped: background inside the shapes \(striped), the base's \(base)")
        XCTAssertGreaterThanOrEqual(striped, base + 0.1, "background inside the shapes: striped \(striped), base \(base)")
    }

    /// A merge of the two style fine-tunes at 0.5 (outline and pastel baked into the base, then a weighted sum: the
    /// recipe `mumu demo` runs) moves the images toward both styles: on the 24 fixture prompts the outline and
    /// pastel classifiers claim 9 and 9 of its images against the base's 1 and 0, both rendered here (the unclamped
    /// extractions of the LoRA-trained styles, outline at lr 3e-3; the earlier clamped ones: 8 and 9; the extractions of the full fine-tunes with the run-15 VAE: 5 and 9 against 0 and 0;
    /// with the run-12 VAE and the step-7,600 pastel fine-tune: 5 and 7; with the run-8 VAE and the earlier outline LoRA: 4
    /// and 7; on the step-7,600 base: 3 and 6 against 0 and 1). Weak: half of each style is half as strong. The
    /// bounds (4 and 5 more than the base) leave four images of margin each.
    func testMergeOfTwoStylesMovesTowardBoth() throws {
        let shipped = try ShippedModels(folder: World.models.path)
        guard ["base", "outline", "pastel"].allSatisfy({ shipped.sums["\($0).safetensors"] != nil }) else {
            throw XCTSkip("models/shapes does not ship the outline and pastel fine-tunes yet (docs/world-models.md)")
        }
        let dir = try makeTemporaryURL("world-merge")
        let recipe = dir.appendingPathComponent("outline-pastel.yaml").path
        try """
        version: 1
        models: {base: \(try Self.model("base.safetensors"))}
        merge:
          method: weighted_sum
          a: {method: lora, model: base, lora: \(try shipped.path("outline.safetensors"))}
          b: {method: lora, model: base, lora: \(try shipped.path("pastel.safetensors"))}
          alpha: 0.5
        """.write(toFile: recipe, atomically: true, encoding: .utf8)
        let merged = dir.appendingPathComponent("outline-pastel.safetensors").path
        let plan = try MergePlan(recipe: try Recipe.load(path: recipe))
        _ = try MergeRunner.run(plan, to: merged, overwrite: true, hashes: try MergeMetadata.inputHashes(plan))
        let (constants, scenes) = try World.load()
        let checker = World.Checker(constants)
        var claims = [String: (base: Int, merged: Int)]()
        for (scene, image) in zip(scenes, try Self.baseImages.get()) {
            let base = checker.styles(image, scene)
            let merge = checker.styles(try Self.generate(scene.caption, seed: scene.seed, checkpoint: merged, dir: dir)[0], scene)
            for style in ["outline", "pastel"] {
                claims[style, default: (0, 0)].base += base[style] == true ? 1 : 0
                claims[style, default: (0, 0)].merged += merge[style] == true ? 1 : 0
            }
        }
        print("WorldSemanticTests merge of outline and pastel at 0.5, classifier claims of 24 (base, merged): \(claims)")
        let (outline, pastel) = (claims["outline"]!, claims["pastel"]!)
        XCTAssertGreaterThanOrEqual(outline.merged, outline.base + 4, "outline claims \(outline.merged) of 24 merged images, \(outline.base) base images")
        XCTAssertGreaterThanOrEqual(pastel.merged, pastel.base + 5, "pastel claims \(pastel.merged) of 24 merged images, \(pastel.base) base images")
    }

    /// The tiny MUMU draws a prompt image's color where the prompt puts it: the replace form (the first shape's
    /// crop in place of its size, color and shape words; docs/world.md) on 12 held-out prompts, through the Swift
    /// encoder, connector and decoder, far more often than by chance (the same images checked against the first
    /// shape of prompts 3, 6 and 9 places on). Measured with the shipped MUMU (trained 3,000 more steps against
    /// the step-14,000 base, to step 9,000) and the run-17 VAE: 12 of 12 against 1.0 by chance (the run-15 VAE 12,
    /// the run-12 VAE 11, the run-8 VAE 10; the step-6,000 MUMU trained against the step-7,600 base: 9 of 12); on 200
    /// prompts (scripts/eval_world.py) 91% (the run-15 VAE 90%, the run-12 VAE 91%, the run-8 VAE 86%; the step-6,000 MUMU: 79%), the issue's
    /// floor 80% (docs/world-models.md). Bound: 9 of 12. Skipped until the tiny MUMU ships.
    func testMumuDrawsThePromptImagesColor() throws {
        let shipped = try ShippedModels(folder: World.models.path)
        guard shipped.sums["mumu-decoder.safetensors"] != nil else {
            throw XCTSkip("models/shapes does not ship the tiny MUMU yet (docs/world-models.md)")
        }
        let (constants, scenes) = try World.load()
        let checker = World.Checker(constants)
        let dir = try makeTemporaryURL("world-mumu")
        let decoder = try Self.model("mumu-decoder.safetensors"), encoder = try shipped.folderPath("encoder")
        var first = 0, chance = 0
        for (i, scene) in scenes.prefix(Self.prompts).enumerated() {
            let image = try Self.generate(scene.replace, seed: scene.seed, checkpoint: decoder, encoder: encoder, dir: dir)[0]
            first += checker.check(image, scene)[0] ? 1 : 0
            for k in [3, 6, 9] { chance += checker.check(image, scenes[(i + k) % scenes.count])[0] ? 1 : 0 }
        }
        print("WorldSemanticTests MUMU: \(first) of 12 prompt images' colors at their position, \(Double(chance) / 3) by chance")
        XCTAssertGreaterThanOrEqual(first, 9, "\(first)/12 prompt images' colors drawn at their position")
        XCTAssertGreaterThanOrEqual(Double(first), 2 * Double(chance) / 3, "\(first) against \(Double(chance) / 3) by chance")
    }
}
