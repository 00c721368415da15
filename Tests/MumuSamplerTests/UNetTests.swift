import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuSampler
import MumuTensor

/// The UNet against diffusers' UNet2DConditionModel (f32, CPU) on the tiny random SDXL fixture.
final class UNetTests: XCTestCase {
    /// The issue's bar. Reached: ~1e-6 (outputs are O(1); f32 GEMMs in a different summation order than torch's).
    static let tolerance: Float = 1e-4

    func testMatchesDiffusers() throws {
        let checkpoint = try DecoderCheckpoint(path: DecoderFixtures.pipeline)
        let unet = try UNet(checkpoint: checkpoint)
        XCTAssertEqual(unet.config.blockChannels, [16, 32, 48])
        XCTAssertEqual(unet.config.heads, [1, 2, 3])
        let io = try DecoderFixtures.io("unet_io")
        let out = try unet(io["sample"]!, timesteps: io["timestep"]!.data, context: io["encoder_hidden_states"]!,
                           pooled: io["text_embeds"]!, timeIds: io["time_ids"]!)
        checkMaxError(out, io["out"]!, "UNet batch 2, 16x12", tolerance: Self.tolerance)
        let out1 = try unet(io["sample1"]!, timesteps: io["timestep1"]!.data, context: io["encoder_hidden_states1"]!,
                            pooled: io["text_embeds1"]!, timeIds: io["time_ids1"]!)
        checkMaxError(out1, io["out1"]!, "UNet batch 1, 8x8, 154 context tokens", tolerance: Self.tolerance)
    }

    /// The bf16 path (weights and activations rounded to bf16, f32 accumulation) against diffusers' f32 output.
    /// bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per operand), compounded over the UNet's ~70
    /// products; on outputs of max |x| ~2-3 the bar is 0.05 absolute (2% of the scale). Where the CPU has no
    /// bf16 hardware the models keep f32 weights and this repeats the f32 check.
    func testBF16MatchesDiffusersWithinBF16Rounding() throws {
        let unet = try UNet(checkpoint: DecoderCheckpoint(path: DecoderFixtures.pipeline), precision: .bf16)
        let io = try DecoderFixtures.io("unet_io")
        let out = try unet(io["sample"]!, timesteps: io["timestep"]!.data, context: io["encoder_hidden_states"]!,
                           pooled: io["text_embeds"]!, timeIds: io["time_ids"]!)
        let label = "UNet bf16 (\(DenseWeight.bf16HasHardwarePath ? BF16Matrix.isa : "f32 fallback")) vs diffusers f32"
        checkMaxError(out, io["out"]!, label, tolerance: 0.05)
    }

    /// Shapes alone give the same configuration as the config.json, heads aside (not stored in weights: the tiny
    /// model has head dim 16, so inference is told 16 instead of SDXL's 64).
    func testConfigInferredFromShapes() throws {
        let checkpoint = try DecoderCheckpoint(path: DecoderFixtures.pipeline)
        let fromJSON = try UNetConfig.fromDiffusers(checkpoint.config(.unet)!, path: checkpoint.path)
        var inferred = try UNetConfig.infer(try checkpoint.reader(.unet), headDim: 16)
        XCTAssertEqual(inferred.admIn, fromJSON.admIn)
        // addition_time_embed_dim is not in the weights either: inference assumes SDXL's 256.
        XCTAssertEqual(inferred.addTimeDim, 256)
        inferred.addTimeDim = fromJSON.addTimeDim
        inferred.normGroups = fromJSON.normGroups
        XCTAssertEqual(inferred, fromJSON)
    }

    func testBadInputsAreRefused() throws {
        let unet = try UNet(checkpoint: DecoderCheckpoint(path: DecoderFixtures.pipeline))
        let io = try DecoderFixtures.io("unet_io")
        XCTAssertThrowsError(try unet(Tensor(zeros: [1, 3, 8, 8]), timesteps: [1], context: io["encoder_hidden_states1"]!,
                                      pooled: io["text_embeds1"]!, timeIds: io["time_ids1"]!)) { error in
            XCTAssertTrue("\(error)".contains("must be [B, 4, H, W]"), "\(error)")
        }
        XCTAssertThrowsError(try unet(io["sample1"]!, timesteps: [1], context: io["encoder_hidden_states1"]!)) { error in
            XCTAssertTrue("\(error)".contains("pooled"), "\(error)")
        }
    }

    /// A wrong-shaped UNet tensor is named with both shapes; a NaN weight is reported at load, by name.
    func testWrongShapeAndNaNAreReportedAtLoad() throws {
        let bad = try DecoderFixtures.editedFolder("unet/diffusion_pytorch_model.safetensors", tensor: "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight") { shape, values in
            shape = [32, 24]
            values = Array(values.prefix(32 * 24))
        }
        defer { try? FileManager.default.removeItem(atPath: (bad as NSString).deletingLastPathComponent) }
        XCTAssertThrowsError(try UNet(checkpoint: DecoderCheckpoint(path: bad))) { error in
            guard case let DecoderError.wrongShape(_, tensor, expected, found) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(tensor, "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight")
            XCTAssertEqual(expected, [32, 32])
            XCTAssertEqual(found, [32, 24])
            print("wrong shape: \(error)")
        }
        let nan = try DecoderFixtures.editedFolder("unet/diffusion_pytorch_model.safetensors", tensor: "up_blocks.0.resnets.2.conv2.weight") { _, values in
            values[3] = .nan
            values[5] = .infinity
        }
        defer { try? FileManager.default.removeItem(atPath: (nan as NSString).deletingLastPathComponent) }
        XCTAssertThrowsError(try UNet(checkpoint: DecoderCheckpoint(path: nan))) { error in
            guard case let DecoderError.nonFinite(_, tensor, count) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(tensor, "model.diffusion_model.output_blocks.2.0.out_layers.3.weight")
            XCTAssertEqual(count, 2)
            print("NaN weight: \(error)")
        }
        // A checkpoint without a UNet says so and lists what it holds.
        let vaeOnly = try DecoderCheckpoint(path: (DecoderFixtures.pipeline as NSString).appendingPathComponent("vae/diffusion_pytorch_model.safetensors"))
        XCTAssertThrowsError(try UNet(checkpoint: vaeOnly)) { error in
            XCTAssertTrue("\(error)".contains("no UNet"), "\(error)")
            print("missing UNet: \(error)")
        }
    }
}
