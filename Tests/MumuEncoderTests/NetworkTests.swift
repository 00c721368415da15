import Foundation
import MumuEncoder
import MumuFormats
import MumuSampler
import MumuTensor
import XCTest

/// MUMU's encoder networks against transformers / torch (Fixtures/networks, scripts/gen_fixtures_encoder_networks.py):
/// a tiny random Idefics2 folder (SigLIP, modality projection, Mistral with GQA and a sliding window that masks in
/// the test sequences) and two random connectors, plus the folder handling and the load / input checks.
///
/// Tolerances are relative: max |swift - reference| / max |reference| over each output.
/// - f32: 1e-4. The weights are the references' own values and both sides compute in f32, so what remains is
///   summation order (sgemm blocking vs torch's kernels, f64 vs f32 norm statistics) over O(1) activations: about
///   1e-6 per op, a few 1e-6 after the layers here. Any real mistake (a mask, an activation, an eps, a rope
///   frequency, a bucket) is off by 1e-2 or more.
/// - bf16: 3e-2. Weights are bf16 in the file already (no rounding), but the bf16 GEMM rounds every activation to
///   bf16 (8 significant bits: up to 2^-9 = 2e-3 relative per value) before each product; over the chained products
///   (vision 2 layers, projection, text 2 layers) that reaches 3e-3..5e-3 of the range for vision, projection and
///   connector and 1.2e-2 for the text model fed bf16 image embeddings (measured). 3e-2 leaves room for another
///   CPU's kernel (AMX vs AVX-512-BF16 accumulate in other orders) while a wrong layer (1e-1 and more) still fails.
final class NetworkTests: XCTestCase {
    static let f32Tolerance: Float = 1e-4
    static let bf16Tolerance: Float = 3e-2

    static let grids: [String: (Int, Int)] = ["a": (2, 3), "b": (4, 4), "c": (1, 5), "d": (6, 3)]
    /// Which images each test sequence holds, in order.
    static let sequences: [(String, [String])] = [("0", []), ("1", ["a"]), ("3", ["a", "c", "b"])]

    static let encoderF32: Idefics2Encoder = try! Idefics2Encoder(folder: NetworkFixtures.idefics2, precision: .f32)

    func image(_ key: String) throws -> (pixels: [Float], height: Int, width: Int) {
        let t = try NetworkFixtures.tensor("pixels_" + key)
        return (t.data, t.shape[1], t.shape[2])
    }

    // MARK: configuration

    func testConfigIsReadFromTheFolder() throws {
        let config = Self.encoderF32.config
        XCTAssertEqual(config.vision, Idefics2Config.Vision(hiddenSize: 32, intermediateSize: 48, layers: 2, heads: 4, channels: 3,
                                                           imageSize: 56, patchSize: 14, activation: .geluTanh, layerNormEps: 1e-6))
        XCTAssertEqual(config.vision.patchesPerSide, 4)
        XCTAssertEqual(config.text, Idefics2Config.Text(vocabulary: 32003, hiddenSize: 64, intermediateSize: 96, layers: 2, heads: 4,
                                                       kvHeads: 2, headDim: 16, activation: .silu, maxPositions: 128,
                                                       rmsNormEps: 1e-5, ropeTheta: 5000, slidingWindow: 16))
        XCTAssertEqual(config.imageTokenId, 32001)
    }

