import Foundation
import MumuFormats
import MumuSampler
import MumuTensor
import MumuTestSupport
import XCTest

/// The VAE against diffusers' AutoencoderKL (Fixtures/decoder, scripts/gen_fixtures_decoder.py): the tiny SDXL
/// pipeline's VAE (widths [8, 16, 16, 16], 4 groups, f16 weights; references in f32 with exactly those values).
///
/// Tolerance: 1e-4 max abs error. Same weights, both sides in f32: the differences are summation orders
/// (im2col + sgemm vs torch's convolutions, f64 vs f32 GroupNorm statistics) through ~30 layers of O(1)
/// activations, a few 1e-6; a wrong padding, eps, group count or level order is off by 1e-2 or more.
final class VAETests: XCTestCase {
    static let tolerance: Float = 1e-4

    static let decoderFixtures = DecoderFixtures.folder
    static let folder = DecoderFixtures.pipeline
    static let io = try! SafetensorsFile(path: decoderFixtures.appendingPathComponent("vae_io.safetensors").path)
    static let tinyConfig = VAE.Config(blockOutChannels: [8, 16, 16, 16], layersPerBlock: 2, groups: 4)

    static func tensor(_ name: String) throws -> Tensor {
        let data = try io.tensor(name)
        return Tensor(shape: data.info.shape, data: try data.floats())
    }

    /// The tiny checkpoint's VAE alone, as a single sgm-named file (no architecture matches it: no config).
    static func singleFileVAE(in dir: URL) throws -> String {
        let view = try DecoderCheckpoint(path: folder).view.source
        let infos = view.tensors.filter { $0.name.hasPrefix("first_stage_model.") }
        let path = dir.appendingPathComponent("vae.safetensors").path
        let writer = try SafetensorsWriter(path: path, tensors: infos, overwrite: true)
        for info in infos { try writer.write(try view.tensor(info.name)) }
        try writer.finish()
        return path
    }

    func testDecodeMatchesDiffusers() throws {
        let vae = try VAE(checkpoint: try DecoderCheckpoint(path: Self.folder))
        XCTAssertEqual(vae.config, Self.tinyConfig)
        XCTAssertEqual(vae.scalingFactor, 0.13025)
        let latents = try Self.tensor("latents")
        XCTAssertEqual(latents.shape, [1, 4, 8, 6])
        _ = try vae.decode(latents: latents)  // warm-up
        let start = DispatchTime.now().uptimeNanoseconds
        let image = try vae.decode(latents: latents)
        print("VAE decode of 8x6 latents (tiny VAE): \(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6) ms")
        checkMaxError(image, try Self.tensor("decoded"), "VAE decode [1,3,64,48]", tolerance: Self.tolerance)

        // A batch of two decodes each sample as alone.
        var pair = latents
        pair.shape[0] = 2
        pair.data += latents.data.map { -$0 }
        let both = try vae.decode(latents: pair)
        XCTAssertEqual(both.shape, [2, 3, 64, 48])
        let second = try vae.decode(latents: Tensor(shape: latents.shape, data: latents.data.map { -$0 }))
        XCTAssertLessThan(zip(both.data[..<image.count], image.data).map { abs($0 - $1) }.max()!, 1e-5)
        XCTAssertLessThan(zip(both.data[image.count...], second.data).map { abs($0 - $1) }.max()!, 1e-5)
    }

