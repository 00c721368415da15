import Foundation
import MumuFormats
import MumuMerge
import MumuStyles
import MumuTensor
import MumuTestSupport
import XCTest

/// The registry on tiny synthesized SDXL models: every kind added, listed, resolved to a plugin that
/// patches resident weights and restores them, materialized; bad names, wrong bases, corruption, newer
/// schemas, concurrent adds.
final class StyleRegistryTests: XCTestCase {
    static let dir: String = try! makeTemporaryDirectory("styles-tests")
    static let cache = HashCache(directory: dir + "/hash-cache")

    static let models: [String: String] = {
        let tiny = Architectures.named("sdxl-tiny")!
        var out: [String: String] = [:]
        func synth(_ name: String, seed: UInt64, perturb: String? = nil, scale: Float = 0.01) {
            var s = Synthesizer(architecture: tiny)
            s.seed = seed
            if let perturb { s.perturb = (try! SafetensorsFile(path: out[perturb]!), scale) }
            let path = dir + "/\(name).safetensors"
            _ = try! s.write(toFile: path, overwrite: true)
            out[name] = path
        }
        synth("base", seed: 1)
        synth("ft", seed: 2, perturb: "base")
        synth("other", seed: 9)
        return out
    }()

    func freshRegistry(_ name: String = #function) throws -> StyleRegistry {
        let home = Self.dir + "/home-" + name.filter { $0.isLetter || $0.isNumber }
        try? FileManager.default.removeItem(atPath: home)
        return try StyleRegistry(home: home)
    }

    func add(_ r: StyleRegistry, _ name: String, from: String, kind: StyleManifest.Kind? = nil, base: String? = nil,
             rank: Int? = nil) throws -> StyleManifest {
        var req = StyleAddRequest(name: name, from: from)
        req.kind = kind; req.base = base; req.rank = rank
        return try r.add(req, cache: Self.cache)
    }

    func testHomeResolution() {
        XCTAssertEqual(StyleRegistry.defaultHome(environment: ["MUMU_HOME": "/m", "XDG_DATA_HOME": "/x", "HOME": "/h"]), "/m")
        XCTAssertEqual(StyleRegistry.defaultHome(environment: ["XDG_DATA_HOME": "/x", "HOME": "/h"]), "/x/mumu")
        XCTAssertEqual(StyleRegistry.defaultHome(environment: ["HOME": "/h"]), "/h/.local/share/mumu")
    }

    func testNamesThatArePathsAreRefused() throws {
        let r = try freshRegistry()
        for bad in ["../x", "/etc", "a/b", ".hidden", "", "..", "sp ace", String(repeating: "a", count: 101)] {
            XCTAssertThrowsError(try add(r, bad, from: Self.models["ft"]!), bad) { e in
                XCTAssertEqual(e as? StyleError, .badName(bad))
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: r.stylesDir), [])
    }

    func testFullStyleAddListShowRemoveGC() throws {
        let r = try freshRegistry()
        let m = try add(r, "anime-xl", from: Self.models["ft"]!)
        XCTAssertEqual(m.kind, .full)
        XCTAssertEqual(m.architecture, "sdxl-tiny")
        XCTAssertNil(m.base)
        XCTAssertEqual(m.blob("weights")?.sha256, try Self.cache.hashes(of: Self.models["ft"]!).sha256, "content-addressed by SHA-256")
        XCTAssertThrowsError(try add(r, "anime-xl", from: Self.models["ft"]!)) { XCTAssertEqual($0 as? StyleError, .exists("anime-xl")) }
        XCTAssertEqual(r.list().styles.map(\.name), ["anime-xl"])
        XCTAssertEqual(try r.manifest("anime-xl"), m)
        XCTAssertThrowsError(try r.manifest("anime-x")) { e in
            XCTAssertTrue("\(e)".contains("did you mean 'anime-xl'"), "\(e)")
        }
        try r.withLock { try r.remove("anime-xl") }
        XCTAssertTrue(r.list().styles.isEmpty)
        XCTAssertEqual(r.orphans().count, 1)
        let (removed, bytes) = try r.gc()
        XCTAssertGreaterThanOrEqual(removed, 1)
        XCTAssertGreaterThan(bytes, 1_000_000)
        XCTAssertTrue(r.orphans().isEmpty)
    }