    /// idefics2-8b's own config.json (written by transformers 4.40) leaves out every value equal to the default:
    /// they must come out as transformers fills them in.
    func testConfigDefaultsAreTransformers() throws {
        let json = """
        {"architectures": ["Idefics2ForConditionalGeneration"], "image_token_id": 32001, "model_type": "idefics2",
         "perceiver_config": {"model_type": "idefics2", "resampler_depth": 3, "resampler_head_dim": 96,
                              "resampler_n_heads": 16, "resampler_n_latents": 64},
         "text_config": {"architectures": ["MistralForCausalLM"], "max_position_embeddings": 32768, "model_type": "mistral",
                         "pad_token_id": 0, "rms_norm_eps": 1e-05, "sliding_window": 4096, "torch_dtype": "bfloat16",
                         "vocab_size": 32003},
         "torch_dtype": "float32", "transformers_version": "4.40.0.dev0", "use_cache": true,
         "vision_config": {"hidden_size": 1152, "image_size": 980, "intermediate_size": 4304, "model_type": "idefics2",
                           "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14}}
        """
        let config = try Idefics2Config.parse(try JSONParser.parse(json), path: "idefics2-8b/config.json")
        XCTAssertEqual(config.vision, Idefics2Config.Vision(hiddenSize: 1152, intermediateSize: 4304, layers: 27, heads: 16,
                                                           channels: 3, imageSize: 980, patchSize: 14, activation: .geluTanh,
                                                           layerNormEps: 1e-6))
        XCTAssertEqual(config.vision.patchesPerSide, 70)
        XCTAssertEqual(config.text, Idefics2Config.Text(vocabulary: 32003, hiddenSize: 4096, intermediateSize: 14336, layers: 32,
                                                       heads: 32, kvHeads: 8, headDim: 128, activation: .silu, maxPositions: 32768,
                                                       rmsNormEps: 1e-5, ropeTheta: 10000, slidingWindow: 4096))

        // transformers 4's top-level rope_theta; a null sliding_window is no window.
        let v4 = try Idefics2Config.parse(try JSONParser.parse("""
            {"model_type": "idefics2", "text_config": {"vocab_size": 32003, "rope_theta": 1000000.0, "sliding_window": null}}
            """), path: "c.json")
        XCTAssertEqual(v4.text.ropeTheta, 1_000_000)
        XCTAssertNil(v4.text.slidingWindow)
        XCTAssertEqual(v4.text.maxPositions, 32768)
        // Mistral's default vocabulary (32,000) has no room for Idefics2's <image> token 32001.
        XCTAssertThrowsError(try Idefics2Config.parse(try JSONParser.parse(#"{"model_type": "idefics2"}"#), path: "c.json")) { error in
            XCTAssertTrue("\(error)".contains("image_token_id: 32001 is outside the vocabulary of 32000"), "\(error)")
        }
    }

    func testConfigErrorsNameTheField() throws {
        func message(_ json: String) -> String {
            do { _ = try Idefics2Config.parse(try JSONParser.parse(json), path: "x/config.json"); return "no error" } catch { return "\(error)" }
        }
        XCTAssertTrue(message(#"{"model_type": "llava"}"#).contains("model_type \"llava\", not \"idefics2\""))
        XCTAssertTrue(message(#"{"architectures": []}"#).contains("no model_type"))
        XCTAssertTrue(message(#"{"model_type": "idefics2", "text_config": {"model_type": "llama"}}"#).contains("text_config.model_type"))
        XCTAssertTrue(message(#"{"model_type": "idefics2", "text_config": {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1}}}"#)
            .contains("text_config.rope_parameters.rope_type"))
        XCTAssertTrue(message(#"{"model_type": "idefics2", "vision_config": {"hidden_size": "big"}}"#)
            .contains("vision_config.hidden_size: is not an integer"))
        XCTAssertTrue(message(#"{"model_type": "idefics2", "vision_config": {"hidden_act": "relu6"}}"#).contains("vision_config.hidden_act"))
        XCTAssertTrue(message(#"{"model_type": "idefics2", "text_config": {"num_key_value_heads": 5}}"#).contains("num_key_value_heads"))
        XCTAssertTrue(message(#"{"model_type": "idefics2", "image_token_id": 40000, "text_config": {"vocab_size": 32003}}"#)
            .contains("image_token_id"))
    }

    // MARK: position ids

    /// The bucketed position ids equal transformers' `Idefics2VisionEmbeddings` for grids smaller and larger than the
    /// S x S pretraining grid, square and not, for idefics2-8b's S = 70 and for S = 19, where torch's float32 arange
    /// of the boundaries is an ulp off k / S and moves whole rows of patches to another bucket.
    func testPositionIdsMatchTransformers() throws {
        var checked = 0
        for (name, want) in NetworkFixtures.io.ints where name.hasPrefix("posids_s") {
            let parts = name.dropFirst("posids_s".count).split(separator: "_")
            let s = Int(parts[0])!, grid = parts[1].split(separator: "x").map { Int($0)! }
            XCTAssertEqual(SigLIPVision.positionIds(rows: grid[0], columns: grid[1], patchesPerSide: s), want, name)
            checked += 1
        }
        XCTAssertEqual(checked, 12)
        // The tiny model's S = 4: a 6 x 3 grid puts row 3 (3/6 = 0.5, on a boundary) in bucket 2 (right=True).
        XCTAssertEqual(Self.encoderF32.vision.positionIds(rows: 6, columns: 3),
                       [0, 1, 2, 0, 1, 2, 4, 5, 6, 8, 9, 10, 8, 9, 10, 12, 13, 14])
    }

    // MARK: conformance, f32

    func testVisionAndProjectionMatchTransformers() throws {
        let encoder = Self.encoderF32
        for key in ["a", "b", "c", "d"] {
            let (pixels, h, w) = try image(key)
            let (nh, nw) = Self.grids[key]!
            XCTAssertEqual(encoder.patchGrid(height: h, width: w)?.rows, nh)
            let vision = try encoder.vision(pixels: pixels, height: h, width: w)
            NetworkFixtures.check(vision, try NetworkFixtures.tensor("vision_" + key), "vision \(nh)x\(nw) (f32)", tolerance: Self.f32Tolerance)
            let projected = try encoder.encodeImage(pixels: pixels, height: h, width: w)
            XCTAssertEqual(projected.shape, [nh * nw, 64])
            NetworkFixtures.check(projected, try NetworkFixtures.tensor("proj_" + key), "projection \(nh)x\(nw) (f32)", tolerance: Self.f32Tolerance)
        }
    }

    /// Sequences of 40, 31 and 52 tokens (window 16) with 0, 1 and 3 images: the images' embeddings come from our
    /// own vision tower and projection, so this is the encoder end to end.
    func testTextModelMatchesTransformers() throws {
        let encoder = Self.encoderF32
        for (key, images) in Self.sequences {
            let embeddings = try images.map { k -> Tensor in
                let (pixels, h, w) = try image(k)
                return try encoder.encodeImage(pixels: pixels, height: h, width: w)
            }
            let ids = try NetworkFixtures.ids("ids" + key)
            let hidden = try encoder.hiddenStates(ids: ids, imageEmbeddings: embeddings)
            NetworkFixtures.check(hidden, try NetworkFixtures.tensor("hidden" + key),
                                  "text model, \(images.count) images, \(ids.count) tokens (f32)", tolerance: Self.f32Tolerance)
        }
    }

    func testConnectorsMatchTorch() throws {
        for (name, width, heads) in [("w128", 128, 2), ("w96", 96, 1)] {
            let connector = try MumuConnector(path: NetworkFixtures.connector(name))
            XCTAssertEqual(connector.shape, MumuConnector.Shape(inputs: 64, width: width, mlp: name == "w128" ? 128 : 192, layers: 2, pooled: 64))
            XCTAssertEqual(connector.shape.heads, heads)
            for key in ["0", "3"] {
                let (context, pooled) = try connector(try NetworkFixtures.tensor("hidden" + key))
                NetworkFixtures.check(context, try NetworkFixtures.tensor("\(name)_context\(key)"), "connector \(name) context \(key) (f32)",
                                      tolerance: Self.f32Tolerance)
                NetworkFixtures.check(Tensor(shape: [pooled.count], data: pooled), try NetworkFixtures.tensor("\(name)_pooled\(key)"),
                                      "connector \(name) pooled \(key) (f32)", tolerance: Self.f32Tolerance)
            }
        }
    }

    /// A mumu-decoder checkpoint opened for the sampler gives the same connector (sgm names: `connector.*`).
    func testConnectorFromADecoderCheckpoint() throws {
        let path = NetworkFixtures.connector("w96")
        let checkpoint = try DecoderCheckpoint(path: path)
        let connector = try MumuConnector(checkpoint: checkpoint)
        let hidden = try NetworkFixtures.tensor("hidden1")
        let (context, pooled) = try connector(hidden)
        let direct = try MumuConnector(source: try SafetensorsFile(path: path))
        let (context2, pooled2) = try direct(hidden)
        XCTAssertEqual(context, context2)
        XCTAssertEqual(pooled, pooled2)
    }

    /// maskedAttention against a direct f64 evaluation of its definition, over more query rows than one block
    /// (256) so the block bounds of the causal and sliding-window key ranges are exercised (the text-model
    /// fixtures stop at 128 tokens). Tolerance 1e-5 absolute: outputs are averages of O(1) values in f32.
    func testMaskedAttentionMatchesItsDefinition() throws {
        var seed: UInt64 = 12345
        func random() -> Float {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: seed >> 11) % 2_000_001) / 1_000_000 - 1
        }
        let t = 600, heads = 4, kvHeads = 2, d = 8
        let q = Tensor(shape: [t, heads * d], data: (0..<t * heads * d).map { _ in 2 * random() })
        let k = Tensor(shape: [t, kvHeads * d], data: (0..<t * kvHeads * d).map { _ in 2 * random() })
        let v = Tensor(shape: [t, kvHeads * d], data: (0..<t * kvHeads * d).map { _ in random() })
        for (causal, window) in [(true, Int?.none), (true, 100), (true, 300), (false, nil), (false, 50)] {
            let got = maskedAttention(q: q, k: k, v: v, heads: heads, kvHeads: kvHeads, causal: causal, window: window)
            var err: Float = 0
            for i in 0..<t {
                let lo = window.map { max(0, i - $0 + 1) } ?? 0, hi = causal ? i + 1 : t
                for h in 0..<heads {
                    let g = h / (heads / kvHeads)
                    var scores: [Double] = []
                    for j in lo..<hi {
                        var s = 0.0
                        for c in 0..<d { s += Double(q.data[i * heads * d + h * d + c]) * Double(k.data[j * kvHeads * d + g * d + c]) }
                        scores.append(s / Double(d).squareRoot())
                    }
                    let m = scores.max()!
                    let e = scores.map { Foundation.exp($0 - m) }, sum = e.reduce(0, +)
                    for c in 0..<d {
                        var o = 0.0
                        for (n, j) in (lo..<hi).enumerated() { o += e[n] / sum * Double(v.data[j * kvHeads * d + g * d + c]) }
                        err = max(err, abs(Float(o) - got.data[i * heads * d + h * d + c]))
                    }
                }
            }
            XCTAssertLessThan(err, 1e-5, "causal \(causal), window \(String(describing: window))")
        }
    }

    // MARK: bf16

    func testBF16MatchesWithinItsTolerance() throws {
        let encoder = try Idefics2Encoder(folder: NetworkFixtures.idefics2, precision: .bf16)
        var embeddings: [String: Tensor] = [:]
        for key in ["a", "b", "c", "d"] {
            let (pixels, h, w) = try image(key)
            embeddings[key] = try encoder.encodeImage(pixels: pixels, height: h, width: w)
            NetworkFixtures.check(embeddings[key]!, try NetworkFixtures.tensor("proj_" + key), "projection \(key) (bf16)", tolerance: Self.bf16Tolerance)
        }
        for (key, images) in Self.sequences {
            let hidden = try encoder.hiddenStates(ids: try NetworkFixtures.ids("ids" + key), imageEmbeddings: images.map { embeddings[$0]! })
            NetworkFixtures.check(hidden, try NetworkFixtures.tensor("hidden" + key), "text model, \(images.count) images (bf16)",
                                  tolerance: Self.bf16Tolerance)
        }
        // The token embedding is held as bf16 rows: half of f32's bytes.
        XCTAssertEqual(encoder.text.embeddingBytes, 32003 * 64 * 2)
        XCTAssertEqual(Self.encoderF32.text.embeddingBytes, 32003 * 64 * 4)

        let connector = try MumuConnector(path: NetworkFixtures.connector("w128"), precision: .bf16)
        let (context, pooled) = try connector(try NetworkFixtures.tensor("hidden3"))
        NetworkFixtures.check(context, try NetworkFixtures.tensor("w128_context3"), "connector w128 context (bf16)", tolerance: Self.bf16Tolerance)
        NetworkFixtures.check(Tensor(shape: [pooled.count], data: pooled), try NetworkFixtures.tensor("w128_pooled3"),
                              "connector w128 pooled (bf16)", tolerance: Self.bf16Tolerance)
    }

    // MARK: folder layouts

    /// Idefics2ForConditionalGeneration's layout (`model.` prefix, an lm_head), sharded over three files with an
    /// index, gives exactly the same outputs; the lm_head and the perceiver are not read.
    func testPrefixedShardedFolderGivesTheSameOutputs() throws {
        let dir = try NetworkFixtures.editedFolder(shards: 3, lmHead: true) { info in
            TensorInfo(name: "model." + info.name, dtype: info.dtype, shape: info.shape)
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/model-00003-of-00003.safetensors"))
        let folder = try Idefics2Folder(path: dir)
        XCTAssertEqual(folder.prefix, "model.")
        XCTAssertTrue(folder.source is ShardedSafetensors)
        let encoder = try Idefics2Encoder(folder: folder)
        XCTAssertNotNil(encoder.parameters["model.text_model.layers.1.self_attn.q_proj.weight"])
        let (pixels, h, w) = try image("b")
        let image = try encoder.encodeImage(pixels: pixels, height: h, width: w)
        XCTAssertEqual(image, try Self.encoderF32.encodeImage(pixels: pixels, height: h, width: w))
        let ids = try NetworkFixtures.ids("ids1")
        let (pa, ha, wa) = try self.image("a")
        let a = try encoder.encodeImage(pixels: pa, height: ha, width: wa)
        XCTAssertEqual(try encoder.hiddenStates(ids: ids, imageEmbeddings: [a]),
                       try Self.encoderF32.hiddenStates(ids: ids, imageEmbeddings: [a]))
    }

    // MARK: bad input

    func testAnotherArchitectureIsRefused() throws {
        var config = try String(contentsOfFile: NetworkFixtures.idefics2 + "/config.json", encoding: .utf8)
        config = config.replacingOccurrences(of: "\"model_type\": \"idefics2\"", with: "\"model_type\": \"llava\"")
        let dir = try NetworkFixtures.editedFolder(config: config)
        XCTAssertThrowsError(try Idefics2Encoder(folder: dir)) { error in
            XCTAssertTrue("\(error)".contains("not an Idefics2 encoder folder"), "\(error)")
            XCTAssertTrue("\(error)".contains("llava"), "\(error)")
            XCTAssertTrue("\(error)".contains(dir), "\(error)")
        }
        // Idefics2's config over weights without its tensors (an SDXL connector file, say).
        let other = try NetworkFixtures.temporaryDirectory()
        try FileManager.default.copyItem(atPath: NetworkFixtures.connector("w96"), toPath: other.appendingPathComponent("model.safetensors").path)
        try FileManager.default.copyItem(atPath: NetworkFixtures.idefics2 + "/config.json", toPath: other.appendingPathComponent("config.json").path)
        XCTAssertThrowsError(try Idefics2Encoder(folder: other.path)) { error in
            XCTAssertTrue("\(error)".contains("text_model.embed_tokens.weight"), "\(error)")
        }
        // No config.json, or a file instead of a folder.
        XCTAssertThrowsError(try Idefics2Folder(path: other.appendingPathComponent("model.safetensors").path)) { error in
            XCTAssertTrue("\(error)".contains("not a folder"), "\(error)")
        }
        try FileManager.default.removeItem(at: other.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try Idefics2Folder(path: other.path)) { error in
            XCTAssertTrue("\(error)".contains("no readable config.json"), "\(error)")
        }
    }

    func testMissingTensorIsNamed() throws {
        let dir = try NetworkFixtures.editedFolder { $0.name == "text_model.layers.1.mlp.up_proj.weight" ? nil : $0 }
        XCTAssertThrowsError(try Idefics2Encoder(folder: dir)) { error in
            XCTAssertEqual(error as? DecoderError, .missingTensor(path: dir + "/model.safetensors", tensor: "text_model.layers.1.mlp.up_proj.weight"))
        }
        let vision = try NetworkFixtures.editedFolder { $0.name == "vision_model.post_layernorm.bias" ? nil : $0 }
        XCTAssertThrowsError(try Idefics2Encoder(folder: vision)) { error in
            XCTAssertTrue("\(error)".contains("tensor vision_model.post_layernorm.bias is missing"), "\(error)")
        }
        // A config that disagrees with the tensors: the shape error names the tensor and both shapes.
        var config = try String(contentsOfFile: NetworkFixtures.idefics2 + "/config.json", encoding: .utf8)
        config = config.replacingOccurrences(of: "\"intermediate_size\": 96", with: "\"intermediate_size\": 100")
        let wrong = try NetworkFixtures.editedFolder(config: config)
        XCTAssertThrowsError(try Idefics2Encoder(folder: wrong)) { error in
            XCTAssertEqual(error as? DecoderError, .wrongShape(path: wrong + "/model.safetensors",
                                                              tensor: "connector.modality_projection.gate_proj.weight",
                                                              expected: [100, 32], found: [96, 32]))
        }
    }

    /// A NaN in the weights is found at load and named (in the f32 path and in bf16's own embedding reader).
    func testNonFiniteWeightsAreNamed() throws {
        var norm = [Float](repeating: 1, count: 64)
        norm[7] = .nan
        let dir = try NetworkFixtures.editedFolder(values: ["text_model.norm.weight": norm])
        XCTAssertThrowsError(try Idefics2Encoder(folder: dir)) { error in
            XCTAssertEqual(error as? DecoderError, .nonFinite(path: dir + "/model.safetensors", tensor: "text_model.norm.weight", count: 1))
        }
        var embedding = [Float](repeating: 0.5, count: 32003 * 64)
        embedding[100] = .infinity
        embedding[64 * 32002] = -.infinity
        let embedded = try NetworkFixtures.editedFolder(values: ["text_model.embed_tokens.weight": embedding])
        for precision in WeightPrecision.allCases {
            XCTAssertThrowsError(try Idefics2Encoder(folder: embedded, precision: precision)) { error in
                XCTAssertEqual(error as? DecoderError, .nonFinite(path: embedded + "/model.safetensors", tensor: "text_model.embed_tokens.weight", count: 2))
            }
        }
    }

    func testImageTokenCountMustMatchTheEmbeddings() throws {
        let encoder = Self.encoderF32
        let ids = try NetworkFixtures.ids("ids1")  // 6 <image> tokens
        let (pixels, h, w) = try image("c")        // 5 patches
        let five = try encoder.encodeImage(pixels: pixels, height: h, width: w)
        XCTAssertThrowsError(try encoder.hiddenStates(ids: ids, imageEmbeddings: [five])) { error in
            XCTAssertTrue("\(error)".contains("6 <image> tokens (id 32001) but the images give 5 embeddings"), "\(error)")
        }
        XCTAssertThrowsError(try encoder.hiddenStates(ids: ids)) { error in
            XCTAssertTrue("\(error)".contains("6 <image> tokens"), "\(error)")
        }
        XCTAssertThrowsError(try encoder.hiddenStates(ids: [1, 5, 6], imageEmbeddings: [five])) { error in
            XCTAssertTrue("\(error)".contains("0 <image> tokens"), "\(error)")
        }
        XCTAssertThrowsError(try encoder.hiddenStates(ids: [1, 32001], imageEmbeddings: [Tensor(zeros: [1, 32])])) { error in
            XCTAssertTrue("\(error)".contains("not [n, 64]"), "\(error)")
        }
    }

    func testSequenceLongerThanMaxPositionsIsRefused() throws {
        let encoder = Self.encoderF32
        XCTAssertNoThrow(try encoder.hiddenStates(ids: [Int32](repeating: 7, count: 128)))
        XCTAssertThrowsError(try encoder.hiddenStates(ids: [Int32](repeating: 7, count: 129))) { error in
            XCTAssertTrue("\(error)".contains("129 tokens, more than the model's 128 positions"), "\(error)")
        }
        XCTAssertThrowsError(try encoder.hiddenStates(ids: [])) { XCTAssertTrue("\($0)".contains("empty"), "\($0)") }
        XCTAssertThrowsError(try encoder.hiddenStates(ids: [1, 32003])) { XCTAssertTrue("\($0)".contains("outside the vocabulary"), "\($0)") }
        XCTAssertThrowsError(try encoder.hiddenStates(ids: [1, -2])) { XCTAssertTrue("\($0)".contains("outside the vocabulary"), "\($0)") }
    }

    func testPixelsMustFitThePatchGrid() throws {
        let encoder = Self.encoderF32
        XCTAssertThrowsError(try encoder.encodeImage(pixels: [Float](repeating: 0, count: 3 * 15 * 14), height: 15, width: 14)) { error in
            XCTAssertTrue("\(error)".contains("not a positive multiple of the patch size 14"), "\(error)")
        }
        XCTAssertThrowsError(try encoder.encodeImage(pixels: [Float](repeating: 0, count: 10), height: 14, width: 14)) { error in
            XCTAssertTrue("\(error)".contains("10 pixel values for a 3x14x14 image"), "\(error)")
        }
        XCTAssertNil(encoder.patchGrid(height: 0, width: 14))
    }

    func testConnectorErrors() throws {
        // The Idefics2 weights hold a `connector.` too (the modality projection), but no MUMU connector.
        XCTAssertThrowsError(try MumuConnector(path: NetworkFixtures.idefics2 + "/model.safetensors")) { error in
            XCTAssertTrue("\(error)".contains("no MUMU connector in this checkpoint"), "\(error)")
        }
        let connector = try MumuConnector(path: NetworkFixtures.connector("w96"))
        XCTAssertThrowsError(try connector(Tensor(zeros: [3, 32]))) { XCTAssertTrue("\($0)".contains("want [T >= 1, 64]"), "\($0)") }
        XCTAssertThrowsError(try connector(Tensor(zeros: [0, 64]))) { XCTAssertTrue("\($0)".contains("want [T >= 1, 64]"), "\($0)") }

        // A layer's tensor missing is named.
        let source = try SafetensorsFile(path: NetworkFixtures.connector("w96"))
        let dir = try NetworkFixtures.temporaryDirectory()
        let path = dir.appendingPathComponent("c.safetensors").path
        try NetworkFixtures.write(path, try source.tensors.filter { $0.name != "connector.layers.1.attn.to_v.weight" }
            .map { ($0, try source.tensor($0.name)) })
        XCTAssertThrowsError(try MumuConnector(path: path)) { error in
            XCTAssertEqual(error as? DecoderError, .missingTensor(path: path, tensor: "connector.layers.1.attn.to_v.weight"))
        }
    }
}
