import Foundation
import MumuFormats
import MumuSampler
import MumuTensor
import MumuTestSupport
import XCTest

/// CLIP-L and bigG against transformers (Fixtures/decoder, scripts/gen_fixtures_decoder.py): the tiny SDXL
/// pipeline's text encoders (f16 weights, references computed in f32 with exactly those values), plus the
/// configuration paths and the load-time checks.
///
/// Tolerance: 1e-4 max abs error. The weights are the references' own values and both sides compute in f32,
/// so what remains is summation order (sgemm blocking vs torch's kernels, f64 vs f32 norm statistics) over
/// O(1) activations: ~1e-6 per op, a few 1e-6 after three layers. 1e-4 leaves room for BLAS differences
/// while any real mistake (a wrong mask, activation, eps or layer) is off by 1e-2 or more.
final class TextEncoderTests: XCTestCase {
    static let tolerance: Float = 1e-4

    static let decoderFixtures = DecoderFixtures.folder
    static let folder = DecoderFixtures.pipeline
    static let io = try! SafetensorsFile(path: decoderFixtures.appendingPathComponent("clip_io.safetensors").path)

    static func tensor(_ file: SafetensorsFile, _ name: String) throws -> Tensor {
        let data = try file.tensor(name)
        return Tensor(shape: data.info.shape, data: try data.floats())
    }

