import Foundation
import MumuFormats
import MumuMerge
import MumuTensor
import XCTest

/// Recipes whose YAML aliases would be huge written out ("billion laughs") or that share
/// sub-expressions deeply: reading and checking them is linear in the file (a test that expanded them
/// would not finish). Unknown names fail with the valid names and a suggestion. Parameters are read
/// only through their declarations. Merge blocks come from the descriptors.
final class RecipeStructureTests: XCTestCase {
    /// Nine levels of anchors, each a list of ten aliases to the previous: 10^9 strings written out.
    static func laughs(levels: Int = 9) -> String {
        var lines = ["  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        for k in 1...levels {
            lines.append("  l\(k): &l\(k) [" + Array(repeating: "*l\(k - 1)", count: 10).joined(separator: ", ") + "]")
        }
        return lines.joined(separator: "\n")
    }

    /// merge: n64, where n_k = {method: weighted_sum, a: n_(k-1), b: *n_(k-1)} and n_0 = model a.
    static func chain(_ depth: Int, models: String = "{a: a.safetensors}") -> String {
        var expression = "&n0 a"
        for k in 1...depth {
            expression = "&n\(k) {method: weighted_sum, a: \(expression), b: *n\(k - 1)}"
        }
        return "version: 1\nmodels: \(models)\nmerge: \(expression)\n"
    }

    func assertRecipeError(_ text: String, _ fragments: String..., file: StaticString = #filePath, line: UInt = #line) {
        do {
            let r = try Recipe.parse(text, origin: "laughs.yaml", directory: "/")
            _ = try RecipeGraph(recipe: r)
            XCTFail("accepted, expected an error with \(fragments)", file: file, line: line)
        } catch {
            let text = "\(error)"
            for f in fragments { XCTAssertTrue(text.contains(f), "'\(text)' lacks '\(f)'", file: file, line: line) }
        }
    }

    func testBillionLaughsUnderAnUnknownFieldFailsBeforeReadingIt() {
        assertRecipeError("version: 1\nmodels: {a: a.safetensors}\nmerge: a\nlols:\n" + Self.laughs(),
                          "laughs.yaml", "unknown top-level field 'lols'", "merge, missing, models")
        // A misspelt field gets a suggestion.
        assertRecipeError("version: 1\nmodels: {a: x}\nmerge: a\nouptut: {}\n", "unknown top-level field 'ouptut'", "did you mean 'output'")
    }

    func testBillionLaughsUnderKnownFieldsIsCheckedWithoutExpanding() {
        let defs = "version: 1\nmodels:\n  a: a.safetensors\n  b: b.safetensors\nmerge:\n  method: weighted_sum\n  a: a\n  b: b\n"
        // Anchors defined inside the expression's own arguments and aliased where a number, a path,
        // a model or a name list is expected: each is refused at the first wrong shape.
        let big = Self.laughs().replacingOccurrences(of: "\n  ", with: ", ").replacingOccurrences(of: "  l0:", with: "l0:")
        assertRecipeError(defs + "  alpha: {\(big)}\n", "alpha", "must be a number")
        assertRecipeError("version: 1\nmodels: {a: a.safetensors}\nmerge: {method: weighted_sum, a: a, b: {\(big)}}\n",
                          "merge.b", "needs 'method: NAME'")
        assertRecipeError("version: 1\ntitle: {\(big)}\nmodels: {a: a.safetensors}\nmerge: a\n", "field 'title' must be text")
        assertRecipeError("version: 1\nmodels: {a: a.safetensors}\nmerge: a\noutput: {components: {\(big)}}\n", "output.components")
    }

    func testSharedChainOfDepth64IsOneNodePerLevel() throws {
        let recipe = try Recipe.parse(Self.chain(64), origin: "chain.yaml", directory: "/")
        XCTAssertEqual(recipe.merge.expandedSize, Int.max)   // 2^65 values written out: never built
        let graph = try RecipeGraph(recipe: recipe)
        XCTAssertEqual(graph.nodes.count, 65)                 // the model and one node per level
        XCTAssertEqual(graph.expandedNodeCount, Int.max)
        XCTAssertEqual(graph.inputsUsed, [0])
        // Small sharing is counted exactly: depth 3 is 1 + 2 (1 + 2 (1 + 2)) = 15 expressions written out.
        XCTAssertEqual(try RecipeGraph(recipe: try Recipe.parse(Self.chain(3), origin: "c3.yaml", directory: "/")).expandedNodeCount, 15)
    }

