import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuMerge
import MumuTensor

/// LoRA bake-in (`LoraPatchSet`) against the fixtures of scripts/gen_fixtures_lora.py (copied from
/// MumuFormatsTests: kohya LoRA / LoCon, LyCORIS LoHa / LoKr / DoRA (both magnitude axes), PEFT) and
/// scripts/gen_fixtures_lora_bake.py (kohya with diffusers UNet names, te2 q/k/v on one in_proj, missing
/// and zero alpha, conv-shaped factors on a Linear, LoCon / LoHa / LoKr Tucker cores, LoKr w1_a @ w1_b,
/// PEFT DoRA), all for sdxl-tiny. Expected values were computed in float64 from the stored factors and
/// stored as f32; bake computes in f32 (factors decoded from F16 / BF16 / F32), so results agree to ~2e-7 of the
/// largest value (measured: 1.5e-7 at strength 1, 1.9e-7 at 0.5 / -0.75); the tests allow `tolerance`, relative
/// to the largest |expected value| of the tensor.
final class LoraBakeTests: XCTestCase {
    /// Largest |got - want| / max|want| allowed per tensor.
    static let tolerance: Float = 1e-6

    struct ModuleCase {
        var name: String          // module name in the file
        var key: String           // sgm tensor
        var rows: Range<Int>?     // row block of key (te2 q/k/v)
        var delta: String?        // key of scale * dW in the deltas file
        var base: String?         // DoRA: W
        var merged: String?       // DoRA: W'
    }

    struct FileCase {
        var file: String
        var modules: [ModuleCase]
        var unmatched: [String]
        var deltas: SafetensorsFile
    }

    // MARK: - fixtures

    static func fixture(_ relative: String) -> String {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("lora/" + relative).path
    }

    /// sdxl-tiny's tensors as a model would list them (sgm names).
    static let target: [TensorInfo] = Architectures.named("sdxl-tiny")!.tensors.map {
        TensorInfo(name: $0.name, dtype: .f32, shape: $0.shape)
    }
    static var shapes: [String: [Int]] { Dictionary(uniqueKeysWithValues: target.map { ($0.name, $0.shape) }) }

