import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuGenerate
import MumuSampler
import MumuStyles
import MumuTensor

/// `mumu generate` as a library call on the tiny pipeline: files, infotext, styles, grid, conditioning files and the
/// checks made before any model is loaded.
final class GenerateJobTests: XCTestCase {
    func request(_ dir: URL, _ name: String = "out.png") -> GenerateRequest {
        var s = GenerationSettings(prompt: "a watercolor fox, snow at dusk")
        s.width = 64; s.height = 64; s.steps = 4; s.cfg = 5; s.seed = 42
        var r = GenerateRequest(settings: s, output: dir.appendingPathComponent(name).path)
        r.checkpoint = DecoderFixtures.pipeline
        r.registryHome = dir.appendingPathComponent("registry").path
        r.version = "mumu test"
        return r
    }

    /// The written PNG is diffusers' image (f32) and its infotext parses with A1111's rules back to the settings.
    func testWritesDiffusersImageWithInfotext() throws {
        let dir = try makeTemporaryURL("decoder")
        var r = request(dir)
        r.settings.negativePrompt = ""
        let report = try GenerateJob(r).run()
        XCTAssertEqual(report.images.map(\.path), [r.output!])
        let (image, text) = try PNG.read(r.output!)
        let want = try readTensors(DecoderFixtures.generate.appendingPathComponent("euler.safetensors").path)["pixels"]!
        XCTAssertEqual(image.pixels.count, want.count)
        XCTAssertLessThanOrEqual(zip(image.pixels, want.data).map { abs(Int($0) - Int($1)) }.max()!, 2)

        let info = InfoText.parse(try XCTUnwrap(text[InfoText.pngKey]))
        XCTAssertEqual(info.prompt, r.settings.prompt)
        XCTAssertEqual(info["Steps"], "4")
        XCTAssertEqual(info["Sampler"], "Euler")
        XCTAssertEqual(info["CFG scale"], "5.0")
        XCTAssertEqual(info["Seed"], "42")
        XCTAssertEqual(info["Size"], "64x64")
        XCTAssertEqual(info["Model"], "tiny-sdxl")
        XCTAssertEqual(info["Version"], "mumu test")
        XCTAssertEqual(info.parameters.map(\.0).prefix(5), ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed"])
        XCTAssertEqual(info.render(), text[InfoText.pngKey])

        // The same output again is refused before anything is loaded; --force overwrites.
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("already exists (use --force"), "\($0)") }
        r.overwrite = true
        XCTAssertNoThrow(try GenerateJob(r))
    }

    /// Several styles: one file per style, the same seed, a grid; the LoRA style's image is diffusers' LoRA image and
    /// its infotext carries the LoRA's AutoV3 hash.
    func testStylesAndGrid() throws {
        let dir = try makeTemporaryURL("decoder")
        var r = request(dir, "fox.png")
        let registry = try StyledPipelineTests.registry(home: r.registryHome!)
        _ = registry
        r.styles = [StyleChoice(name: "tiny-lora"), try StyleChoice.parse("tiny-lora:0.3")]
        r.grid = true
        let job = try GenerateJob(r)
        let stem = dir.appendingPathComponent("fox").path
        XCTAssertEqual(job.outputs, [stem + "-tiny-lora.png", stem + "-tiny-lora-0.3.png"])
        var steps = 0
        let run = job.start()
        while let event = try run.next() { if case .step = event { steps += 1 } }
        let report = run.report
        XCTAssertEqual(steps, 8)
        XCTAssertEqual(report.grid, stem + "-grid.png")
        let want = try readTensors(DecoderFixtures.generate.appendingPathComponent("lora.safetensors").path)["pixels"]!
        let (image, text) = try PNG.read(job.outputs[0])
        XCTAssertLessThanOrEqual(zip(image.pixels, want.data).map { abs(Int($0) - Int($1)) }.max()!, 2)
        let info = InfoText.parse(text[InfoText.pngKey]!)
        let autoV3 = try HashCache(directory: dir.path).hashes(of: StyledPipelineTests.loraPath).autoV3!
        XCTAssertEqual(info["Lora hashes"], "tiny-lora: \(autoV3)")
        XCTAssertEqual(info["Style strength"], "0.8")
        XCTAssertEqual(InfoText.parse(try PNG.read(job.outputs[1]).text[InfoText.pngKey]!)["Style strength"], "0.3")
        let (sheet, _) = try PNG.read(report.grid!)
        XCTAssertGreaterThan(sheet.width, 2 * 64)
        XCTAssertGreaterThan(sheet.height, 64)
    }

    /// Conditioning from a file (as a MUMU encoder would hand it over) gives the prompt's image exactly.
    func testConditioningFile() throws {
        let dir = try makeTemporaryURL("decoder")
        let pipe = try GenerateFixtures.pipeline()
        let cond = try pipe.encode("a watercolor fox, snow at dusk").conditioning
        let path = dir.appendingPathComponent("cond.safetensors").path
        let infos = [TensorInfo(name: "context", dtype: .f32, shape: cond.context.shape), TensorInfo(name: "pooled", dtype: .f32, shape: cond.pooled.shape)]
        let writer = try SafetensorsWriter(path: path, tensors: infos, overwrite: true)
        for (info, t) in zip(infos, [cond.context, cond.pooled]) {
            try writer.write(TensorData.owned(info, bytes: t.data.withUnsafeBytes { Array($0) }))
        }
        try writer.finish()

        var r = request(dir, "from-text.png")
        _ = try GenerateJob(r).run()
        r.output = dir.appendingPathComponent("from-file.png").path
        r.conditioning = path
        r.settings.prompt = ""
        _ = try GenerateJob(r).run()
        XCTAssertEqual(try PNG.read(r.output!).image, try PNG.read(dir.appendingPathComponent("from-text.png").path).image)

        // Wrong keys and wrong widths are named.
        let bad = dir.appendingPathComponent("bad.safetensors").path
        let badInfo = TensorInfo(name: "context", dtype: .f32, shape: [1, 77, 7])
        let w = try SafetensorsWriter(path: bad, tensors: [badInfo], overwrite: true)
        try w.write(TensorData.owned(badInfo, bytes: [UInt8](repeating: 0, count: 77 * 7 * 4)))
        try w.finish()
        r.conditioning = bad
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("needs tensors `context`"), "\($0)") }
        XCTAssertThrowsError(try ConditioningFile.load(path, contextDim: 2048, pooledDim: 1280)) {
            XCTAssertTrue("\($0)".contains("this UNet takes [B, T, 2048]"), "\($0)")
        }
    }

    func testChecksBeforeLoading() throws {
        let dir = try makeTemporaryURL("decoder")
        var r = request(dir)
        _ = try StyledPipelineTests.registry(home: r.registryHome!)
        r.styles = [StyleChoice(name: "tiny-lroa")]
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("did you mean 'tiny-lora'"), "\($0)") }
        r.styles = []
        r.output = "/nonexistent-folder/x.png"
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("folder '/nonexistent-folder' does not exist"), "\($0)") }
        r.output = dir.appendingPathComponent("x.png").path
        r.settings.height = 60
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("multiples of 8"), "\($0)") }
        r.settings.height = 64
        r.checkpoint = dir.appendingPathComponent("missing.safetensors").path
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("no such file or folder"), "\($0)") }
        XCTAssertThrowsError(try StyleChoice.parse("anime:strong")) { XCTAssertTrue("\($0)".contains("NAME:STRENGTH"), "\($0)") }
        XCTAssertEqual(try StyleChoice.parse("anime:0.5"), StyleChoice(name: "anime", strength: 0.5))
    }

    /// A prompt over 75 tokens is truncated (as diffusers does) and the report says so.
    func testLongPromptIsTruncatedWithANote() throws {
        let dir = try makeTemporaryURL("decoder")
        var r = request(dir)
        r.settings.prompt = Array(repeating: "fox", count: 90).joined(separator: " ")
        r.settings.steps = 1
        let report = try GenerateJob(r).run()
        XCTAssertEqual(report.notes.count, 1)
        XCTAssertTrue(report.notes[0].contains("truncated"), report.notes[0])
    }

    /// A stop (the caller stops calling `next()`, then `stop()`) ends the run before the next step; no file is left
    /// behind, not even a temporary one.
    func testStopLeavesNoFile() throws {
        let dir = try makeTemporaryURL("decoder")
        let run = try GenerateJob(request(dir)).start()
        var steps = 0
        while steps < 2, let event = try run.next() { if case .step = event { steps += 1 } }
        run.stop()
        XCTAssertNil(try run.next())
        XCTAssertEqual(steps, 2)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".png") || $0.contains("mumu-partial") }, [])
    }

    /// Without -o, images get A1111's numbered names in the output folder (counter, seed), continuing after the
    /// files already there, so a second run never overwrites and needs no --force.
    func testNumberedOutputsNeverCollide() throws {
        let dir = try makeTemporaryURL("numbered")
        var r = request(dir)
        r.output = nil
        r.outputFolder = dir.appendingPathComponent("outputs").path
        r.settings.steps = 1
        r.settings.images = 2
        let first = try GenerateJob(r)
        XCTAssertEqual(first.outputs.map { ($0 as NSString).lastPathComponent }, ["00000-42-0.png", "00001-42-1.png"])
        try first.run()
        r.settings.images = 1
        r.settings.seed = 7
        let second = try GenerateJob(r)
        XCTAssertEqual(second.outputs.map { ($0 as NSString).lastPathComponent }, ["00002-7.png"])
        try second.run()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: r.outputFolder).sorted(),
                       ["00000-42-0.png", "00001-42-1.png", "00002-7.png"])
    }

    /// An output that is a folder, or not a PNG, is refused before anything is loaded (not after the render).
    func testBadOutputRefusedBeforeWork() throws {
        let dir = try makeTemporaryURL("bad-output")
        var r = request(dir)
        try FileManager.default.createDirectory(atPath: dir.appendingPathComponent("somedir.png").path, withIntermediateDirectories: true)
        r.output = dir.appendingPathComponent("somedir.png").path
        r.overwrite = true
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("is a folder"), "\($0)") }
        r.output = dir.appendingPathComponent("x.jpg").path
        XCTAssertThrowsError(try GenerateJob(r)) { XCTAssertTrue("\($0)".contains("PNG"), "\($0)") }
    }

    /// Images whose latents hold fewer than 16 values (8x8 and 16x8 pixels: 4 and 8 latent values) take torch's
    /// serial noise path; they render instead of crashing.
    func testTinyImages() throws {
        let dir = try makeTemporaryURL("tiny-images")
        for (w, h) in [(8, 8), (16, 8)] {
            var r = request(dir, "tiny-\(w)x\(h).png")
            r.settings.width = w; r.settings.height = h; r.settings.steps = 2
            r.settings.sampler = .eulerAncestral
            let report = try GenerateJob(r).run()
            let (image, _) = try PNG.read(report.images[0].path)
            XCTAssertEqual([image.width, image.height], [w, h])
        }
    }

    /// `--vae-tile`: the job decodes in tiles (VAETests holds the tiled decode against diffusers' tiled_decode)
    /// and records the tiling in the infotext.
    func testTiledVAEDecode() throws {
        let dir = try makeTemporaryURL("vae-tile")
        var r = request(dir, "whole.png")
        r.settings.width = 96; r.settings.height = 80; r.settings.steps = 2
        let whole = try PNG.read(try GenerateJob(r).run().images[0].path).image
        r.output = dir.appendingPathComponent("tiled.png").path
        r.vaeTiling = try VAE.Tiling(tile: 32)
        let report = try GenerateJob(r).run()
        let (tiled, text) = try PNG.read(report.images[0].path)
        let info = InfoText.parse(try XCTUnwrap(text[InfoText.pngKey]))
        XCTAssertEqual(info["VAE tile"], "32")
        XCTAssertEqual(info["VAE tile overlap"], "8")
        XCTAssertEqual([tiled.width, tiled.height], [96, 80])
        XCTAssertNotEqual(tiled.pixels, whole.pixels, "the tiles' seams differ from a whole decode")
    }

    /// A LoRA style applies to any checkpoint of its architecture (A1111, ComfyUI): registered against one file, it
    /// renders on a fine-tune of it, and the infotext says which base it was made on.
    func testLoraStyleOnAnotherCheckpoint() throws {
        let dir = try makeTemporaryURL("lora-any-base")
        var r = request(dir)
        let registry = try StyledPipelineTests.registry(home: r.registryHome!)
        _ = registry
        // A "fine-tune": the tiny pipeline with one UNet weight changed, in another file.
        let tuned = try DecoderFixtures.editedFolder("unet/diffusion_pytorch_model.safetensors", tensor: "conv_in.bias") { _, v in
            for i in v.indices { v[i] += 0.01 }
        }
        r.checkpoint = tuned
        r.styles = [StyleChoice(name: "tiny-lora")]
        r.settings.steps = 1
        let report = try GenerateJob(r).run()
        let info = InfoText.parse(report.images[0].infotext)
        XCTAssertEqual(info["Style base"], "tiny-sdxl.safetensors")
        XCTAssertTrue(report.notes.contains { $0.contains("was made on tiny-sdxl.safetensors") }, "\(report.notes)")
    }

    /// `--vae` and `--text-encoders` borrow components: a UNet-only file with the VAE alone (A1111's models/VAE
    /// form: sgm names without first_stage_model.) and the text encoders from a third file renders the same image
    /// as the whole pipeline, and the infotext names the VAE as A1111 does.
    func testBorrowedVAEAndTextEncoders() throws {
        let dir = try makeTemporaryURL("borrow")
        // A synthesized sdxl-tiny (its descriptor gives the VAE's configuration, which a bare VAE file cannot).
        let models = TinyModels(label: "borrow")
        let whole = try models.synth("whole", seed: 5)
        let view = try DecoderCheckpoint(path: whole).view.source
        let unet = dir.appendingPathComponent("unet-only.safetensors").path
        try writeSubset(of: view, to: unet) { $0.hasPrefix("model.diffusion_model.") }
        let texts = dir.appendingPathComponent("texts.safetensors").path
        try writeSubset(of: view, to: texts) { $0.hasPrefix("conditioner.") }
        let vae = dir.appendingPathComponent("sdxl_vae.safetensors").path
        let vaeInfos = view.tensors.filter { $0.name.hasPrefix("first_stage_model.") }
        let stripped = vaeInfos.map { TensorInfo(name: String($0.name.dropFirst("first_stage_model.".count)), dtype: $0.dtype, shape: $0.shape) }
        let writer = try SafetensorsWriter(path: vae, tensors: stripped, overwrite: true)
        for (info, out) in zip(vaeInfos, stripped) {
            let data = try view.tensor(info.name)
            try writer.write(TensorData.owned(out, bytes: withExtendedLifetime(data) { Array(data.bytes) }))
        }
        try writer.finish()

        var r = request(dir, "whole.png")
        r.checkpoint = whole
        r.settings.steps = 2
        try GenerateJob(r).run()
        r.output = dir.appendingPathComponent("borrowed.png").path
        r.checkpoint = unet
        // Without the borrowed parts, the error says what to give.
        XCTAssertThrowsError(try GenerateJob(r).run()) { XCTAssertTrue("\($0)".contains("borrow one from another file (a VAE)"), "\($0)") }
        r.vae = vae
        r.textEncoders = texts
        let report = try GenerateJob(r).run()
        XCTAssertEqual(try PNG.read(r.output!).image, try PNG.read(dir.appendingPathComponent("whole.png").path).image)
        let info = InfoText.parse(report.images[0].infotext)
        XCTAssertEqual(info["VAE"], "sdxl_vae.safetensors")
        XCTAssertEqual(info["VAE hash"]?.count, 10)
    }
}