    func testAHugeSharedRecipeMergesAndIsRecordedWithItsAnchors() throws {
        // 64 levels of weighted_sum(x, x): 2^64 expressions written out, 65 nodes computed; lerp of a
        // value with itself is that value, so the output is the input, bit for bit.
        let path = MergeTests.models["ft"]!
        let r = try Recipe.parse(Self.chain(64, models: "{a: \(path)}") + "output: {dtype: keep, components: [unet]}\n",
                                 origin: "chain.yaml", directory: "/")
        let plan = try MergePlan(recipe: r)
        XCTAssertEqual(plan.graph.nodes.count, 65)
        let out = MergeTests.dir + "/chain64.safetensors"
        _ = try MergeRunner.run(plan, to: out, overwrite: true, hashes: [:])
        let merged = try SafetensorsFile(path: out), original = try SafetensorsFile(path: path)
        XCTAssertFalse(merged.tensors.isEmpty)
        for info in merged.tensors {
            let a = try merged.tensor(info.name), b = try original.tensor(info.name)
            withExtendedLifetime((a, b)) { XCTAssertTrue(a.bytes.elementsEqual(b.bytes), info.name) }
        }
        // The metadata's recipe writes each shared level once: 64 anchors, the model name inline.
        let recorded = try JSONParser.parse(try XCTUnwrap(merged.metadata["mumu_recipe"]))
        XCTAssertEqual(recorded["merge"], .object([("*", .string("n64"))]))
        let anchors = try XCTUnwrap(recorded["anchors"]?.objectValue)
        XCTAssertEqual(anchors.count, 64)
        XCTAssertEqual(recorded["anchors"]?["n1"], .object([("a", .string("a")), ("b", .string("a")), ("method", .string("weighted_sum"))]))
        XCTAssertEqual(recorded["anchors"]?["n2"],
                       .object([("a", .object([("*", .string("n1"))])), ("b", .object([("*", .string("n1"))])), ("method", .string("weighted_sum"))]))
        // A small shared recipe is recorded written out, as before.
        let small = try Recipe.parse(Self.chain(2), origin: "c2.yaml", directory: "/")
        let canonical = small.merge.canonical(expandingUpTo: Recipe.maximumExpandedSize)
        XCTAssertTrue(canonical.anchors.isEmpty)
        XCTAssertEqual(canonical.value, small.merge.json)
    }

    func testRepeatedSubExpressionsWithoutAliasesAreOneNode() throws {
        let text = "version: 1\nmodels: {a: a.safetensors, b: b.safetensors}\nmerge:\n  method: add_difference\n"
            + "  a: {method: weighted_sum, a: a, b: b, alpha: 0.3}\n  b: {method: weighted_sum, a: a, b: b, alpha: 0.3}\n  c: b\n"
        let graph = try RecipeGraph(recipe: try Recipe.parse(text, origin: "x.yaml", directory: "/"))
        XCTAssertEqual(graph.nodes.count, 4)   // a, b, the weighted sum once, add_difference
    }