    static func int64s(_ file: SafetensorsFile, _ name: String) throws -> (shape: [Int], values: [Int]) {
        let data = try file.tensor(name)
        XCTAssertEqual(data.info.dtype, .i64)
        let values = withExtendedLifetime(data) {
            (0..<data.info.elementCount).map { Int(data.bytes.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
        }
        return (data.info.shape, values)
    }

    static func rows(_ name: String) throws -> [[Int32]] {
        let (shape, values) = try int64s(io, name)
        return (0..<shape[0]).map { r in values[(r * shape[1])..<((r + 1) * shape[1])].map { Int32($0) } }
    }

    // MARK: conformance

    func testCLIPLMatchesTransformers() throws {
        let checkpoint = try DecoderCheckpoint(path: Self.folder)
        let te1 = try CLIPTextEncoder(checkpoint: checkpoint, component: .te1)
        XCTAssertEqual(te1.config, CLIPTextEncoder.Config(width: 16, layers: 3, heads: 2, intermediate: 32, vocabulary: 1000,
                                                          positions: 77, projection: nil, activation: .quickGELU))
        let ids = try Self.rows("ids")
        let out = try te1.run(ids: ids, last: true)
        checkMaxError(out.penultimate, try Self.tensor(Self.io, "te1_penultimate"), "CLIP-L penultimate", tolerance: Self.tolerance)
        checkMaxError(try XCTUnwrap(out.last), try Self.tensor(Self.io, "te1_last"), "CLIP-L last_hidden_state", tolerance: Self.tolerance)
        XCTAssertNil(out.pooled)

        // encode skips the last layer and gives the same penultimate states, bit for bit.
        let encoded = try te1.encode(ids: ids)
        XCTAssertEqual(encoded.penultimate, out.penultimate)
        XCTAssertNil(encoded.pooled)
        XCTAssertThrowsError(try te1.run(ids: ids, pooled: true)) { XCTAssertTrue("\($0)".contains("no text projection"), "\($0)") }

        // One row alone gives that row of the batch, up to f32 rounding: OpenBLAS picks its kernel and blocking by
        // the product's shape (one row or two), so sums run in another order (1.2e-6 seen on an AVX2-only CPU;
        // the states are O(1)).
        let single = try te1.encode(ids: [ids[1].map { Int($0) }])
        let row = Array(out.penultimate.data[(77 * 16)...])
        XCTAssertLessThan(zip(single.penultimate.data, row).map { abs($0 - $1) }.max()!, 4e-6)
    }

    func testBigGMatchesTransformers() throws {
        let checkpoint = try DecoderCheckpoint(path: Self.folder)
        let te2 = try CLIPTextEncoder(checkpoint: checkpoint, component: .te2)
        XCTAssertEqual(te2.config, CLIPTextEncoder.Config(width: 16, layers: 3, heads: 4, intermediate: 64, vocabulary: 1000,
                                                          positions: 77, projection: 16, activation: .gelu))
        let ids = try Self.rows("ids2")
        let eos = try Self.int64s(Self.io, "eos_index").values
        let (penultimate, pooled) = try te2.encode(ids: ids, eosIndex: eos)
        checkMaxError(penultimate, try Self.tensor(Self.io, "te2_penultimate"), "bigG penultimate", tolerance: Self.tolerance)
        checkMaxError(try XCTUnwrap(pooled), try Self.tensor(Self.io, "te2_pooled"), "bigG pooled (text_embeds)", tolerance: Self.tolerance)
        // Without eosIndex the argmax rule is used: the same positions.
        XCTAssertEqual(try te2.encode(ids: ids).pooled, pooled)
    }

    func testEOSIndicesAreTransformersArgmax() throws {
        let eos = try Self.int64s(Self.io, "eos_index").values
        XCTAssertEqual(CLIPTextEncoder.eosIndices(try Self.rows("ids")), eos)
        XCTAssertEqual(CLIPTextEncoder.eosIndices(try Self.rows("ids2")), eos)
        XCTAssertEqual(CLIPTextEncoder.eosIndices([[5, 9, 2, 9, 9]]), [1])  // the first of equal maxima
    }

    // MARK: configuration

    /// The config inferred from shapes equals the config.json's when told the head width (the tiny models have
    /// head widths 8 and 4; inference assumes SDXL's 64, which the 16-wide models do not divide into).
    func testConfigInferenceMatchesJSON() throws {
        let checkpoint = try DecoderCheckpoint(path: Self.folder)
        for (component, headDim) in [(ModelComponent.te1, 8), (.te2, 4)] {
            let reader = try checkpoint.reader(component)
            let json = try XCTUnwrap(checkpoint.config(component))
            let fromJSON = try CLIPTextEncoder.Config.from(json: json, reader: reader)
            XCTAssertEqual(try CLIPTextEncoder.Config.infer(reader: reader, headDim: headDim), fromJSON, "\(component)")
            XCTAssertThrowsError(try CLIPTextEncoder.Config.infer(reader: reader)) { error in
                guard case let DecoderError.config(_, reason) = error else { return XCTFail("\(error)") }
                XCTAssertTrue(reason.contains("head"), reason)
            }
        }
    }

    /// A single sgm file of the tiny encoders matches no architecture descriptor, so it has no config: built
    /// from inferred shapes (with the head width given), it computes the same outputs.
    func testSingleFileWithInferredConfig() throws {
        let checkpoint = try DecoderCheckpoint(path: Self.folder)
        let dir = try makeTemporaryURL("decoder")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("te.safetensors").path
        try writeSubset(of: checkpoint.view.source, to: file) { $0.hasPrefix("conditioner.") }
        let single = try DecoderCheckpoint(path: file)
        XCTAssertNil(single.config(.te1))
        XCTAssertNil(single.config(.te2))
        // Inference assumes head width 64: the checkpoint init reports that it cannot run a 16-wide model.
        XCTAssertThrowsError(try CLIPTextEncoder(checkpoint: single, component: .te1)) { error in
            guard case DecoderError.config = error else { return XCTFail("\(error)") }
        }
        let r1 = try single.reader(.te1), r2 = try single.reader(.te2)
        let te1 = try CLIPTextEncoder(reader: r1, config: try .infer(reader: r1, headDim: 8))
        let te2 = try CLIPTextEncoder(reader: r2, config: try .infer(reader: r2, headDim: 4))
        checkMaxError(try te1.encode(ids: try Self.rows("ids")).penultimate, try Self.tensor(Self.io, "te1_penultimate"),
                          "CLIP-L penultimate (single file)", tolerance: Self.tolerance)
        let out = try te2.encode(ids: try Self.rows("ids2"))
        checkMaxError(try XCTUnwrap(out.pooled), try Self.tensor(Self.io, "te2_pooled"), "bigG pooled (single file)", tolerance: Self.tolerance)
    }

    // MARK: bad checkpoints and inputs

    func testMissingTextEncoderIsNamed() throws {
        let checkpoint = try DecoderCheckpoint(path: Self.folder)
        let dir = try makeTemporaryURL("decoder")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("unet-vae.safetensors").path
        try writeSubset(of: checkpoint.view.source, to: file) { !$0.hasPrefix("conditioner.") }
        let partial = try DecoderCheckpoint(path: file)
        for (component, name) in [(ModelComponent.te1, "CLIP-L"), (.te2, "bigG")] {
            XCTAssertThrowsError(try CLIPTextEncoder(checkpoint: partial, component: component)) { error in
                guard case let DecoderError.missingComponent(path, what, detail) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(path, file)
                XCTAssertTrue(what.contains(name), what)
                XCTAssertTrue(detail.contains("unet") && detail.contains("vae"), detail)
            }
        }
    }

    func testWrongShapeNamesTensorAndShapes() throws {
        let folder = try DecoderFixtures.editedFolder("text_encoder/model.safetensors", tensor: "encoder.layers.1.mlp.fc1.weight") { shape, values in
            shape = [30, 16]
            values = Array(values.prefix(30 * 16))
        }
        defer { try? FileManager.default.removeItem(atPath: (folder as NSString).deletingLastPathComponent) }
        XCTAssertThrowsError(try CLIPTextEncoder(checkpoint: try DecoderCheckpoint(path: folder), component: .te1)) { error in
            guard case let DecoderError.wrongShape(_, tensor, expected, found) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(tensor, "conditioner.embedders.0.transformer.text_model.encoder.layers.1.mlp.fc1.weight")
            XCTAssertEqual(expected, [32, 16])
            XCTAssertEqual(found, [30, 16])
            print("wrong shape: \(error)")
        }
    }

    func testNaNWeightIsReportedAtLoad() throws {
        // bigG's q / k / v come from a diffusers folder as three tensors; the view fuses them into OpenCLIP's
        // in_proj_weight, the name the error gives.
        let folder = try DecoderFixtures.editedFolder("text_encoder_2/model.safetensors", tensor: "text_model.encoder.layers.0.self_attn.k_proj.weight") { _, values in
            values[7] = .nan
        }
        defer { try? FileManager.default.removeItem(atPath: (folder as NSString).deletingLastPathComponent) }
        let checkpoint = try DecoderCheckpoint(path: folder)
        XCTAssertNoThrow(try CLIPTextEncoder(checkpoint: checkpoint, component: .te1))
        XCTAssertThrowsError(try CLIPTextEncoder(checkpoint: checkpoint, component: .te2)) { error in
            guard case let DecoderError.nonFinite(_, tensor, count) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(tensor, "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight")
            XCTAssertEqual(count, 1)
            print("NaN weight: \(error)")
        }
    }

    func testBadIdsAreRefused() throws {
        let te1 = try CLIPTextEncoder(checkpoint: try DecoderCheckpoint(path: Self.folder), component: .te1)
        var ids = try Self.rows("ids")
        ids[1][5] = 1000  // vocabulary is 1000
        XCTAssertThrowsError(try te1.encode(ids: ids)) { error in
            guard case let DecoderError.input(reason) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("1000") && reason.contains("row 1") && reason.contains("position 5"), reason)
        }
        XCTAssertThrowsError(try te1.encode(ids: [[Int32](repeating: 1, count: 78)]))  // longer than 77 positions
        XCTAssertThrowsError(try te1.encode(ids: [[1, 2, 3], [1, 2]]))  // ragged
        XCTAssertThrowsError(try te1.encode(ids: [[1, -2, 3]]))
        XCTAssertThrowsError(try te1.encode(ids: [[Int]]()))
        let te2 = try CLIPTextEncoder(checkpoint: try DecoderCheckpoint(path: Self.folder), component: .te2)
        XCTAssertThrowsError(try te2.encode(ids: try Self.rows("ids2"), eosIndex: [3, 77]))
        XCTAssertThrowsError(try te2.encode(ids: try Self.rows("ids2"), eosIndex: [3]))
    }
}