    private func json(_ file: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.fixture(file)))
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    private static func rows(_ v: Any?) -> Range<Int>? {
        guard let r = v as? [Int], r.count == 2 else { return nil }
        return r[0]..<r[1]
    }

    /// Every fixture file with its modules (both expectation files).
    private func cases() throws -> [FileCase] {
        var out: [FileCase] = []
        // scripts/gen_fixtures_lora.py: modules keyed by kohya name; DoRA files store base and merged.
        let first = try json("lora_expected.json")
        let firstDeltas = try SafetensorsFile(path: Self.fixture("lora_expected_deltas.safetensors"))
        for (file, value) in try XCTUnwrap(first["files"] as? [String: [String: Any]]).sorted(by: { $0.key < $1.key }) {
            let stem = String(file.dropLast(".safetensors".count))
            let dora = (value["kind"] as? String) == "dora"
            let modules = try XCTUnwrap(value["modules"] as? [[String: Any]]).map { m -> ModuleCase in
                let kohya = m["kohya"] as! String
                return ModuleCase(name: (m["peft_module"] as? String) ?? kohya, key: m["sgm_weight"] as! String,
                                  rows: Self.rows(m["rows"]),
                                  delta: dora ? nil : "\(stem)/\(kohya)",
                                  base: dora ? "\(stem).base/\(kohya)" : nil, merged: dora ? "\(stem).merged/\(kohya)" : nil)
            }
            out.append(FileCase(file: file, modules: modules, unmatched: [], deltas: firstDeltas))
        }
        // scripts/gen_fixtures_lora_bake.py: modules keyed by their name in the file.
        let second = try json("lora_bake_expected.json")
        let secondDeltas = try SafetensorsFile(path: Self.fixture("lora_bake_expected_deltas.safetensors"))
        for (file, value) in try XCTUnwrap(second["files"] as? [String: [String: Any]]).sorted(by: { $0.key < $1.key }) {
            let stem = String(file.dropLast(".safetensors".count))
            let modules = try XCTUnwrap(value["modules"] as? [[String: Any]]).map { m -> ModuleCase in
                let name = m["name"] as! String
                let dora = (m["kind"] as? String) == "dora"
                return ModuleCase(name: name, key: m["sgm_weight"] as! String, rows: Self.rows(m["rows"]),
                                  delta: dora ? nil : "\(stem)/\(name)",
                                  base: dora ? "\(stem).base/\(name)" : nil, merged: dora ? "\(stem).merged/\(name)" : nil)
            }
            out.append(FileCase(file: file, modules: modules, unmatched: value["unmatched"] as? [String] ?? [],
                                deltas: secondDeltas))
        }
        return out
    }

    private func floats(_ source: SafetensorsFile, _ name: String) throws -> [Float] {
        try source.tensor(name).floats()
    }

    /// The weight before (zeros, with DoRA bases in their blocks) and the expected weight after baking at `strength`.
    private func expectation(_ c: FileCase, key: String, strength: Float) throws -> (base: [Float], want: [Float]) {
        let shape = try XCTUnwrap(Self.shapes[key])
        let rowSize = shape.dropFirst().reduce(1, *)
        var base = [Float](repeating: 0, count: shape.reduce(1, *))
        for m in c.modules where m.key == key {
            if let b = m.base {
                let offset = (m.rows?.lowerBound ?? 0) * rowSize
                let values = try floats(c.deltas, b)
                base.replaceSubrange(offset..<offset + values.count, with: values)
            }
        }
        var want = base
        for m in c.modules where m.key == key {
            let offset = (m.rows?.lowerBound ?? 0) * rowSize
            if let d = m.delta {
                for (i, v) in try floats(c.deltas, d).enumerated() { want[offset + i] += strength * v }
            } else if let mg = m.merged {
                for (i, v) in try floats(c.deltas, mg).enumerated() {
                    let w = want[offset + i]
                    want[offset + i] = w + strength * (v - w)
                }
            }
        }
        return (base, want)
    }

    /// Applies in the given row chunks, each through its own buffer of exactly those rows.
    private func bake(_ set: LoraPatchSet, key: String, base: [Float], chunks: [Range<Int>], strength: Float = 1) throws -> [Float] {
        let shape = Self.shapes[key]!
        let rowSize = shape.isEmpty ? 1 : shape.dropFirst().reduce(1, *)
        var out = base
        for r in chunks {
            var part = Array(out[r.lowerBound * rowSize ..< r.upperBound * rowSize])
            try part.withUnsafeMutableBufferPointer {
                try set.apply(key: key, rows: r, values: $0.baseAddress!, strength: strength)
            }
            out.replaceSubrange(r.lowerBound * rowSize ..< r.upperBound * rowSize, with: part)
        }
        return out
    }

    /// Row chunks of sizes cycling through `sizes`.
    private static func chunks(_ total: Int, _ sizes: [Int]) -> [Range<Int>] {
        var out: [Range<Int>] = [], start = 0, i = 0
        while start < total {
            let end = min(total, start + sizes[i % sizes.count])
            out.append(start..<end)
            start = end; i += 1
        }
        return out
    }

    /// Chunkings to try for `key`: all rows at once, 1-3 rows at a time, 5/7 rows at a time; for keys whose patch
    /// needs whole blocks, chunk boundaries at the blocks' edges with the blocks whole.
    private func chunkings(_ set: LoraPatchSet, _ c: FileCase, key: String) -> [[Range<Int>]] {
        let total = Self.shapes[key]!.first ?? 1
        guard set.wholeTensorKeys.contains(key) else {
            return [[0..<total], Self.chunks(total, [1, 2, 3]), Self.chunks(total, [5, 7])]
        }
        var edges = Set([0, total])
        for m in c.modules where m.key == key { if let r = m.rows { edges.insert(r.lowerBound); edges.insert(r.upperBound) } }
        let sorted = edges.sorted()
        var blocks: [Range<Int>] = []
        for i in 0..<(sorted.count - 1) {
            let r = sorted[i]..<sorted[i + 1]
            let patched = c.modules.contains { $0.key == key && ($0.rows ?? 0..<total) == r }
            blocks += patched ? [r] : Self.chunks(r.count, [1, 2, 3]).map { ($0.lowerBound + r.lowerBound)..<($0.upperBound + r.lowerBound) }
        }
        return [[0..<total], blocks]
    }

    private static func relativeError(_ got: [Float], _ want: [Float]) -> Float {
        var diff: Float = 0, scale: Float = 0
        for i in want.indices { diff = max(diff, abs(got[i] - want[i])); scale = max(scale, abs(want[i])) }
        return scale > 0 ? diff / scale : diff
    }

    // MARK: - tests

    func testFixturesCoverEveryFormat() throws {
        let files = Set(try cases().map(\.file))
        XCTAssertEqual(files, ["kohya_lora.safetensors", "kohya_locon.safetensors", "loha.safetensors", "lokr.safetensors",
                               "dora.safetensors", "dora_input_axis.safetensors", "peft.safetensors",
                               "kohya_diffusers_names.safetensors", "locon_tucker.safetensors", "loha_tucker.safetensors",
                               "lokr_factors.safetensors", "peft_dora.safetensors"])
    }

    /// Every module of every file at strength 1 on a zero weight (DoRA: on its base), in several row chunkings.
    func testEveryFixtureBakesToItsExpectedDelta() throws {
        var worst: Float = 0
        var checked = 0
        for c in try cases() {
            let source = try SafetensorsFile(path: Self.fixture(c.file))
            let set = try LoraPatchSet(source: source, target: Self.target)
            XCTAssertEqual(set.path, source.path)
            XCTAssertEqual(set.patchedKeys, Set(c.modules.map(\.key)), c.file)
            let unmatchedNames = set.unmatchedModules.filter { !$0.contains(" ") }
            XCTAssertEqual(unmatchedNames, c.unmatched.sorted(), c.file)
            XCTAssertEqual(set.unmatchedModules, unmatchedNames, "\(c.file): no notes expected")
            for key in set.patchedKeys.sorted() {
                let (base, want) = try expectation(c, key: key, strength: 1)
                XCTAssertNotEqual(want, base, "\(c.file): \(key): the expected patch changes something")
                for chunks in chunkings(set, c, key: key) {
                    let got = try bake(set, key: key, base: base, chunks: chunks)
                    let err = Self.relativeError(got, want)
                    worst = max(worst, err)
                    XCTAssertLessThanOrEqual(err, Self.tolerance, "\(c.file): \(key) in \(chunks.count) chunks")
                    checked += 1
                }
            }
        }
        XCTAssertGreaterThan(checked, 100)
        print("LoraBakeTests: \(checked) tensor bakes, worst relative error \(worst)")
    }

    /// Strength scales the delta (DoRA: blends W + m (W' - W)); strength 0 changes nothing.
    func testStrengthScalesTheDelta() throws {
        var worst: Float = 0
        for c in try cases() {
            let set = try LoraPatchSet(source: try SafetensorsFile(path: Self.fixture(c.file)), target: Self.target)
            for key in set.patchedKeys.sorted() {
                for strength: Float in [0.5, -0.75] {
                    let (base, want) = try expectation(c, key: key, strength: strength)
                    let got = try bake(set, key: key, base: base, chunks: chunkings(set, c, key: key).last!, strength: strength)
                    let err = Self.relativeError(got, want)
                    worst = max(worst, err)
                    XCTAssertLessThanOrEqual(err, Self.tolerance, "\(c.file): \(key) at \(strength)")
                }
                let (base, _) = try expectation(c, key: key, strength: 0)
                XCTAssertEqual(try bake(set, key: key, base: base, chunks: [0..<(Self.shapes[key]!.first ?? 1)], strength: 0), base,
                               "\(c.file): \(key) at strength 0")
            }
        }
        print("LoraBakeTests: strength 0.5 / -0.75, worst relative error \(worst)")
    }

    /// bigG q/k/v land in rows 0:H, H:2H, 2H:3H of the fused in_proj_weight; in_proj_bias is never touched;
    /// out_proj / fc1 / fc2 land on open_clip's attn.out_proj, mlp.c_fc, mlp.c_proj.
    func testTE2QKVLandInTheirRowBlocks() throws {
        let c = try XCTUnwrap(try cases().first { $0.file == "kohya_diffusers_names.safetensors" })
        let set = try LoraPatchSet(source: try SafetensorsFile(path: Self.fixture(c.file)), target: Self.target)
        let prefix = "conditioner.embedders.1.model.transformer.resblocks.1."
        let inProj = prefix + "attn.in_proj_weight"
        XCTAssertEqual(Self.shapes[inProj], [192, 64])
        for suffix in ["attn.in_proj_weight", "attn.out_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"] {
            XCTAssertTrue(set.patchedKeys.contains(prefix + suffix), suffix)
        }
        XCTAssertFalse(set.patchedKeys.contains(prefix + "attn.in_proj_bias"))
        XCTAssertFalse(set.patchedKeys.contains { $0.hasSuffix("_bias") || $0.hasSuffix(".bias") })

        // Chunks that straddle the block edges.
        let got = try bake(set, key: inProj, base: [Float](repeating: 0, count: 192 * 64),
                           chunks: [0..<60, 60..<70, 70..<127, 127..<129, 129..<192])
        for (slot, proj) in ["q", "k", "v"].enumerated() {
            let want = try floats(c.deltas, "kohya_diffusers_names/lora_te2_text_model_encoder_layers_1_self_attn_\(proj)_proj")
            let block = Array(got[slot * 64 * 64 ..< (slot + 1) * 64 * 64])
            XCTAssertLessThanOrEqual(Self.relativeError(block, want), Self.tolerance, proj)
            XCTAssertTrue(want.contains { $0 != 0 })
        }

        // A file with only k: rows 0:64 and 128:192 stay as they were.
        let kohya = try LoraPatchSet(source: try SafetensorsFile(path: Self.fixture("kohya_lora.safetensors")), target: Self.target)
        let layer0 = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
        let base = (0..<(192 * 64)).map { Float($0 % 17) * 0.01 }
        let baked = try bake(kohya, key: layer0, base: base, chunks: Self.chunks(192, [3]))
        XCTAssertEqual(Array(baked[0..<(64 * 64)]), Array(base[0..<(64 * 64)]))
        XCTAssertEqual(Array(baked[(128 * 64)...]), Array(base[(128 * 64)...]))
        XCTAssertNotEqual(Array(baked[(64 * 64)..<(128 * 64)]), Array(base[(64 * 64)..<(128 * 64)]))
    }

    /// Modules naming tensors the model lacks are reported by name and patch nothing.
    func testUnmatchedModulesAreReported() throws {
        let set = try LoraPatchSet(source: try SafetensorsFile(path: Self.fixture("kohya_diffusers_names.safetensors")),
                                   target: Self.target)
        XCTAssertEqual(set.unmatchedModules, ["lora_te1_text_model_encoder_layers_7_mlp_fc1",
                                              "lora_unet_down_blocks_3_attentions_0_proj_in"])
        // Against a model without text encoders, every te module is unmatched and nothing throws.
        let unetOnly = Self.target.filter { $0.name.hasPrefix("model.diffusion_model.") }
        let partial = try LoraPatchSet(source: try SafetensorsFile(path: Self.fixture("kohya_lora.safetensors")), target: unetOnly)
        XCTAssertEqual(partial.unmatchedModules.filter { $0.hasPrefix("lora_te") }.count, 4)
        XCTAssertEqual(partial.patchedKeys.count, 9)
        XCTAssertTrue(partial.patchedKeys.allSatisfy { $0.hasPrefix("model.diffusion_model.") })
    }

    /// A fresh folder for files a test writes, removed afterwards.
    private func temporaryDirectory() throws -> String {
        let dir = try makeTemporaryDirectory("lora")
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    /// Writes f32 tensors (zeros where no values are given) and opens the file.
    private func writeLora(_ path: String, _ tensors: [(String, [Int], [Float]?)], metadata: [String: String] = [:]) throws -> SafetensorsFile {
        let infos = tensors.map { TensorInfo(name: $0.0, dtype: .f32, shape: $0.1) }
        let w = try SafetensorsWriter(path: path, tensors: infos, metadata: metadata)
        for (info, t) in zip(infos, tensors) {
            let values = t.2 ?? [Float](repeating: 0, count: info.elementCount)
            try w.write(TensorData.owned(info, bytes: try Convert.fromF32Array(values, .f32)))
        }
        try w.finish()
        return try SafetensorsFile(path: path)
    }

    /// A module whose shapes don't fit its tensor throws, naming the file, the module and both shapes.
    func testShapeMismatchThrowsAClearError() throws {
        let dir = try temporaryDirectory()
        func write(_ name: String, _ tensors: [(String, [Int])]) throws -> SafetensorsFile {
            try writeLora(dir + "/" + name, tensors.map { ($0.0, $0.1, nil) })
        }

        // proj_in is [64, 64]; this module's down takes 32 inputs.
        let narrow = try write("narrow.safetensors", [("lora_unet_input_blocks_4_1_proj_in.lora_down.weight", [4, 32]),
                                                      ("lora_unet_input_blocks_4_1_proj_in.lora_up.weight", [64, 4])])
        XCTAssertThrowsError(try LoraPatchSet(source: narrow, target: Self.target)) { error in
            guard case let LoraError.shapeMismatch(path, module, target, targetShape, moduleShape, _)? = error as? LoraError else {
                return XCTFail("\(error)")
            }
            XCTAssertEqual(path, narrow.path)
            XCTAssertEqual(module, "lora_unet_input_blocks_4_1_proj_in")
            XCTAssertEqual(target, "model.diffusion_model.input_blocks.4.1.proj_in.weight")
            XCTAssertEqual(targetShape, [64, 64])
            XCTAssertEqual(moduleShape, [64, 32])
            let text = "\(error)"
            for part in [narrow.path, "lora_unet_input_blocks_4_1_proj_in", "[64, 64]", "[64, 32]"] {
                XCTAssertTrue(text.contains(part), "'\(text)' lacks \(part)")
            }
        }

        // bigG q_proj is a 64-row block of in_proj_weight [192, 64]: a module making all 192 rows does not fit.
        let fused = try write("fused.safetensors", [("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", [4, 64]),
                                                    ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", [192, 4])])
        XCTAssertThrowsError(try LoraPatchSet(source: fused, target: Self.target)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("in_proj_weight rows 0..<64"), text)
            XCTAssertTrue(text.contains("[64, 64]") && text.contains("[192, 64]"), text)
        }

        // A 3x3 LoCon on a Linear of another layout does not fit, even where counts could be made to.
        let conv = try write("conv.safetensors", [("lora_unet_input_blocks_4_1_proj_in.lora_down.weight", [4, 64, 3, 3]),
                                                  ("lora_unet_input_blocks_4_1_proj_in.lora_up.weight", [64, 4, 1, 1])])
        XCTAssertThrowsError(try LoraPatchSet(source: conv, target: Self.target)) { error in
            XCTAssertTrue("\(error)".contains("[64, 64, 3, 3]"), "\(error)")
        }

        // Conv-shaped 1x1 factors on the Linear proj_in fit (reshaped to [64, 64]).
        let oneByOne = try write("one.safetensors", [("lora_unet_input_blocks_4_1_proj_in.lora_down.weight", [4, 64, 1, 1]),
                                                     ("lora_unet_input_blocks_4_1_proj_in.lora_up.weight", [64, 4, 1, 1])])
        XCTAssertEqual(try LoraPatchSet(source: oneByOne, target: Self.target).patchedKeys,
                       ["model.diffusion_model.input_blocks.4.1.proj_in.weight"])

        // Factors of different ranks: the module itself is broken.
        let ranks = try write("ranks.safetensors", [("lora_unet_input_blocks_4_1_proj_in.lora_down.weight", [4, 64]),
                                                    ("lora_unet_input_blocks_4_1_proj_in.lora_up.weight", [64, 8])])
        XCTAssertThrowsError(try LoraPatchSet(source: ranks, target: Self.target)) { error in
            guard case LoraError.badModule(_, "lora_unet_input_blocks_4_1_proj_in", _)? = error as? LoraError else {
                return XCTFail("\(error)")
            }
        }

        // Rows past the tensor's end.
        let set = try LoraPatchSet(source: oneByOne, target: Self.target)
        var buffer = [Float](repeating: 0, count: 64)
        XCTAssertThrowsError(try buffer.withUnsafeMutableBufferPointer {
            try set.apply(key: "model.diffusion_model.input_blocks.4.1.proj_in.weight", rows: 64..<65, values: $0.baseAddress!, strength: 1)
        })
        // Keys not patched: no-op.
        try buffer.withUnsafeMutableBufferPointer {
            try set.apply(key: "model.diffusion_model.out.2.weight", rows: 0..<1, values: $0.baseAddress!, strength: 1)
        }
        XCTAssertEqual(buffer, [Float](repeating: 0, count: 64))
    }

    /// Older LyCORIS DoRA (magnitude per input channel) normalises whole columns: its keys are listed in
    /// wholeTensorKeys, and a call with part of the block throws instead of baking something wrong.
    func testInputAxisDoraNeedsWholeBlocks() throws {
        let set = try LoraPatchSet(source: try SafetensorsFile(path: Self.fixture("dora_input_axis.safetensors")), target: Self.target)
        XCTAssertEqual(set.wholeTensorKeys, ["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
                                             "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"])
        let key = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
        XCTAssertThrowsError(try bake(set, key: key, base: [Float](repeating: 1, count: 64 * 96), chunks: [0..<32, 32..<64])) { error in
            XCTAssertTrue("\(error)".contains("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"), "\(error)")
        }
        // Output-axis DoRA chunks freely.
        let out = try LoraPatchSet(source: try SafetensorsFile(path: Self.fixture("dora.safetensors")), target: Self.target)
        XCTAssertEqual(out.wholeTensorKeys, [])
        let peft = try LoraPatchSet(source: try SafetensorsFile(path: Self.fixture("peft_dora.safetensors")), target: Self.target)
        XCTAssertEqual(peft.wholeTensorKeys, [])
    }

    /// Different keys baked on many threads at once give what one thread gives.
    func testConcurrentApplyMatchesSerial() throws {
        struct Job { var set: LoraPatchSet; var key: String; var base: [Float] }
        var jobs: [Job] = []
        for c in try cases() {
            let set = try LoraPatchSet(source: try SafetensorsFile(path: Self.fixture(c.file)), target: Self.target)
            for key in set.patchedKeys.sorted() { jobs.append(Job(set: set, key: key, base: try expectation(c, key: key, strength: 1).base)) }
        }
        let serial = try jobs.map { try bake($0.set, key: $0.key, base: $0.base, chunks: [0..<(Self.shapes[$0.key]!.first ?? 1)], strength: 0.7) }
        let results = UnsafeMutableBufferPointer<[Float]>.allocate(capacity: jobs.count)
        results.initialize(repeating: [])
        defer { results.deallocate() }
        let failures = UnsafeMutableBufferPointer<Bool>.allocate(capacity: jobs.count)
        failures.initialize(repeating: false)
        defer { failures.deallocate() }
        let shapes = Self.shapes
        DispatchQueue.concurrentPerform(iterations: jobs.count * 4) { i in
            let j = i % jobs.count
            var values = jobs[j].base
            let rows = shapes[jobs[j].key]!.first ?? 1
            do {
                try values.withUnsafeMutableBufferPointer {
                    try jobs[j].set.apply(key: jobs[j].key, rows: 0..<rows, values: $0.baseAddress!, strength: 0.7)
                }
            } catch { failures[j] = true }
            if i < jobs.count { results[j] = values }
        }
        for j in jobs.indices {
            XCTAssertFalse(failures[j], jobs[j].key)
            XCTAssertEqual(results[j], serial[j], jobs[j].key)
        }
    }

    /// PEFT scale: lora_alpha / r per component from lora_adapter_metadata, alpha_pattern / rank_pattern entries
    /// that end the module path, use_rslora (alpha / sqrt(r)); 1 without metadata.
    func testPeftScaleFromMetadata() throws {
        let dir = try temporaryDirectory()
        let q = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
        let k = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k"
        let te = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
        // A = rows of ones, B = identity-ish: dW = B @ A has known entries.
        let a = [Float](repeating: 1, count: 2 * 64)
        var b = [Float](repeating: 0, count: 64 * 2); b[0] = 1; b[2 * 5 + 1] = 3     // dW[0, :] = 1, dW[5, :] = 3
        let aTe = [Float](repeating: 1, count: 2 * 32)
        var bTe = [Float](repeating: 0, count: 32 * 2); bTe[0] = 1
        let tensors: [(String, [Int], [Float]?)] = [
            (q + ".lora_A.weight", [2, 64], a), (q + ".lora_B.weight", [64, 2], b),
            (k + ".lora_A.weight", [2, 64], a), (k + ".lora_B.weight", [64, 2], b),
            (te + ".lora_A.weight", [2, 32], aTe), (te + ".lora_B.weight", [32, 2], bTe),
        ]
        func scales(_ metadata: [String: String]) throws -> [Float] {
            let file = try writeLora(dir + "/peft-\(UUID().uuidString).safetensors", tensors, metadata: metadata)
            let set = try LoraPatchSet(source: file, target: Self.target)
            return try ["model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
                        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_k.weight",
                        "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"].map { key in
                let shape = Self.shapes[key]!
                let got = try bake(set, key: key, base: [Float](repeating: 0, count: shape.reduce(1, *)), chunks: Self.chunks(shape[0], [7]))
                let rowSize = shape[1]
                if key.contains("to_") { XCTAssertEqual(got[5 * rowSize], 3 * got[0], key) }
                XCTAssertEqual(got.filter { $0 != 0 }.count, key.contains("to_") ? 2 * rowSize : rowSize, key)
                return got[0]
            }
        }
        let json = #"{"unet.r": 2, "unet.lora_alpha": 4, "unet.alpha_pattern": {"attn1.to_q": 1}, "text_encoder.r": 2, "text_encoder.lora_alpha": 8}"#
        XCTAssertEqual(try scales(["lora_adapter_metadata": json]), [0.5, 2, 4])
        let rank = #"{"r": 2, "lora_alpha": 4, "rank_pattern": {"to_k": 8}, "use_rslora": true}"#
        XCTAssertEqual(try scales(["lora_adapter_metadata": rank]), [4 / Float(2).squareRoot(), 4 / Float(8).squareRoot(), 4 / Float(2).squareRoot()])
        XCTAssertEqual(try scales([:]), [1, 1, 1])
    }

    /// A file with no LoRA-family names is refused.
    func testAModelIsNotALora() throws {
        let dir = try temporaryDirectory()
        let file = try writeLora(dir + "/model.safetensors", [("model.diffusion_model.out.2.weight", [4, 32, 3, 3], nil)])
        XCTAssertThrowsError(try LoraPatchSet(source: file, target: Self.target)) { error in
            XCTAssertEqual(error as? LoraError, .notALora(path: file.path))
        }
    }
}