    func testUnknownNamesSuggestTheClosest() {
        let base = "version: 1\nmodels: {base: a.safetensors, ft: b.safetensors}\nmerge:\n"
        assertRecipeError(base + "  method: weighted_sun\n  a: base\n  b: ft\n",
                          "merge.method", "unknown method 'weighted_sun'", "did you mean 'weighted_sum'", "add_difference, triple_sum")
        assertRecipeError(base + "  method: weighted_sum\n  a: base\n  b: ft\n  aplha: 0.2\n",
                          "merge (weighted_sum)", "unknown argument 'aplha'", "did you mean 'alpha'", "a, b, alpha")
        assertRecipeError(base + "  method: weighted_sum\n  a: bse\n  b: ft\n", "merge.a", "unknown model 'bse'", "did you mean 'base'")
        assertRecipeError(base + "  method: ties\n  base: base\n  models: [ft]\n  wieghts: [1]\n", "unknown argument 'wieghts'", "did you mean 'weights'")
        assertRecipeError("version: 1\nmodels: {a: x}\nmerge: a\noutput: {dtpye: f16}\n", "output: unknown field 'dtpye'", "did you mean 'dtype'")
        assertRecipeError("version: 1\nmodels: {a: x}\nmerge: a\noutput: {components: [unet, vea]}\n",
                          "output.components: unknown component 'vea'", "did you mean 'vae'", "unet, vae, te1, te2, connector")
        // Nothing close: no guess, still the valid names.
        assertRecipeError(base + "  method: zzz\n  a: base\n", "unknown method 'zzz'; expected one of: weighted_sum")
        XCTAssertNil(NameSuggestion.closest(to: "zzz", in: ["alpha", "beta"]))
        XCTAssertEqual(NameSuggestion.closest(to: "desnity", in: ["density", "lambda"]), "density")
    }

    func testParametersAreReadOnlyThroughTheirDeclaration() throws {
        let alpha = Parameter<Float>("alpha", default: 0.5, help: "declared")
        let beta = Parameter<Float>("beta", default: 0.5, help: "not declared")
        let otherAlpha = Parameter<Float>("alpha", default: 1, help: "same name, another declaration")
        let info = TensorInfo(name: "k", dtype: .f32, shape: [2])
        func probe(_ read: @escaping (MethodArguments) throws -> Float) -> MethodDefinition {
            MethodDefinition(name: "probe", summary: "", inputs: ["a"], parameters: [alpha]) { args in
                _ = try read(args); return .passthrough(0)
            }
        }
        let ok = probe { try $0[alpha] }
        XCTAssertEqual(try ok.arguments(key: "k", info: info)[alpha], 0.5)
        XCTAssertEqual(try ok.arguments(key: "k", info: info, values: ["alpha": .number(0.25)])[alpha], 0.25)
        for bad in [probe { try $0[beta] }, probe { try $0[otherAlpha] }] {
            XCTAssertThrowsError(try bad.make(bad.arguments(key: "k", info: info))) { e in
                guard case .undeclaredParameter(let method, _, let declared)? = e as? MergeError else { return XCTFail("\(e)") }
                XCTAssertEqual(method, "probe")
                XCTAssertEqual(declared, ["alpha"])
                XCTAssertTrue("\(e)".contains("does not declare"), "\(e)")
            }
        }
    }

    func testEveryMethodDeclaresDistinctNamesAndRunsOnItsDefaults() throws {
        XCTAssertEqual(Set(MergeMethods.all.map(\.name)).count, MergeMethods.all.count)
        let info = TensorInfo(name: "model.diffusion_model.out.2.weight", dtype: .f32, shape: [2, 3])
        for m in MergeMethods.all {
            XCTAssertEqual(Set(m.argumentNames).count, m.argumentNames.count, m.name)
            XCTAssertFalse(m.argumentNames.contains("method"), m.name)
            if m.parameters.contains(where: { if case .path = $0.kind { return true }; return false }) { continue }
            // Every declared parameter is readable with its default: make succeeds.
            let weights = m.list == nil ? [] : Array(repeating: 1.0, count: max(m.minimumListCount, 2))
            _ = try m.make(m.arguments(key: info.name, info: info, weights: weights))
        }
    }