    /// `--vae-tile` against diffusers' `tiled_decode` (scripts/gen_fixtures_vae_tiling.py): 14x11 latents in
    /// 64-pixel tiles (8 latents, stride 6: 3x2 tiles, the last ones smaller) and in 32-pixel tiles (stride 3:
    /// 5x4 tiles), overlap a quarter of the tile as diffusers' default. Tolerance as the untiled decode's: the
    /// blending adds two rounded products per pixel; a wrong stride, blend direction or blending order moves
    /// seams by whole values (tiled and untiled differ by 2-3.5 here).
    func testTiledDecodeMatchesDiffusers() throws {
        let vae = try VAE(checkpoint: try DecoderCheckpoint(path: Self.folder))
        let io = try DecoderFixtures.io("vae_tiled")
        let latents = try XCTUnwrap(io["latents"])
        XCTAssertEqual(latents.shape, [1, 4, 14, 11])
        let whole = try vae.decode(latents: latents)
        for tile in [64, 32] {
            let tiling = try VAE.Tiling(tile: tile)
            XCTAssertEqual(tiling.overlap, tile / 4)
            let tiled = try vae.decode(latents: latents, tiling: tiling)
            checkMaxError(tiled, try XCTUnwrap(io["tiled_\(tile)"]), "tiled decode, \(tiling)", tolerance: Self.tolerance)
            XCTAssertGreaterThan(zip(tiled.data, whole.data).map { abs($0 - $1) }.max()!, 0.5, "tiles decode alone, so seams differ from the whole")
        }
        // A tile covering the latents decodes them whole; a batch tiles each sample as alone.
        XCTAssertEqual(try vae.decode(latents: latents, tiling: try VAE.Tiling(tile: 112)).data, whole.data)
        var pair = latents
        pair.shape[0] = 2
        pair.data += latents.data.map { -$0 }
        let tiling = try VAE.Tiling(tile: 32)
        let both = try vae.decode(latents: pair, tiling: tiling)
        let second = try vae.decode(latents: Tensor(shape: latents.shape, data: latents.data.map { -$0 }), tiling: tiling)
        XCTAssertLessThan(zip(both.data[whole.count...], second.data).map { abs($0 - $1) }.max()!, 1e-5)
    }

    /// Tile sizes that cannot tile: not multiples of 8, or not larger than the overlap.
    func testBadTilings() throws {
        for (tile, overlap) in [(0, nil), (100, nil), (-8, nil), (64, 64), (64, 128), (64, 12), (64, -8)] as [(Int, Int?)] {
            XCTAssertThrowsError(try VAE.Tiling(tile: tile, overlap: overlap), "tile \(tile) overlap \(String(describing: overlap))") { error in
                XCTAssertTrue("\(error)".contains("--vae-tile"), "\(error)")
            }
        }
        XCTAssertEqual(try VAE.Tiling(tile: 8).overlap, 0)
        XCTAssertEqual(try VAE.Tiling(tile: 520).overlap, 128)
    }

    func testEncodeMatchesDiffusers() throws {
        let vae = try VAE(checkpoint: try DecoderCheckpoint(path: Self.folder))
        XCTAssertTrue(vae.hasEncoder)
        let image = try Self.tensor("image")
        XCTAssertEqual(image.shape, [1, 3, 32, 24])
        let (mean, logvar) = try vae.encode(image: image)
        checkMaxError(mean, try Self.tensor("mean"), "VAE encode mean [1,4,4,3]", tolerance: Self.tolerance)
        checkMaxError(logvar, try Self.tensor("logvar"), "VAE encode logvar [1,4,4,3]", tolerance: Self.tolerance)
    }

