import Foundation
import MumuFormats
import MumuMerge
import MumuTensor
import MumuTestSupport
import XCTest

/// Recipes that must be refused (before any compute, with messages naming what is wrong), key-set
/// policies, non-finite outputs, and the MUMU recipe, on tiny synthesized models.
final class MergeTests: XCTestCase {
    static let dir: String = try! makeTemporaryDirectory("merge-tests")

    /// sdxl-tiny files, made once: base, a fine-tune, one without text encoders, a fake MUMU decoder.
    static let models: [String: String] = {
        let tiny = Architectures.named("sdxl-tiny")!
        var out: [String: String] = [:]
        func synth(_ name: String, seed: UInt64, perturb: String? = nil, scale: Float = 0.01, components: Set<String>? = nil) {
            var s = Synthesizer(architecture: tiny)
            s.seed = seed
            s.components = components
            if let perturb { s.perturb = (try! SafetensorsFile(path: out[perturb]!), scale) }
            let path = dir + "/\(name).safetensors"
            _ = try! s.write(toFile: path, overwrite: true)
            out[name] = path
        }
        synth("base", seed: 1)
        synth("ft", seed: 2, perturb: "base")
        synth("ft2", seed: 3, perturb: "base", scale: 0.02)
        synth("unet_vae", seed: 4, perturb: "base", components: ["unet", "vae"])
        // A MUMU decoder in miniature: base + its own delta on UNet and VAE, no text encoders, plus a connector.
        synth("mumu_body", seed: 5, perturb: "base", scale: 0.03, components: ["unet", "vae"])
        let body = try! SafetensorsFile(path: out["mumu_body"]!)
        let connector = TensorInfo(name: "connector.layers.0.weight", dtype: .f16, shape: [4, 4])
        let path = dir + "/mumu.safetensors"
        let w = try! SafetensorsWriter(path: path, tensors: body.tensors + [connector], metadata: [:], overwrite: true)
        for t in body.tensors { try! w.write(try! body.tensor(t.name)) }
        let ones = [UInt8](repeating: 0x3C, count: 32)   // f16 1.0 is 0x3C00; any bytes will do
        try! ones.withUnsafeBytes { try w.write(connector.name, $0) }
        try! w.finish()
        out["mumu"] = path
        return out
    }()

    func recipe(_ merge: String, models: [String: String]? = nil, extra: String = "") throws -> Recipe {
        let m = (models ?? ["base": "base", "ft": "ft", "ft2": "ft2"]).sorted { $0.key < $1.key }
            .map { "  \($0.key): \(Self.models[$0.value] ?? $0.value)" }.joined(separator: "\n")
        return try Recipe.parse("version: 1\nmodels:\n\(m)\nmerge:\n\(merge)\n\(extra)", origin: "test.yaml", directory: Self.dir)
    }

    /// Asserts that building the plan fails with a message containing every fragment.
    func assertRefused(_ merge: String, models: [String: String]? = nil, extra: String = "", options: MergeOptions = MergeOptions(),
                       _ fragments: String..., file: StaticString = #filePath, line: UInt = #line) {
        do {
            let r = try recipe(merge, models: models, extra: extra)
            _ = try MergePlan(recipe: r, options: options)
            XCTFail("accepted, expected an error with \(fragments)", file: file, line: line)
        } catch {
            let text = "\(error)"
            for f in fragments { XCTAssertTrue(text.contains(f), "'\(text)' lacks '\(f)'", file: file, line: line) }
        }
    }