    func testBlocksComeFromTheDescriptors() throws {
        let base = try XCTUnwrap(Architectures.named("sdxl-base")), refiner = try XCTUnwrap(Architectures.named("sdxl-refiner"))
        let sd1 = try XCTUnwrap(Architectures.named("sd1"))
        let mumu = try XCTUnwrap(Architectures.named("mumu-decoder"))
        // Every tensor of every descriptor gets its descriptor's block.
        for a in [base, refiner, sd1, mumu] {
            let table = BlockTable(architectures: [a])
            for t in a.tensors { XCTAssertEqual(table.block(of: t.name), t.block, "\(a.name): \(t.name)") }
        }
        let out = "model.diffusion_model.out.2.weight"
        XCTAssertEqual(BlockTable(architectures: [refiner]).block(of: out), "OUT11")   // the refiner has 12 output blocks
        XCTAssertEqual(BlockTable(architectures: [base]).block(of: out), "OUT08")
        // Unknown architecture: the family's descriptors where they agree, else the rule.
        XCTAssertEqual(BlockTable(architectures: [], families: ["sd1"]).block(of: out), "OUT11")
        XCTAssertEqual(BlockTable(architectures: [], families: ["sdxl"]).block(of: out), "OUT08")
        XCTAssertEqual(BlockTable(architectures: []).block(of: "model.diffusion_model.output_blocks.3.0.out_layers.3.weight"), "OUT03")
        XCTAssertEqual(BlockTable(architectures: []).block(of: "model.diffusion_model.label_emb.0.0.weight"), "IN00")
        XCTAssertEqual(BlockTable(architectures: []).block(of: "connector.layers.0.weight"), "BASE")
        XCTAssertNil(BlockTable(architectures: []).block(of: "something.else"))
        // The rule reads its prefixes from SGMPrefix: every text encoder prefix is BASE, the VAE's is VAE.
        for prefix in SGMPrefix.allCases {
            let want = prefix.component == .vae ? "VAE" : prefix.component == .unet ? "IN04" : "BASE"
            let local = prefix.component == .unet ? "input_blocks.4.1.proj_in.weight" : "extra.weight"
            XCTAssertEqual(Blocks.block(of: prefix.rawValue + local), want, prefix.rawValue)
        }
    }
}

/// Keys that are not plain text are refused before Yams composes the document (Yams hashes every key
/// to find duplicates, which would expand an alias used as a key).
final class RecipeKeyTests: XCTestCase {
    func testAliasAndCollectionKeysAreRefusedBeforeComposing() {
        // 10^9 values under one alias used as a key, in every way YAML writes a key.
        let defs = "version: 1\nmodels: {a: a.safetensors}\nmerge:\n  method: weighted_sum\n  a: a\n  b: a\n  alpha:\n"
            + "    l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
            + (1...9).map { k in "    l\(k): &l\(k) [" + Array(repeating: "*l\(k - 1)", count: 10).joined(separator: ", ") + "]\n" }.joined()
        for (key, fragment) in [("*l9: 1", "an alias"), ("*l9 : 1", "an alias"), ("? *l9\n    : 1", "a complex key ('? ')"),
                                ("[*l9]: 1", "a list or mapping"), ("{x: *l9}: 1", "a list or mapping")] {
            XCTAssertThrowsError(try Recipe.parse(defs + "    " + key + "\n", origin: "keys.yaml", directory: "/"), key) { e in
                XCTAssertTrue("\(e)".contains("keys.yaml: line 18:"), "\(e)")
                XCTAssertTrue("\(e)".contains(fragment + " used as a mapping key"), "\(e)")
            }
        }
        XCTAssertThrowsError(try Recipe.parse("version: 1\nmodels: {a: x}\nmerge: {method: weighted_sum, a: a, b: a, {*l: 1}: 2}\n",
                                              origin: "flow.yaml", directory: "/"))
    }

    func testTextThatOnlyLooksLikeSuchKeysIsAccepted() throws {
        let text = """
            version: 1
            title: "*not: an alias ? [x]: y"   # a comment with *x: y and ? z
            name: 'it''s [a]: b'
            models: {a: a.safetensors, b: b.safetensors}
            merge: &m {method: weighted_sum, a: a, b: b, alpha: {default: 0.5, "re:x?y": 0.2}}
            output: {components: [unet, vae]}
            """
        let recipe = try Recipe.parse(text, origin: "ok.yaml", directory: "/")
        XCTAssertEqual(recipe.title, "*not: an alias ? [x]: y")
        XCTAssertEqual(try RecipeGraph(recipe: recipe).nodes.count, 3)
    }
}
