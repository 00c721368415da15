import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuMerge
import MumuTensor

/// LoRA extraction (`LoraExtractor`) against scripts/gen_fixtures_lora_extract.py: kohya's algorithm
/// (networks/extract_lora_from_models.py) run in torch on two tiny models under real SDXL sgm names, at
/// rank 4 / conv rank 2 and at full rank, with the same sign convention for the singular pairs.
///
/// Tolerances (relative Frobenius error per module of up·down against torch's up·down; measured values in
/// the comments of each test):
/// - F32 output against torch's f32 factors: `f32Tolerance` = 1e-4 (measured worst module 1.3e-6 at rank 4 / 2,
///   4.5e-6 at full rank). The SVDs (OpenBLAS sgesdd here, MKL's gesdd in torch) agree to f32 rounding, and so
///   do the clamp thresholds (linear interpolation between order statistics is continuous in the values).
/// - F16 output (the default) against torch's factors rounded to F16: `f16Tolerance` = 1e-4 (measured 2.9e-5: an
///   element whose f32 value lies near an F16 rounding boundary may round the other way, one F16 ulp); against
///   torch's f32 factors `f16RoundingTolerance` = 1e-3 (measured 3.5e-4, the F16 rounding itself).
final class LoraExtractTests: XCTestCase {
    static let f32Tolerance = 1e-4
    static let f16Tolerance = 1e-4
    static let f16RoundingTolerance = 1e-3

    // MARK: - fixtures

    static func fixture(_ name: String) -> String {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("lora_extract/" + name).path
    }

    struct Expected {
        struct Module {
            var key: String
            var rows: Range<Int>?
            var rank: Int
            var fullRank: Int
            var kind: String
            var downShape: [Int]
            var upShape: [Int]
        }
        var file: SafetensorsFile
        var modules: [String: Module]
        var keys: [String]
        var relativeError: Double
        var relativeErrorFull: Double

        func values(_ name: String) throws -> [Double] { try file.tensor(name).floats().map(Double.init) }
    }