    func testRecipeErrorsNameWhatIsWrong() {
        assertRefused("  method: average\n  a: ft\n  b: base", "unknown method 'average'", "weighted_sum")
        assertRefused("  method: weighted_sum\n  a: ft\n  b: nobody", "unknown model 'nobody'", "merge.b")
        assertRefused("  method: add_difference\n  a: ft\n  b: ft2", "missing model argument 'c'")
        assertRefused("  method: weighted_sum\n  a: ft\n  b: base\n  alpah: 0.3", "unknown argument 'alpah'", "alpha")
        assertRefused("  method: ties\n  base: base\n  models: [ft, ft2]\n  density: 1.5", "density", "out of range")
        assertRefused("  method: weighted_sum\n  a: ft\n  b: base\n  alpha: lots", "alpha", "must be a number")
        assertRefused("  method: weighted_sum\n  a: ft\n  b: base\n  alpha: {default: 0.5, OUT99x: 1}", "'OUT99x' is not a block")
        assertRefused("  method: weighted_sum\n  a: ft\n  b: base\n  alpha: {'re:([': 1}", "not a valid regular expression")
        assertRefused("  method: ties\n  base: base\n  models: [ft, ft2]\n  vote: majority", "vote", "sum, count")
        assertRefused("  method: dare\n  base: base\n  models: [ft, ft2]\n  seed: 1.5", "seed", "whole number")
        assertRefused("  method: ties\n  base: base\n  models: [ft, ft2]\n  weights: [1]", "one weight per model")
        assertRefused("  method: model_stock\n  base: base\n  models: [ft]", "at least 2 models")
        assertRefused("  42", "expected a model name")
        do {
            _ = try Recipe.parse("version: 2\nmodels: {a: x}\nmerge: a\n", origin: "v2.yaml", directory: "/")
            XCTFail("accepted a newer version")
        } catch { XCTAssertTrue("\(error)".contains("newer than this mumu reads"), "\(error)") }
        do {
            _ = try Recipe.parse("version: 1\nmodels: {a: x}\nmerge: a\nouptut: {}\n", origin: "typo.yaml", directory: "/")
            XCTFail("accepted an unknown field")
        } catch { XCTAssertTrue("\(error)".contains("unknown top-level field 'ouptut'"), "\(error)") }
        do {
            _ = try Recipe.parse("version: 1\nmodels: {a: x}\nmerge: [a\n", origin: "broken.yaml", directory: "/")
            XCTFail("accepted broken YAML")
        } catch { XCTAssertTrue("\(error)".contains("broken.yaml: not valid YAML"), "\(error)") }
    }

    func testCyclicAliasIsRefused() {
        // A YAML alias that refers to itself cannot describe a finite expression.
        do {
            let r = try Recipe.parse("version: 1\nmodels: {a: x}\nmerge: &e {method: weighted_sum, a: a, b: *e}\n", origin: "cycle.yaml", directory: "/")
            _ = try RecipeGraph(recipe: r)
            XCTFail("accepted a cycle")
        } catch {
            XCTAssertTrue("\(error)".contains("cycle.yaml"), "\(error)")
        }
    }

    func testMissingInputFile() {
        assertRefused("  method: weighted_sum\n  a: ft\n  b: gone", models: ["ft": "ft", "gone": "/nonexistent/model.safetensors"],
                      "model 'gone'", "/nonexistent/model.safetensors", "no such file")
    }

    func testLoraAsModelIsRefused() throws {
        let lora = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/lora/kohya_lora.safetensors").path
        guard FileManager.default.fileExists(atPath: lora) else { throw XCTSkip("no LoRA fixture") }
        assertRefused("  method: weighted_sum\n  a: ft\n  b: l", models: ["ft": "ft", "l": lora], "is a LoRA", "method: lora")
    }

    /// SD1.5 against SDXL is refused at once, with keys and shapes, before anything is read or allocated:
    /// the inputs are sparse files (headers of full-size models, data never written), so any attempt to
    /// read or allocate them would show as time and memory this test does not have.
    func testArchitectureMismatchRefusedAtOnce() throws {
        let sd1 = try sparseModel("sd1"), sdxl = try sparseModel("sdxl-base")
        let start = Date()
        assertRefused("  method: weighted_sum\n  a: x\n  b: y", models: ["x": sdxl, "y": sd1],
                      "cannot be merged", "sdxl-base", "sd1", "model.diffusion_model.", "[")
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
    }

    func sparseModel(_ arch: String) throws -> String {
        let d = Architectures.named(arch)!
        let infos = d.tensors.filter { !$0.optional }.map { TensorInfo(name: $0.name, dtype: .f16, shape: $0.shape) }
        let layout = try SafetensorsWriter.layout(infos, metadata: [:])
        let path = Self.dir + "/sparse-\(arch).safetensors"
        FileManager.default.createFile(atPath: path, contents: Data(layout.prefix))
        let fd = open(path, O_WRONLY)
        defer { close(fd) }
        XCTAssertEqual(ftruncate(fd, off_t(layout.totalSize)), 0)
        return path
    }