    /// The config inferred from the shapes equals the config.json's when told the group count (not in the
    /// shapes; inference assumes SDXL's 32, which the tiny widths do not split into).
    func testConfigInferenceMatchesJSON() throws {
        let checkpoint = try DecoderCheckpoint(path: Self.folder)
        let reader = try checkpoint.reader(.vae)
        let fromJSON = try VAE.Config.from(json: try XCTUnwrap(checkpoint.config(.vae)), path: reader.path)
        XCTAssertEqual(fromJSON, Self.tinyConfig)
        XCTAssertEqual(try VAE.Config.infer(reader: reader, groups: 4), fromJSON)
        XCTAssertThrowsError(try VAE.Config.infer(reader: reader)) { error in
            guard case let DecoderError.config(_, reason) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("groups"), reason)
        }
    }

    /// From a single sgm file (no config.json, no descriptor): sgm names read directly, config from the shapes.
    func testSingleFileWithInferredConfig() throws {
        let dir = try makeTemporaryURL("decoder")
        defer { try? FileManager.default.removeItem(at: dir) }
        let checkpoint = try DecoderCheckpoint(path: try Self.singleFileVAE(in: dir))
        XCTAssertNil(checkpoint.config(.vae))
        XCTAssertThrowsError(try VAE(checkpoint: checkpoint)) { error in
            guard case DecoderError.config = error else { return XCTFail("\(error)") }
        }
        let reader = try checkpoint.reader(.vae)
        let vae = try VAE(reader: reader, config: try .infer(reader: reader, groups: 4))
        checkMaxError(try vae.decode(latents: try Self.tensor("latents")), try Self.tensor("decoded"), "VAE decode (single file)", tolerance: Self.tolerance)
        checkMaxError(try vae.encode(image: try Self.tensor("image")).mean, try Self.tensor("mean"), "VAE encode mean (single file)", tolerance: Self.tolerance)
    }

    func testMissingVAEIsNamed() throws {
        let dir = try makeTemporaryURL("decoder")
        defer { try? FileManager.default.removeItem(at: dir) }
        let view = try DecoderCheckpoint(path: Self.folder).view.source
        let infos = view.tensors.filter { $0.name.hasPrefix("conditioner.") }
        let path = dir.appendingPathComponent("te.safetensors").path
        let writer = try SafetensorsWriter(path: path, tensors: infos, overwrite: true)
        for info in infos { try writer.write(try view.tensor(info.name)) }
        try writer.finish()
        XCTAssertThrowsError(try VAE(checkpoint: try DecoderCheckpoint(path: path))) { error in
            guard case let DecoderError.missingComponent(_, what, _) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(what.contains("VAE"), what)
        }
    }

    func testBadWeightsAreNamedAtLoad() throws {
        let dir = try makeTemporaryURL("decoder")
        defer { try? FileManager.default.removeItem(at: dir) }
        let view = try DecoderCheckpoint(path: Self.folder).view.source
        let victim = "first_stage_model.decoder.up.3.block.1.conv2.weight"  // diffusers decoder.up_blocks.0.resnets.1.conv2
        let nin = "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight"  // [16, 8, 1, 1]
        func write(_ name: String, _ edit: (inout TensorInfo, inout [Float]) -> Void) throws -> String {
            var infos = view.tensors.filter { $0.name.hasPrefix("first_stage_model.") }
            let i = try XCTUnwrap(infos.firstIndex { $0.name == name })
            var info = TensorInfo(name: name, dtype: .f32, shape: infos[i].shape)
            var values = try view.tensor(name).floats()
            edit(&info, &values)
            infos[i] = info
            let path = dir.appendingPathComponent("\(UUID().uuidString).safetensors").path
            let writer = try SafetensorsWriter(path: path, tensors: infos, overwrite: true)
            for t in infos {
                if t.name == name { try writer.write(TensorData.owned(info, bytes: values.withUnsafeBytes { Array($0) })) }
                else { try writer.write(try view.tensor(t.name)) }
            }
            try writer.finish()
            return path
        }
        let nan = try write(victim) { _, v in v[3] = .infinity; v[10] = .nan }
        let r1 = try DecoderCheckpoint(path: nan).reader(.vae)
        XCTAssertThrowsError(try VAE(reader: r1, config: Self.tinyConfig)) { error in
            XCTAssertEqual(error as? DecoderError, .nonFinite(path: nan, tensor: victim, count: 2))
            print("NaN weight: \(error)")
        }
        let shaped = try write(nin) { info, v in info.shape = [16, 7, 1, 1]; v = Array(v.prefix(16 * 7)) }
        let r2 = try DecoderCheckpoint(path: shaped).reader(.vae)
        XCTAssertThrowsError(try VAE(reader: r2, config: Self.tinyConfig)) { error in
            XCTAssertEqual(error as? DecoderError, .wrongShape(path: shaped, tensor: nin, expected: [16, 8, 1, 1], found: [16, 7, 1, 1]))
            print("wrong shape: \(error)")
        }
    }

    func testBadInputsAreRefused() throws {
        let vae = try VAE(checkpoint: try DecoderCheckpoint(path: Self.folder))
        XCTAssertThrowsError(try vae.decode(latents: Tensor(zeros: [1, 3, 8, 8])))
        XCTAssertThrowsError(try vae.decode(latents: Tensor(zeros: [4, 8, 8])))
        XCTAssertThrowsError(try vae.encode(image: Tensor(zeros: [1, 4, 16, 16])))
        XCTAssertThrowsError(try vae.encode(image: Tensor(zeros: [1, 3, 4, 4])))  // too small for 3 downsamplings
    }
}