    static func expected() throws -> Expected {
        let file = try SafetensorsFile(path: fixture("expected.safetensors"))
        let meta = file.metadata
        let modules = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(meta["modules"]!.utf8)) as? [String: [String: Any]])
        var out: [String: Expected.Module] = [:]
        for (name, m) in modules {
            let rows = (m["rows"] as? [Int]).map { $0[0]..<$0[1] }
            out[name] = .init(key: m["key"] as! String, rows: rows, rank: m["rank"] as! Int, fullRank: m["full_rank"] as! Int,
                              kind: m["kind"] as! String, downShape: m["down_shape"] as! [Int], upShape: m["up_shape"] as! [Int])
        }
        let keys = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(meta["keys"]!.utf8)) as? [String])
        return Expected(file: file, modules: out, keys: keys, relativeError: Double(meta["relative_error"]!)!,
                        relativeErrorFull: Double(meta["relative_error_full"]!)!)
    }

    var tmp: String!

    override func setUpWithError() throws {
        tmp = try makeTemporaryDirectory("lora-extract")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: tmp)
    }

    func models() throws -> (base: SafetensorsFile, tuned: SafetensorsFile) {
        (try SafetensorsFile(path: Self.fixture("base.safetensors")), try SafetensorsFile(path: Self.fixture("tuned.safetensors")))
    }

    @discardableResult
    func extract(rank: Int = 4, convRank: Int = 2, threads: Int = 2, dtype: DType = .f16, name: String = "out.safetensors",
                 clampQuantile: Float = LoraExtractor.defaultClampQuantile,
                 base: TensorSource? = nil, tuned: TensorSource? = nil) throws -> (path: String, report: LoraExtractReport) {
        let (b, t) = try models()
        let path = tmp + "/" + name
        let report = try LoraExtractor.extract(base: base ?? b, tuned: tuned ?? t, rank: rank, convRank: convRank,
                                               clampQuantile: clampQuantile, to: path, threads: threads, overwrite: false,
                                               dtype: dtype)
        return (path, report)
    }

    /// up·down of module `name` in a LoRA file, [out, in·kh·kw] row-major, in f64 from the stored factors.
    static func product(_ lora: SafetensorsFile, _ name: String) throws -> [Double] {
        let up = try lora.tensor(name + ".lora_up.weight"), down = try lora.tensor(name + ".lora_down.weight")
        let u = try up.floats(), d = try down.floats()
        let out = up.info.shape[0], r = up.info.shape[1], inner = down.info.elementCount / r
        var p = [Double](repeating: 0, count: out * inner)
        for i in 0..<out {
            for k in 0..<r {
                let a = Double(u[i * r + k])
                for j in 0..<inner { p[i * inner + j] += a * Double(d[k * inner + j]) }
            }
        }
        return p
    }

    static func relative(_ got: [Double], _ want: [Double]) -> Double {
        precondition(got.count == want.count)
        var e = 0.0, n = 0.0
        for (g, w) in zip(got, want) { e += (g - w) * (g - w); n += w * w }
        return (e / max(n, 1e-300)).squareRoot()
    }

    /// Compares every module's up·down with the fixture's `<name><suffix>`; returns the worst relative error.
    private func compareProducts(_ path: String, suffix: String, tolerance: Double, rankOf: (Expected.Module) -> Int,
                                 file: StaticString = #filePath, line: UInt = #line) throws -> Double {
        let exp = try Self.expected()
        let lora = try SafetensorsFile(path: path)
        var worst = 0.0
        for (name, m) in exp.modules.sorted(by: { $0.key < $1.key }) {
            let r = rankOf(m)
            let down = try XCTUnwrap(lora.infoByName[name + ".lora_down.weight"], name, file: file, line: line)
            XCTAssertEqual(down.shape.first, r, name, file: file, line: line)
            let rel = Self.relative(try Self.product(lora, name), try exp.values(name + suffix))
            worst = max(worst, rel)
            XCTAssertLessThanOrEqual(rel, tolerance, "\(name): up·down vs torch's \(suffix)", file: file, line: line)
        }
        return worst
    }

    // MARK: - against kohya's algorithm in torch

    /// F32 factors against torch's, rank 4 / conv rank 2: measured worst module 1.3e-6.
    func testMatchesKohyaInF32() throws {
        let (path, report) = try extract(dtype: .f32)
        let worst = try compareProducts(path, suffix: ".product", tolerance: Self.f32Tolerance, rankOf: \.rank)
        print("rank 4/2, F32: worst module relative error vs torch \(worst)")
        let exp = try Self.expected()
        XCTAssertEqual(report.modules, exp.modules.count)
        // The report's error is computed from F32 factors here; the fixture's from F16 ones.
        XCTAssertEqual(report.relativeError, exp.relativeError, accuracy: 1e-3)
    }

    /// The default F16 file: key set, shapes, dtypes, alpha = r, metadata, products, notes, detection.
    func testDefaultF16File() throws {
        let (path, report) = try extract(threads: 3)
        let exp = try Self.expected()
        let lora = try SafetensorsFile(path: path)
        XCTAssertEqual(lora.names.sorted(), exp.keys)
        XCTAssertEqual(report.modules, exp.modules.count)
        for (name, m) in exp.modules {
            let down = try XCTUnwrap(lora.infoByName[name + ".lora_down.weight"])
            let up = try XCTUnwrap(lora.infoByName[name + ".lora_up.weight"])
            let alpha = try lora.tensor(name + ".alpha")
            XCTAssertEqual(down.shape, m.downShape, name)
            XCTAssertEqual(up.shape, m.upShape, name)
            XCTAssertEqual(alpha.info.shape, [], name)
            XCTAssertEqual(down.dtype, .f16); XCTAssertEqual(up.dtype, .f16); XCTAssertEqual(alpha.info.dtype, .f16)
            XCTAssertEqual(try alpha.floats(), [Float(m.rank)], name)
        }
        let worst16 = try compareProducts(path, suffix: ".product16", tolerance: Self.f16Tolerance, rankOf: \.rank)
        let worst32 = try compareProducts(path, suffix: ".product", tolerance: Self.f16RoundingTolerance, rankOf: \.rank)
        print("rank 4/2, F16: worst module relative error vs torch's F16 factors \(worst16), vs its f32 factors \(worst32); "
              + "report \(report.relativeError), torch \(exp.relativeError)")
        XCTAssertEqual(report.relativeError, exp.relativeError, accuracy: 1e-4 * exp.relativeError)

        let meta = lora.metadata
        XCTAssertEqual(meta["ss_network_module"], "networks.lora")
        XCTAssertEqual(meta["ss_network_dim"], "4")
        XCTAssertEqual(meta["ss_network_alpha"], "4.0")
        XCTAssertEqual(meta["ss_network_args"], "{\"conv_dim\": \"2\", \"conv_alpha\": \"2.0\"}")
        XCTAssertEqual(meta["ss_base_model_version"], "sdxl_base_v1-0")
        XCTAssertEqual(meta["modelspec.sai_model_spec"], "1.0.1")
        XCTAssertEqual(meta["modelspec.architecture"], "stable-diffusion-xl-v1-base/lora")
        XCTAssertEqual(meta["modelspec.title"], "out")
        let from = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(meta["mumu_extracted_from"]!.utf8)) as? [String: String])
        XCTAssertEqual(from, ["base": "base.safetensors", "tuned": "tuned.safetensors"])

        // Zero-delta modules (a whole tensor, and bigG's v block of the fused in_proj) are skipped and noted.
        for name in ["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_out_0", "lora_te2_text_model_encoder_layers_0_self_attn_v_proj"] {
            XCTAssertNil(lora.infoByName[name + ".lora_up.weight"], name)
            XCTAssertTrue(report.skipped.contains { $0.hasPrefix(name + ":") && $0.contains("unchanged") }, "\(report.skipped)")
        }
        // The summary `lora extract` prints folds them into one count.
        XCTAssertEqual(report.unchanged, report.skipped.filter { $0.contains("unchanged") }.count)
        XCTAssertGreaterThanOrEqual(report.unchanged, 2)
        XCTAssertEqual(report.summary.filter { $0.contains("unchanged") }, ["\(report.unchanged) modules unchanged (zero delta), not extracted"])

        // LoraDetector sees a kohya LoCon for SDXL.
        let d = try XCTUnwrap(try LoraDetector.detect(lora))
        XCTAssertEqual(d.layout, "kohya")
        XCTAssertEqual(d.kind, "LoCon")
        XCTAssertEqual(d.architecture, "sdxl-base")
        XCTAssertEqual(d.ranks, [2, 4])
        XCTAssertEqual(d.targets["te1"], 2); XCTAssertEqual(d.targets["te2"], 4)
    }

    /// Full rank (r = min(out, in·kh·kw)): torch's full-rank products (measured worst 4.5e-6), and the delta
    /// up to what the 0.99-quantile clamp removes (it still applies: 8.9% aggregate error on these tiny modules,
    /// the same as torch's to 2e-6).
    func testFullRank() throws {
        let (path, report) = try extract(rank: 10_000, convRank: 10_000, dtype: .f32)
        let worst = try compareProducts(path, suffix: ".product_full", tolerance: Self.f32Tolerance, rankOf: \.fullRank)
        let exp = try Self.expected()
        print("full rank, F32: worst module vs torch \(worst); relative error vs delta \(report.relativeError) (torch, F16 factors: \(exp.relativeErrorFull))")
        XCTAssertEqual(report.relativeError, exp.relativeErrorFull, accuracy: 1e-3)
        let (_, rank4) = try extract(dtype: .f32, name: "r4.safetensors")
        XCTAssertLessThan(report.relativeError, rank4.relativeError)
    }

    /// Where the clamp binds nothing, full rank gives back the delta: a constant block (one singular pair,
    /// whose |up| entries tie at the top of the quantile). Measured 1.6e-7.
    func testFullRankWithoutClampEffectReproducesDelta() throws {
        let key = "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_v.weight"
        let base = MemorySource(path: "b.safetensors", [key: ([12, 16], (0..<192).map { Float($0 % 7) * 0.01 })])
        let tuned = MemorySource(path: "t.safetensors", [key: ([12, 16], (0..<192).map { Float($0 % 7) * 0.01 + 0.5 })])
        let (path, report) = try extract(rank: 100, convRank: 0, dtype: .f32, base: base, tuned: tuned)
        XCTAssertEqual(report.modules, 1)
        let lora = try SafetensorsFile(path: path)
        let name = "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v"
        XCTAssertEqual(lora.infoByName[name + ".lora_down.weight"]?.shape, [12, 16])
        let rel = Self.relative(try Self.product(lora, name), [Double](repeating: 0.5, count: 192))
        print("constant delta, full rank: relative error \(rel), report \(report.relativeError)")
        XCTAssertLessThan(rel, 1e-5)
        XCTAssertLessThan(report.relativeError, 1e-5)
    }

    /// `clampQuantile: 1` clamps nothing: at full rank the fixture's delta comes back to f32's precision (measured
    /// 5.4e-7), where the default 0.99 clamp cuts the largest factor values (measured 0.089); the file records the
    /// quantile when it is not kohya's default; a quantile outside (0, 1] is refused.
    func testClampQuantileOneKeepsTheDeltaWhole() throws {
        let (path, whole) = try extract(rank: 10_000, convRank: 10_000, dtype: .f32, name: "q1.safetensors", clampQuantile: 1)
        let (clampedPath, clamped) = try extract(rank: 10_000, convRank: 10_000, dtype: .f32, name: "q099.safetensors")
        print("full rank: relative error \(whole.relativeError) without the clamp, \(clamped.relativeError) with 0.99")
        XCTAssertLessThan(whole.relativeError, 1e-5)
        XCTAssertGreaterThan(clamped.relativeError, 100 * whole.relativeError)
        XCTAssertEqual(try SafetensorsFile(path: path).metadata["mumu_clamp_quantile"], "1.0")
        XCTAssertNil(try SafetensorsFile(path: clampedPath).metadata["mumu_clamp_quantile"])
        for q: Float in [0, -0.5, 1.5, .nan] {
            XCTAssertThrowsError(try extract(name: "bad.safetensors", clampQuantile: q)) {
                XCTAssertTrue("\($0)".contains("clamp quantile must be above 0 and at most 1"), "\($0)")
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/bad.safetensors"))
    }

    /// kohya as-is takes whatever signs its LAPACK returns, and the signed quantile moves with them: against
    /// torch's (MKL's) signs without the sign convention products differ by up to 26% on these tiny modules
    /// (the 0.99 quantile of 100-300 values is one of the few largest). Informational: asserts a loose bound.
    func testSignConventionEffect() throws {
        let (path, _) = try extract(dtype: .f32)
        let exp = try Self.expected()
        let lora = try SafetensorsFile(path: path)
        var worst = 0.0
        for name in exp.modules.keys {
            worst = max(worst, Self.relative(try Self.product(lora, name), try exp.values(name + ".product_raw")))
        }
        print("against kohya with MKL's signs (no sign convention): worst module \(worst)")
        XCTAssertLessThan(worst, 0.5)
    }

    // MARK: - loading and baking

    /// The extracted file loads in LoraPatchSet, matches every module, and baking it gives base + up·down.
    /// Measured worst 5e-8 of the largest value.
    func testBakesBackWithLoraPatchSet() throws {
        let (path, _) = try extract()
        let (base, _) = try models()
        let lora = try SafetensorsFile(path: path)
        let set = try LoraPatchSet(source: lora, target: base.tensors)
        XCTAssertEqual(set.unmatchedModules, [])
        let exp = try Self.expected()
        XCTAssertEqual(set.patchedKeys, Set(exp.modules.values.map(\.key)))
        var worst: Float = 0
        for key in set.patchedKeys.sorted() {
            let w = try base.tensor(key).floats()
            var got = w
            let rows = base.infoByName[key]!.shape[0]
            try got.withUnsafeMutableBufferPointer {
                try set.apply(key: key, rows: 0..<rows, values: $0.baseAddress!, strength: 1)
            }
            var want = w.map(Double.init)
            let inner = w.count / rows
            for (name, m) in exp.modules where m.key == key {
                let p = try Self.product(lora, name)
                let first = m.rows?.lowerBound ?? 0
                for i in 0..<p.count { want[first * inner + i] += p[i] }
            }
            let scale = want.map(abs).max()!
            for i in 0..<w.count { worst = max(worst, Float(abs(Double(got[i]) - want[i]) / scale)) }
        }
        print("bake: worst |got - (W + up·down)| / max|W'| = \(worst)")
        XCTAssertLessThan(worst, 1e-6)
    }

    // MARK: - streaming, errors

    func testThreadsGiveIdenticalFiles() throws {
        // Same file name (the title comes from it), two folders.
        for d in ["t1", "t3"] { try FileManager.default.createDirectory(atPath: tmp + "/" + d, withIntermediateDirectories: true) }
        let (a, ra) = try extract(threads: 1, name: "t1/lora.safetensors")
        let (b, rb) = try extract(threads: 3, name: "t3/lora.safetensors")
        XCTAssertEqual(ra.relativeError, rb.relativeError)
        let da = try Data(contentsOf: URL(fileURLWithPath: a)), db = try Data(contentsOf: URL(fileURLWithPath: b))
        XCTAssertEqual(da.count, db.count)
        XCTAssertTrue(da == db, "threads 1 and 3 wrote different bytes")
    }

    func testConvRankZeroLeavesResBlocksOut() throws {
        let (path, report) = try extract(convRank: 0)
        let lora = try SafetensorsFile(path: path)
        let exp = try Self.expected()
        let convPrefixes = ["lora_unet_input_blocks_4_0", "lora_unet_input_blocks_3_0", "lora_unet_output_blocks_2_2"]
        let linear = exp.modules.filter { name, _ in !convPrefixes.contains { name.hasPrefix($0) } }
        XCTAssertEqual(report.modules, linear.count)
        XCTAssertEqual(Set(lora.names.map { String($0.prefix { $0 != "." }) }), Set(linear.keys))
        XCTAssertTrue(report.skipped.contains { $0.contains("5 ResBlock / Downsample / Upsample layers not extracted") }, "\(report.skipped)")
        XCTAssertEqual(lora.metadata["ss_network_args"], "{}")
        XCTAssertEqual(try LoraDetector.detect(lora)?.kind, "LoRA")
    }

    /// `layers: .full` adds the UNet's outer layers kohya leaves out (LyCORIS's full preset): the time and label
    /// embeddings' linears at the rank, conv_in and conv_out at the conv rank; the file says so, LoraPatchSet
    /// matches the new modules by their sgm names, and baking gives the delta back (its rank 1 kept whole: measured
    /// 3e-8 from the tuned weights).
    func testFullLayersAddTheOuterLayers() throws {
        let sdxl = try XCTUnwrap(Architectures.named("sdxl-base"))
        let model = sdxl.tensors.map { TensorInfo(name: $0.name, dtype: .f16, shape: $0.shape) }
        func modules(_ layers: LoraExtractor.Layers, convRank: Int) throws -> Set<String> {
            Set(try LoraExtractor.plannedOutputs(model: model, rank: 8, convRank: convRank, layers: layers).map { String($0.name.prefix { $0 != "." }) })
        }
        let embeddings: Set = ["lora_unet_time_embed_0", "lora_unet_time_embed_2", "lora_unet_label_emb_0_0", "lora_unet_label_emb_0_2"]
        XCTAssertEqual(try modules(.full, convRank: 8).subtracting(try modules(.kohya, convRank: 8)),
                       embeddings.union(["lora_unet_input_blocks_0_0", "lora_unet_out_2"]))
        XCTAssertEqual(try modules(.full, convRank: 0).subtracting(try modules(.kohya, convRank: 0)), embeddings)

        let key = "model.diffusion_model.time_embed.0.weight", other = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
        let w = (0..<96).map { Float($0 % 5) * 0.1 }
        let base = MemorySource(path: "b.safetensors", [key: ([12, 8], w), other: ([8, 8], [Float](repeating: 0.1, count: 64))])
        let tuned = MemorySource(path: "t.safetensors", [key: ([12, 8], w.enumerated().map { $0.1 + Float($0.0 / 8) * 0.01 }),
                                                         other: ([8, 8], [Float](repeating: 0.2, count: 64))])
        let path = tmp + "/full.safetensors"
        let report = try LoraExtractor.extract(base: base, tuned: tuned, rank: 4, convRank: 4, layers: .full, to: path,
                                               threads: 1, overwrite: false, dtype: .f32)
        XCTAssertEqual(report.modules, 2)
        let lora = try SafetensorsFile(path: path)
        XCTAssertEqual(lora.metadata["mumu_layers"], "full")
        let set = try LoraPatchSet(source: lora, target: base.tensors)
        XCTAssertEqual(set.unmatchedModules, [])
        XCTAssertEqual(set.patchedKeys, [key, other])
        var got = w
        try got.withUnsafeMutableBufferPointer { try set.apply(key: key, rows: 0..<12, values: $0.baseAddress!, strength: 1) }
        let want = try tuned.tensor(key).floats()
        let worst = zip(got, want).map { abs($0 - $1) }.max()!
        print("full layers: time_embed.0 baked back, worst |got - tuned| \(worst)")
        XCTAssertLessThan(worst, 1e-6)
        // kohya's targets leave the time embedding alone.
        let kohya = try LoraExtractor.extract(base: base, tuned: tuned, rank: 4, convRank: 4, to: tmp + "/kohya.safetensors",
                                              threads: 1, overwrite: false, dtype: .f32)
        XCTAssertEqual(kohya.modules, 1)
        XCTAssertNil(try SafetensorsFile(path: tmp + "/kohya.safetensors").metadata["mumu_layers"])
    }

    /// SD1's text encoder is kohya's `lora_te_`, which LoraPatchSet maps back; non-targets are left alone.
    func testSD1TextEncoderNames() throws {
        let q = "cond_stage_model.transformer.text_model.encoder.layers.3.self_attn.q_proj.weight"
        let proj = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
        let norm = "model.diffusion_model.input_blocks.1.1.norm.weight"
        let ramp = (0..<64).map { Float($0) * 0.01 }
        let base = MemorySource(path: "b", [q: ([8, 8], ramp), proj: ([8, 8, 1, 1], ramp), norm: ([8], Array(ramp[0..<8]))])
        let tuned = MemorySource(path: "t", [q: ([8, 8], ramp.map { $0 * 1.5 }), proj: ([8, 8, 1, 1], ramp.map { $0 + 0.1 }),
                                             norm: ([8], Array(ramp[0..<8]).map { $0 + 1 })])
        let (path, report) = try extract(rank: 2, base: base, tuned: tuned)
        XCTAssertEqual(report.modules, 2)
        let lora = try SafetensorsFile(path: path)
        XCTAssertEqual(Set(lora.names), ["lora_te_text_model_encoder_layers_3_self_attn_q_proj.alpha",
                                         "lora_te_text_model_encoder_layers_3_self_attn_q_proj.lora_down.weight",
                                         "lora_te_text_model_encoder_layers_3_self_attn_q_proj.lora_up.weight",
                                         "lora_unet_input_blocks_1_1_proj_in.alpha",
                                         "lora_unet_input_blocks_1_1_proj_in.lora_down.weight",
                                         "lora_unet_input_blocks_1_1_proj_in.lora_up.weight"])
        XCTAssertEqual(lora.infoByName["lora_unet_input_blocks_1_1_proj_in.lora_down.weight"]?.shape, [2, 8, 1, 1])
        XCTAssertEqual(lora.infoByName["lora_unet_input_blocks_1_1_proj_in.lora_up.weight"]?.shape, [8, 2, 1, 1])
        let set = try LoraPatchSet(source: lora, target: base.tensors)
        XCTAssertEqual(set.patchedKeys, [q, proj])
        XCTAssertEqual(set.unmatchedModules, [])
    }

    func testMismatchedShapesThrowNamingBoth() throws {
        let key = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
        let base = MemorySource(path: "b.safetensors", [key: ([16, 24], [Float](repeating: 0, count: 384))])
        let tuned = MemorySource(path: "t.safetensors", [key: ([16, 32], [Float](repeating: 1, count: 512))])
        XCTAssertThrowsError(try extract(base: base, tuned: tuned)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(key) && text.contains("[16, 24]") && text.contains("[16, 32]"), text)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/out.safetensors"))
    }

    func testRefusals() throws {
        XCTAssertThrowsError(try extract(rank: 0)) { XCTAssertTrue("\($0)".contains("rank must be at least 1"), "\($0)") }
        XCTAssertThrowsError(try extract(convRank: -1)) { XCTAssertTrue("\($0)".contains("conv rank"), "\($0)") }
        // Identical models: nothing to extract.
        let (base, _) = try models()
        XCTAssertThrowsError(try extract(base: base, tuned: base)) { XCTAssertTrue("\($0)".contains("identical"), "\($0)") }
        // An existing output needs overwrite.
        let (path, _) = try extract()
        let (b, t) = try models()
        XCTAssertThrowsError(try LoraExtractor.extract(base: b, tuned: t, rank: 4, convRank: 2, to: path, threads: 1, overwrite: false))
        XCTAssertEqual(try LoraExtractor.extract(base: b, tuned: t, rank: 4, convRank: 2, to: path, threads: 1, overwrite: true).modules, 16)
        // Non-finite values name the file and tensor.
        let key = "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc2.weight"
        let good = MemorySource(path: "b.safetensors", [key: ([4, 4], [Float](repeating: 0, count: 16))])
        let bad = MemorySource(path: "t.safetensors", [key: ([4, 4], [Float](repeating: .nan, count: 16))])
        XCTAssertThrowsError(try extract(name: "nan.safetensors", base: good, tuned: bad)) {
            XCTAssertTrue("\($0)".contains("t.safetensors") && "\($0)".contains(key), "\($0)")
        }
    }

    /// The size of a rank-64 extraction of SDXL base (UNet + both text encoders), from its shapes: measured
    /// 456,481,372 bytes (0.0658 of the 6.94 GB f16 checkpoint) with conv rank 0, 509,549,472 (0.0734) with 64.
    func testPlannedSizeForSDXL() throws {
        let sdxl = try XCTUnwrap(Architectures.named("sdxl-base"))
        let model = sdxl.tensors.map { TensorInfo(name: $0.name, dtype: .f16, shape: $0.shape) }
        let checkpoint = model.reduce(0) { $0 + $1.byteCount }
        for convRank in [0, 64] {
            let outputs = try LoraExtractor.plannedOutputs(model: model, rank: 64, convRank: convRank)
            let bytes = try SafetensorsWriter.layout(outputs, metadata: [:]).totalSize
            print("SDXL rank 64, conv rank \(convRank): \(outputs.count / 3) modules, \(bytes) bytes = "
                  + String(format: "%.4f", Double(bytes) / Double(checkpoint)) + " of the \(checkpoint)-byte f16 checkpoint")
        }
        // kohya's module count for SDXL.
        let linear = try LoraExtractor.plannedOutputs(model: model, rank: 64, convRank: 0).count / 3
        XCTAssertEqual(linear, 722 + 72 + 192)   // UNet transformer linears; CLIP-L 12 x 6; bigG 32 x 6
    }

    /// Seconds per module for SDXL's module shapes at rank 64, one thread, and the whole-model estimate from
    /// them. Slow (a minute or more): runs only with MUMU_LORA_EXTRACT_TIMING=1.
    func testTimingPerModuleClass() throws {
        guard ProcessInfo.processInfo.environment["MUMU_LORA_EXTRACT_TIMING"] == "1" else {
            throw XCTSkip("set MUMU_LORA_EXTRACT_TIMING=1 to time SDXL-sized modules")
        }
        let key = "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight"
        let convKey = "model.diffusion_model.middle_block.0.in_layers.2.weight"
        var seconds: [[Int]: Double] = [:]
        // Every Linear shape SDXL's LoRA modules have (bigG's q/k/v are 1280 x 1280 row blocks), and three convs.
        let shapes: [[Int]] = [[768, 768], [768, 3072], [3072, 768], [640, 640], [640, 2048], [640, 2560], [5120, 640],
                               [1280, 1280], [1280, 2048], [1280, 5120], [5120, 1280], [10240, 1280],
                               [320, 320, 3, 3], [1280, 1280, 3, 3], [1280, 2560, 3, 3]]
        var state: UInt64 = 0x9E3779B97F4A7C15
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max) * 0.01
        }
        for shape in shapes {
            let n = shape.reduce(1, *)
            let k = shape.count == 4 ? convKey : key
            let base = MemorySource(path: "b", [k: (shape, [Float](repeating: 0, count: n))])
            let tuned = MemorySource(path: "t", [k: (shape, (0..<n).map { _ in next() })])
            let start = Date()
            try extract(rank: 64, convRank: 64, threads: 1, name: "time-\(shape.map(String.init).joined(separator: "x")).safetensors",
                        base: base, tuned: tuned)
            seconds[shape] = Date().timeIntervalSince(start)
            print("LoRA extract timing: \(shape) rank 64: " + String(format: "%.2f s", seconds[shape]!))
        }
        // The whole of SDXL base, one thread, from the per-shape times; a shape not timed (a few ResBlock convs
        // and time-embedding linears) scaled from the timed shape of nearest cost by out·in·min(out, in).
        func cost(_ s: [Int]) -> Double { let o = s[0], i = s.dropFirst().reduce(1, *); return Double(o * i * min(o, i)) }
        let sdxl = try XCTUnwrap(Architectures.named("sdxl-base"))
        let model = sdxl.tensors.map { TensorInfo(name: $0.name, dtype: .f16, shape: $0.shape) }
        for convRank in [0, 64] {
            var total = 0.0, scaled = 0.0
            var byClass: [String: (count: Int, seconds: Double)] = [:]
            let outputs = try LoraExtractor.plannedOutputs(model: model, rank: 64, convRank: convRank)
            let byName = Dictionary(uniqueKeysWithValues: outputs.map { ($0.name, $0) })
            for down in outputs where down.name.hasSuffix(".lora_down.weight") {
                let module = String(down.name.dropLast(".lora_down.weight".count))
                let up = byName[module + ".lora_up.weight"]!
                let shape = [up.shape[0]] + down.shape.dropFirst()
                var t = seconds[shape]
                if t == nil {
                    let ref = seconds.keys.min { abs(log(cost($0) / cost(shape))) < abs(log(cost($1) / cost(shape))) }!
                    t = seconds[ref]! * cost(shape) / cost(ref)
                    scaled += t!
                }
                total += t!
                let c = module.hasPrefix("lora_te") ? String(module.prefix(8))
                    : (module.contains("transformer_blocks") || module.hasSuffix("proj_in") || module.hasSuffix("proj_out") ? "unet transformer" : "unet resblock/sampler")
                byClass[c, default: (0, 0)].count += 1
                byClass[c, default: (0, 0)].seconds += t!
            }
            print("LoRA extract timing: SDXL base, rank 64, conv rank \(convRank), one thread: about " + String(format: "%.0f s", total)
                  + String(format: " (%.0f s of it scaled from other shapes); ", scaled)
                  + byClass.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.count) modules " + String(format: "%.0f s", $0.value.seconds) }
                    .joined(separator: ", "))
        }
    }
}
/// Tensors held in memory (F32), for cases the fixture files do not cover.
final class MemorySource: TensorSource, @unchecked Sendable {
    let path: String
    let tensors: [TensorInfo]
    let metadata: [String: String] = [:]
    private let values: [String: [Float]]