    /// The lossless delta rebuilds the variant bit for bit, is smaller than the file, and patches a resident base.
    func testLosslessDeltaIsBitExact() throws {
        let r = try freshRegistry()
        let m = try add(r, "ft-delta", from: Self.models["ft"]!, base: Self.models["base"]!)
        XCTAssertEqual(m.kind, .delta)
        XCTAssertEqual(m.base?.sha256, try Self.cache.hashes(of: Self.models["base"]!).sha256)
        let full = try FileManager.default.attributesOfItem(atPath: Self.models["ft"]!)[.size] as! Int
        XCTAssertLessThan(Double(m.bytesOnDisk), 0.6 * Double(full), "lossless delta \(m.bytesOnDisk) of \(full) bytes")

        let out = Self.dir + "/materialized.safetensors"
        try r.materialize("ft-delta", base: Self.models["base"]!, to: out, overwrite: true, threads: 2, cache: Self.cache)
        let a = try SafetensorsFile(path: out), b = try SafetensorsFile(path: Self.models["ft"]!)
        XCTAssertEqual(Set(a.names), Set(b.names))
        for n in b.names { XCTAssertEqual(Array(try a.tensor(n).bytes), Array(try b.tensor(n).bytes), n) }

        // As a plugin on resident weights: patched equals the fine-tune, restored equals the base.
        let weights = try InMemoryWeights(loading: try SafetensorsFile(path: Self.models["base"]!))
        let plugin = try r.plugin("ft-delta", baseSHA256: m.base!.sha256)
        let patch = try plugin.apply(to: weights)
        for n in b.names.prefix(50) { XCTAssertEqual(Array(try weights.tensor(n).bytes), Array(try b.tensor(n).bytes), n) }
        try patch.restore(weights)
        let base = try SafetensorsFile(path: Self.models["base"]!)
        for n in base.names.prefix(50) { XCTAssertEqual(Array(try weights.tensor(n).bytes), Array(try base.tensor(n).bytes), n) }
    }

    /// A lossy delta is a LoRA extracted from the UNet's delta: smaller than the lossless one, applies as a LoRA.
    func testLowRankDelta() throws {
        let r = try freshRegistry()
        let m = try add(r, "ft-r4", from: Self.models["ft"]!, base: Self.models["base"]!, rank: 4)
        XCTAssertEqual(m.kind, .delta)
        XCTAssertEqual(m.rank, 4)
        XCTAssertEqual(m.blob("lora")?.format, "safetensors")
        let lora = try SafetensorsFile(path: r.blobPath(m.blob("lora")!.sha256))
        XCTAssertTrue(lora.names.allSatisfy { $0.hasPrefix("lora_unet_") }, "UNet modules only by default")
        let weights = try InMemoryWeights(loading: try SafetensorsFile(path: Self.models["base"]!))
        let patch = try r.plugin("ft-r4", baseSHA256: m.base!.sha256).apply(to: weights)
        XCTAssertGreaterThan(patch.originals.count, 0)
        XCTAssertTrue(patch.originals.keys.allSatisfy { $0.hasPrefix("model.diffusion_model.") })
    }

    /// Unmerged low-rank terms compute what the merged weights compute: W x + s Σ scale up (down x) = W' x.
    func testLowRankTermsEqualMergedWeights() throws {
        let lora = try loraFixture()
        let r = try freshRegistry()
        let m = try add(r, "detail", from: lora, base: Self.models["base"]!)
        let weights = try InMemoryWeights(loading: try SafetensorsFile(path: Self.models["base"]!))
        let plugin = try r.plugin("detail", baseSHA256: m.base!.sha256)
        guard let terms = try (plugin as? LowRankStyle)?.lowRankTerms(base: weights) else { return XCTFail("a kohya LoRA is low-rank") }
        XCTAssertEqual(Set(terms.keys), Set(try plugin.changedKeys(base: weights)))
        let strength: Float = 0.7
        var original: [String: [Float]] = [:]
        for key in terms.keys { original[key] = try weights.tensor(key).floats() }
        let patch = try plugin.apply(to: weights, strength: strength)
        var worst: Float = 0, contribution: Float = 0
        for (key, list) in terms {
            let w = original[key]!, merged = try weights.tensor(key).floats()
            let rows = try weights.tensor(key).info.shape[0], inner = w.count / rows
            let x = (0..<inner).map { Float(sin(Double($0) * 0.7)) }
            var y = (0..<rows).map { i in (0..<inner).reduce(Float(0)) { $0 + w[i * inner + $1] * x[$1] } }
            for t in list {
                let dx = (0..<t.rank).map { k in (0..<t.inner).reduce(Float(0)) { $0 + t.down[k * t.inner + $1] * x[$1] } }
                for (local, i) in t.rows.enumerated() {
                    y[i] += strength * t.scale * (0..<t.rank).reduce(Float(0)) { $0 + t.up[local * t.rank + $1] * dx[$1] }
                }
            }
            for i in 0..<rows {
                let ym = (0..<inner).reduce(Float(0)) { $0 + merged[i * inner + $1] * x[$1] }
                let y0 = (0..<inner).reduce(Float(0)) { $0 + w[i * inner + $1] * x[$1] }
                contribution = max(contribution, abs(ym - y0))
                worst = max(worst, abs(ym - y[i]) / max(abs(ym), 1))
            }
        }
        // The merged weights are rounded to f16 once; the unmerged sum is not: f16's 2^-11 bounds the difference.
        XCTAssertLessThan(worst, 2e-3)
        XCTAssertGreaterThan(contribution, 20 * worst, "the LoRA's own contribution dwarfs the disagreement")
        try patch.restore(weights)
    }