    func testMissingKeysPolicies() throws {
        let merge = "  method: weighted_sum\n  a: ft\n  b: uv\n  alpha: 0.5"
        let models = ["ft": "ft", "uv": "unet_vae"]
        assertRefused(merge, models: models, "keys are not in every input", "conditioner.embedders", "missing in 'uv'", "--missing keep-first")

        var keep = MergeOptions(); keep.missing = .keepFirst
        let planKeep = try MergePlan(recipe: try recipe(merge, models: models), options: keep)
        let ft = try SafetensorsFile(path: Self.models["ft"]!)
        XCTAssertEqual(planKeep.outputs.count, ft.tensors.count)
        XCTAssertTrue(planKeep.copied.keys.allSatisfy { $0.hasPrefix("conditioner.") })
        XCTAssertFalse(planKeep.copied.isEmpty)
        let out = Self.dir + "/keep.safetensors"
        _ = try MergeRunner.run(planKeep, to: out, overwrite: true, hashes: [:])
        let written = try SafetensorsFile(path: out)
        let key = planKeep.copied.keys.sorted()[0]
        XCTAssertEqual(Array(try written.tensor(key).bytes), Array(try ft.tensor(key).bytes), "copied keys are the first model's bytes")

        var skip = MergeOptions(); skip.missing = .skip
        let planSkip = try MergePlan(recipe: try recipe(merge, models: models), options: skip)
        XCTAssertFalse(planSkip.outputs.contains { $0.name.hasPrefix("conditioner.") })
        XCTAssertEqual(planSkip.outputs.count, ft.tensors.count - planKeep.copied.count)
    }

    func testComponentsFilter() throws {
        let r = try recipe("  method: weighted_sum\n  a: ft\n  b: base", extra: "output:\n  components: [unet]\n")
        let plan = try MergePlan(recipe: r)
        XCTAssertTrue(plan.outputs.allSatisfy { $0.name.hasPrefix("model.diffusion_model.") })
        let r2 = try recipe("  method: weighted_sum\n  a: ft\n  b: base", extra: "output:\n  exclude_components: [vae, te1]\n")
        let plan2 = try MergePlan(recipe: r2)
        XCTAssertFalse(plan2.outputs.contains { $0.name.hasPrefix("first_stage_model.") || $0.name.hasPrefix("conditioner.embedders.0.") })
        XCTAssertTrue(plan2.outputs.contains { $0.name.hasPrefix("conditioner.embedders.1.") })
    }