    init(path: String, _ content: [String: (shape: [Int], values: [Float])]) {
        self.path = path
        tensors = content.keys.sorted().map { TensorInfo(name: $0, dtype: .f32, shape: content[$0]!.shape) }
        values = content.mapValues(\.values)
    }

    func tensor(_ name: String) throws -> TensorData {
        guard let v = values[name], let info = tensors.first(where: { $0.name == name }) else {
            throw FormatError.missingTensor(path: path, tensor: name)
        }
        return TensorData.owned(info, bytes: v.withUnsafeBytes { Array($0) })
    }
}

/// The randomized SVD used for large matrices against LAPACK's exact one: the error of the kept rank is
/// within 1% of the optimum when the delta has structure (low rank + noise, what fine-tunes look like) and
/// within 3% on pure noise (the worst case for a range finder); the output is the same whatever the threads.
final class RandomizedSVDTests: XCTestCase {
    func files(_ name: String, rows: Int, cols: Int, structured: Bool) throws -> (String, String) {
        let dir = testScratchRoot + "/rsvd"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let key = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
        let info = TensorInfo(name: key, dtype: .f32, shape: [rows, cols])
        var g = SystemRandomNumberGenerator()
        func gauss() -> Float { Float((-2 * log(Double.random(in: 1e-12..<1, using: &g))).squareRoot() * cos(2 * .pi * Double.random(in: 0..<1, using: &g))) }
        var delta = [Float](repeating: 0, count: rows * cols)
        if structured {
            let r = 40
            let a = (0..<(rows * r)).map { _ in gauss() }, b = (0..<(r * cols)).map { _ in gauss() }
            for i in 0..<rows { for t in 0..<r { let x = a[i * r + t] * Float(1 + r - t) / Float(r); for j in 0..<cols { delta[i * cols + j] += x * b[t * cols + j] } } }
            for i in delta.indices { delta[i] = delta[i] * 0.01 + 0.002 * gauss() }
        } else {
            for i in delta.indices { delta[i] = 0.01 * gauss() }
        }
        let base = dir + "/\(name)-base.safetensors", tuned = dir + "/\(name)-tuned.safetensors"
        for (path, values) in [(base, [Float](repeating: 0, count: rows * cols)), (tuned, delta)] {
            let w = try SafetensorsWriter(path: path, tensors: [info], overwrite: true)
            try values.withUnsafeBytes { try w.write(key, $0) }
            try w.finish()
        }
        return (base, tuned)
    }

    func testRandomizedIsCloseToExact() throws {
        defer { LoraExtractor.svdMode = .auto }
        for (structured, bound) in [(true, 1.01), (false, 1.03)] {
            let (b, t) = try files(structured ? "s" : "n", rows: 700, cols: 500, structured: structured)
            let out = testScratchRoot + "/rsvd/out.safetensors"
            var errors: [Double] = []
            for mode in [LoraExtractor.SVDMode.exact, .auto] {
                LoraExtractor.svdMode = mode
                let report = try LoraExtractor.extract(base: try SafetensorsFile(path: b), tuned: try SafetensorsFile(path: t), rank: 32,
                                                       convRank: 0, to: out, threads: 1, overwrite: true)
                errors.append(report.relativeError)
            }
            print("rank-32 of 700x500 (\(structured ? "structured" : "noise")): exact \(errors[0]), randomized \(errors[1])")
            XCTAssertLessThanOrEqual(errors[1], errors[0] * bound)
            XCTAssertGreaterThanOrEqual(errors[1], errors[0] * 0.999, "nothing beats the optimum")
        }
    }
}