    func testStyleForAnotherBaseIsRefusedNamingBothHashes() throws {
        let r = try freshRegistry()
        let m = try add(r, "ft-delta", from: Self.models["ft"]!, base: Self.models["base"]!)
        let other = try Self.cache.hashes(of: Self.models["other"]!).sha256
        XCTAssertThrowsError(try r.plugin("ft-delta", baseSHA256: other)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains(String(m.base!.sha256.prefix(12))) && text.contains(String(other.prefix(12))), text)
        }
        XCTAssertThrowsError(try r.materialize("ft-delta", base: Self.models["other"]!, to: Self.dir + "/x.safetensors", overwrite: true,
                                               threads: 1, cache: Self.cache))
    }

    func testLoraStylePatchesAndRestores() throws {
        let lora = try loraFixture()
        let r = try freshRegistry()
        let m = try add(r, "detail", from: lora, base: Self.models["base"]!)
        XCTAssertEqual(m.kind, .lora)
        let weights = try InMemoryWeights(loading: try SafetensorsFile(path: Self.models["base"]!))
        let plugin = try r.plugin("detail", baseSHA256: m.base!.sha256)
        let keys = try plugin.changedKeys(base: weights)
        XCTAssertFalse(keys.isEmpty)
        let before = try weights.tensor(keys[0]).floats()
        let patch = try plugin.apply(to: weights, strength: 0.5)
        XCTAssertNotEqual(try weights.tensor(keys[0]).floats(), before)
        try patch.restore(weights)
        XCTAssertEqual(try weights.tensor(keys[0]).floats(), before)
        // Materialized LoRA style = the lora recipe method at the style's strength.
        let out = Self.dir + "/lora-materialized.safetensors"
        try r.materialize("detail", base: Self.models["base"]!, to: out, overwrite: true, threads: 2, cache: Self.cache)
        XCTAssertEqual(try SafetensorsFile(path: out).tensors.count, try SafetensorsFile(path: Self.models["base"]!).tensors.count)
    }

    func testRecipeStyleEvaluatedOnceThenCached() throws {
        let r = try freshRegistry()
        let recipe = Self.dir + "/half.yaml"
        try "version: 1\nmodels:\n  base: base.safetensors\n  ft: ft.safetensors\nmerge: {method: weighted_sum, a: base, b: ft, alpha: 0.5}\n"
            .write(toFile: recipe, atomically: true, encoding: .utf8)
        let m = try add(r, "half", from: recipe, base: Self.models["base"]!)
        XCTAssertEqual(m.kind, .recipe)
        XCTAssertNil(m.blob("cache"))
        let weights = try InMemoryWeights(loading: try SafetensorsFile(path: Self.models["base"]!))
        _ = try r.plugin("half", baseSHA256: m.base!.sha256).apply(to: weights)
        let cached = try r.manifest("half").blob("cache")
        XCTAssertNotNil(cached, "the evaluated recipe is kept as a blob")
        _ = try r.plugin("half", baseSHA256: m.base!.sha256)
        XCTAssertEqual(try r.manifest("half").blob("cache"), cached, "second use reuses the cache")
    }

    func testVerifyFindsCorruptionAndMissingBlobs() throws {
        let r = try freshRegistry()
        let m = try add(r, "ft", from: Self.models["ft"]!)
        XCTAssertEqual(try r.verify().problems, [])
        let blob = r.blobPath(m.blob("weights")!.sha256)
        let fd = open(blob, O_WRONLY)
        var byte: UInt8 = 0xFF
        XCTAssertEqual(pwrite(fd, &byte, 1, 5000), 1)
        close(fd)
        let problems = try r.verify().problems
        XCTAssertEqual(problems.count, 1)
        XCTAssertTrue(problems[0].contains("corrupted"), problems[0])
        XCTAssertThrowsError(try r.plugin("ft", baseSHA256: nil, cache: Self.cache)) {
            XCTAssertTrue("\($0)".contains("corrupted"), "a corrupted blob is never used: \($0)")
        }
        unlink(blob)
        XCTAssertTrue(try r.verify(["ft"]).problems[0].contains("missing"))
        XCTAssertThrowsError(try r.plugin("ft", baseSHA256: nil)) { XCTAssertTrue("\($0)".contains("missing"), "\($0)") }
    }

    func testNewerSchemaIsRefused() throws {
        let r = try freshRegistry()
        try #"{"schema": 2, "name": "future"}"#.write(toFile: r.manifestPath("future"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try r.manifest("future")) { XCTAssertTrue("\($0)".contains("schema 2 is newer"), "\($0)") }
        XCTAssertEqual(r.list().problems.count, 1)
    }

    /// A LoRA for another architecture (the merge fixtures' models use SDXL names with other shapes).
    func testLoraForAnotherArchitectureIsRefused() throws {
        let lora = try loraFixture()
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        let otherBase = root.appendingPathComponent("MumuMergeTests/Fixtures/merge/models/base.safetensors").path
        let r = try freshRegistry()
        XCTAssertThrowsError(try add(r, "bad", from: lora, base: otherBase)) { e in
            XCTAssertTrue("\(e)".contains("kohya_lora.safetensors"), "\(e)")
        }
        XCTAssertTrue(r.list().styles.isEmpty, "nothing half-registered")
    }

    /// Two processes' worth of concurrent adds: every style registered, every manifest whole.
    func testConcurrentAddsDoNotCorrupt() throws {
        let r = try freshRegistry()
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            _ = try? add(r, "s\(i)", from: Self.models[i % 2 == 0 ? "ft" : "base"]!)
        }
        let (styles, problems) = r.list()
        XCTAssertEqual(styles.map(\.name), (0..<8).map { "s\($0)" })
        XCTAssertEqual(problems, [])
        XCTAssertEqual(try r.verify().problems, [])
    }

    func testImportFolder() throws {
        let r = try freshRegistry()
        let models = Self.dir + "/webui/models"
        try FileManager.default.createDirectory(atPath: models + "/Stable-diffusion", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: models + "/Lora", withIntermediateDirectories: true)
        let ckpt = models + "/Stable-diffusion/My Anime XL v2.safetensors"
        try? FileManager.default.removeItem(atPath: ckpt)
        try FileManager.default.copyItem(atPath: Self.models["ft"]!, toPath: ckpt)
        let loraDest = models + "/Lora/detail.safetensors"
        try? FileManager.default.removeItem(atPath: loraDest)
        try FileManager.default.copyItem(atPath: try loraFixture(), toPath: loraDest)
        // LoRAs are bound to their architecture, not a file (A1111, ComfyUI): no --base needed.
        let noBase = try r.importFolder(models, base: nil, byReference: true, replace: false, cache: Self.cache)
        XCTAssertEqual(noBase.added.map(\.name), ["My-Anime-XL-v2", "detail"])
        XCTAssertEqual(noBase.added.first?.blob("weights")?.reference, ckpt, "by reference: the file stays where it is")
        XCTAssertEqual(noBase.skipped, [])
        XCTAssertNil(noBase.added.last?.base)
        XCTAssertEqual(noBase.added.last?.architecture, "sdxl-tiny")
        // With a base, the LoRA is checked against it and records it as what it was made on.
        let withBase = try r.importFolder(models + "/Lora", base: Self.models["base"]!, byReference: false, replace: true, cache: Self.cache)
        XCTAssertEqual(withBase.added.map(\.name), ["detail"])
        XCTAssertNotNil(withBase.added.first?.base)
        XCTAssertNil(withBase.added.first?.blob("lora")?.reference, "by copy")
    }

    func loraFixture() throws -> String { try Self.loraFixture() }

    static func loraFixture() throws -> String {
        // The LoRA bake fixtures are for sdxl-tiny, the architecture of these models.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        let path = root.appendingPathComponent("MumuMergeTests/Fixtures/lora/kohya_lora.safetensors").path
        guard FileManager.default.fileExists(atPath: path) else { throw XCTSkip("no LoRA fixture at \(path)") }
        return path
    }
}