    func testNonFiniteOutputIsAnErrorUnlessAllowed() throws {
        let r = try recipe("  method: add_difference\n  a: ft\n  b: ft2\n  c: base\n  alpha: 1.0e+9")
        let out = Self.dir + "/overflow.safetensors"
        do {
            _ = try MergeRunner.run(try MergePlan(recipe: r), to: out, overwrite: true, hashes: [:])
            XCTFail("wrote an overflowing f16 output")
        } catch {
            XCTAssertTrue("\(error)".contains("not finite in f16"), "\(error)")
            XCTAssertTrue("\(error)".contains("--allow-nonfinite"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "a failed merge leaves no file")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: Self.dir).filter { $0.contains("overflow") }
        XCTAssertEqual(leftovers, [], "no temporary file is left behind")
        var allow = MergeOptions(); allow.allowNonFinite = true
        _ = try MergeRunner.run(try MergePlan(recipe: r, options: allow), to: out, overwrite: true, hashes: [:])
        XCTAssertTrue(FileManager.default.fileExists(atPath: out))
    }

    func testExistingOutputIsNotOverwritten() throws {
        let out = Self.dir + "/exists.safetensors"
        FileManager.default.createFile(atPath: out, contents: Data("keep me".utf8))
        let plan = try MergePlan(recipe: try recipe("  method: weighted_sum\n  a: ft\n  b: base"))
        XCTAssertThrowsError(try MergeRunner.run(plan, to: out, overwrite: false, hashes: [:]))
        XCTAssertEqual(FileManager.default.contents(atPath: out), Data("keep me".utf8))
    }

    /// UNet = MUMU + (FT - base); MUMU's VAE bit for bit; the connector copied; no text encoders.
    func testIntoMumu() throws {
        let r = Recipe.intoMumu(finetune: Self.models["ft"]!, mumu: Self.models["mumu"]!, base: Self.models["base"]!, directory: Self.dir)
        let plan = try MergePlan(recipe: r)
        let out = Self.dir + "/mumu-ft.safetensors"
        _ = try MergeRunner.run(plan, to: out, overwrite: true, hashes: try MergeMetadata.inputHashes(plan, cache: HashCache(directory: Self.dir + "/cache")))
        let merged = try SafetensorsFile(path: out), mumu = try SafetensorsFile(path: Self.models["mumu"]!)
        let ft = try SafetensorsFile(path: Self.models["ft"]!), base = try SafetensorsFile(path: Self.models["base"]!)
        XCTAssertEqual(Set(merged.names), Set(mumu.names))
        XCTAssertFalse(merged.names.contains { $0.hasPrefix("conditioner.") })
        for name in mumu.names where name.hasPrefix("first_stage_model.") || name.hasPrefix("connector.") {
            XCTAssertEqual(Array(try merged.tensor(name).bytes), Array(try mumu.tensor(name).bytes), name)
        }
        var worst: Float = 0
        for name in mumu.names where name.hasPrefix("model.diffusion_model.") {
            let m = try mumu.tensor(name).floats(), f = try ft.tensor(name).floats(), b = try base.tensor(name).floats()
            let got = try merged.tensor(name).floats()
            for i in m.indices {
                let expected = Float(Float16(m[i] + (f[i] - b[i])))
                worst = max(worst, abs(got[i] - expected) / max(abs(expected), 1e-3))
            }
        }
        XCTAssertEqual(worst, 0, "UNet = mumu + (ft - base), rounded once to f16")
        let meta = merged.metadata
        XCTAssertNotNil(meta["mumu_recipe"])
        XCTAssertNotNil(meta["sd_merge_models"])
        XCTAssertEqual(meta["modelspec.hash_sha256"]?.count, 66)
        XCTAssertNotEqual(meta["modelspec.hash_sha256"], SafetensorsWriter.dataHashPlaceholder)
    }

    /// ModelSpec hash_sha256 is the SHA-256 of the tensor bytes, as `mumu inspect --hash` computes it.
    func testModelSpecHashMatchesData() throws {
        let plan = try MergePlan(recipe: try recipe("  method: weighted_sum\n  a: ft\n  b: base\n  alpha: 0.25"))
        let out = Self.dir + "/hash.safetensors"
        let result = try MergeRunner.run(plan, to: out, overwrite: true, hashes: [:])
        let h = try Hashing.hashes(of: try MappedFile(path: out), dataStart: try SafetensorsFile(path: out).header.dataStart)
        XCTAssertEqual(h.dataSHA256, result.dataSHA256)
        XCTAssertEqual(try SafetensorsFile(path: out).metadata["modelspec.hash_sha256"], "0x" + result.dataSHA256)
    }

    /// Lineage: A1111's sd_merge_models carries the inputs and, nested, the inputs' own parents.
    func testLineageNestsParents() throws {
        let cache = HashCache(directory: Self.dir + "/cache")
        let p1 = try MergePlan(recipe: try recipe("  method: weighted_sum\n  a: ft\n  b: base"))
        let first = Self.dir + "/gen1.safetensors"
        _ = try MergeRunner.run(p1, to: first, overwrite: true, hashes: try MergeMetadata.inputHashes(p1, cache: cache))
        let p2 = try MergePlan(recipe: try recipe("  method: weighted_sum\n  a: g\n  b: ft2", models: ["g": first, "ft2": "ft2"]))
        let second = Self.dir + "/gen2.safetensors"
        _ = try MergeRunner.run(p2, to: second, overwrite: true, hashes: try MergeMetadata.inputHashes(p2, cache: cache))
        let lineage = A1111MergeMetadata(metadata: try SafetensorsFile(path: second).metadata)
        let names = Set(lineage?.models.map(\.name) ?? [])
        XCTAssertEqual(names, ["gen1.safetensors", "ft2.safetensors", "ft.safetensors", "base.safetensors"])
        XCTAssertNotNil(lineage?.models.first { $0.name == "gen1.safetensors" }?.recipe, "the parent's own recipe is nested")
    }

    /// Inputs the hash cache does not know are hashed while the merge runs: the header is written with placeholders
    /// and replaced before the commit. The file then carries what a merge with every hash known up front writes
    /// (here with a lineage that loses a duplicate once the real hashes are known, so the final header is shorter
    /// and padded), and the cache has the hashes afterwards.
    func testInputsHashedWhileMerging() throws {
        let p1 = try MergePlan(recipe: try recipe("  method: weighted_sum\n  a: ft\n  b: base"))
        let gen1 = Self.dir + "/while-gen1.safetensors"
        _ = try MergeRunner.run(p1, to: gen1, overwrite: true, hashes: try MergeMetadata.inputHashes(p1, cache: HashCache(directory: Self.dir + "/cache")))
        // base is an input and also gen1's parent: one sd_merge_models entry once its hash is known.
        let p2 = try MergePlan(recipe: try recipe("  method: add_difference\n  a: g\n  b: ft2\n  c: base\n  alpha: 0.5",
                                                 models: ["g": gen1, "ft2": "ft2", "base": "base"]))
        let cache = HashCache(directory: try makeTemporaryDirectory("while-cache"))
        let pending = InputHashes(p2, cache: cache)
        XCTAssertTrue(pending.isPending)
        let background = Self.dir + "/while-background.safetensors"
        _ = try MergeRunner.run(p2, to: background, title: "m", overwrite: true, inputHashes: pending)
        let known = try MergeMetadata.inputHashes(p2, cache: cache)
        XCTAssertFalse(InputHashes(p2, cache: cache).isPending, "the background hashes were cached")
        let upFront = Self.dir + "/while-upfront.safetensors"
        _ = try MergeRunner.run(p2, to: upFront, title: "m", overwrite: true, hashes: known)

        let a = try SafetensorsFile(path: background), b = try SafetensorsFile(path: upFront)
        var ma = a.metadata, mb = b.metadata
        XCTAssertNotNil(ma.removeValue(forKey: "modelspec.date"))
        mb.removeValue(forKey: "modelspec.date")
        XCTAssertEqual(ma, mb, "the same metadata as with every hash known")
        XCTAssertFalse(ma.values.contains { $0.contains("~") }, "no placeholder left")
        XCTAssertGreaterThan(a.header.dataStart, b.header.dataStart, "the first header was longer: padded with spaces")
        let lineage = try XCTUnwrap(A1111MergeMetadata(metadata: a.metadata))
        XCTAssertEqual(lineage.models.map(\.name).sorted(), ["base.safetensors", "ft.safetensors", "ft2.safetensors", "while-gen1.safetensors"])
        XCTAssertEqual(lineage.models.first { $0.name == "base.safetensors" }?.sha256, known["base"]?.sha256)
        for name in b.names { XCTAssertEqual(Array(try a.tensor(name).bytes), Array(try b.tensor(name).bytes), name) }
    }
}

/// `{method: lora}` bakes exactly what LoraPatchSet computes (LoraBakeTests checks that against the
/// kohya / PEFT / LyCORIS formulas), at the recipe's strength, and leaves every other key alone.
final class LoraRecipeTests: XCTestCase {
    func testLoraMethodBakesThePatch() throws {
        let lora = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/lora/kohya_lora.safetensors").path
        let base = MergeTests.models["base"]!
        let r = try Recipe.parse("version: 1\nmodels: {base: \(base)}\nmerge: {method: lora, model: base, lora: \(lora), strength: 0.8}\noutput: {dtype: f32}\n",
                                 origin: "lora.yaml", directory: MergeTests.dir)
        let plan = try MergePlan(recipe: r)
        let out = MergeTests.dir + "/lora-baked.safetensors"
        _ = try MergeRunner.run(plan, to: out, overwrite: true, hashes: [:])
        let merged = try SafetensorsFile(path: out), original = try SafetensorsFile(path: base)
        let patches = try LoraPatchSet(source: try SafetensorsFile(path: lora), target: original.tensors)
        XCTAssertFalse(patches.patchedKeys.isEmpty)
        XCTAssertTrue(patches.patchedKeys.contains { $0.hasSuffix("attn.in_proj_weight") } || patches.patchedKeys.contains { $0.hasPrefix("conditioner.embedders.1.") })
        var changed = 0
        for t in original.tensors {
            var expected = try original.tensor(t.name).floats()
            if patches.patchedKeys.contains(t.name) {
                try expected.withUnsafeMutableBufferPointer {
                    try patches.apply(key: t.name, rows: 0..<max(t.shape.first ?? 1, 1), values: $0.baseAddress!, strength: 0.8)
                }
                changed += 1
            }
            XCTAssertEqual(try merged.tensor(t.name).floats(), expected, t.name)
        }
        XCTAssertEqual(changed, patches.patchedKeys.count)
    }

    func testLoraForAnotherArchitectureIsRefused() throws {
        let lora = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/lora/kohya_lora.safetensors").path
        let ws = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/merge/models/base.safetensors").path
        let r = try Recipe.parse("version: 1\nmodels: {m: \(ws)}\nmerge: {method: lora, model: m, lora: \(lora)}\n", origin: "x.yaml", directory: "/")
        XCTAssertThrowsError(try MergePlan(recipe: r)) { error in
            XCTAssertTrue("\(error)".contains("kohya_lora.safetensors"), "\(error)")
        }
    }
}

/// Every recipe shipped in merges/ reads and builds a graph (its model files are users' own).
final class ShippedRecipeTests: XCTestCase {
    func testShippedRecipesParse() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = root.appendingPathComponent("merges").path
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }
        XCTAssertGreaterThanOrEqual(files.count, 4)
        for f in files {
            let recipe = try Recipe.load(path: dir + "/" + f)
            let graph = try RecipeGraph(recipe: recipe)
            XCTAssertFalse(graph.nodes.isEmpty, f)
        }
    }
}
