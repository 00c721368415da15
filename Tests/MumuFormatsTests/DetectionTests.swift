import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuTensor

/// Architecture detection on models `Synthesizer` writes from the descriptors (formats/*.json), on
/// hand-made files that break them, and on a diffusers folder; and the synthesizer's own promises
/// (same seed, same bytes; perturbation of the asked size).
final class DetectionTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTemporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    private var tiny: ArchitectureDescriptor { Architectures.named("sdxl-tiny")! }

    /// Writes a synthetic model the way `mumu synth` does; `extra` tensors are written beside it.
    @discardableResult
    private func synthesize(_ name: String, seed: UInt64 = 0, dtype: DType = .f16, components: Set<String>? = nil,
                            perturb: (TensorSource, Float)? = nil, metadata: [String: String]? = nil,
                            extra: [(TensorInfo, [UInt8])] = []) throws -> String {
        var synth = Synthesizer(architecture: tiny)
        synth.seed = seed
        synth.dtype = dtype
        synth.components = components
        if let perturb { synth.perturb = (base: perturb.0, scale: perturb.1) }
        let path = dir + "/" + name
        let writer = try SafetensorsWriter(path: path, tensors: try synth.outputInfos() + extra.map(\.0),
                                           metadata: metadata ?? synth.metadata())
        for (info, bytes) in extra { try bytes.withUnsafeBytes { try writer.write(info.name, $0) } }
        try synth.write(to: writer)      // finishes the file
        return path
    }

    /// The descriptor's rows written with zero values, one shape replaced.
    private func writeTinyByHand(_ path: String, replacing name: String, with shape: [Int]) throws {
        var infos = tiny.tensors.filter { !$0.optional }.map { TensorInfo(name: $0.name, dtype: $0.dtype ?? .f16, shape: $0.shape) }
        let i = try XCTUnwrap(infos.firstIndex { $0.name == name })
        infos[i].shape = shape
        let w = try SafetensorsWriter(path: path, tensors: infos, metadata: [:])
        let zeros = [UInt8](repeating: 0, count: infos.map(\.byteCount).max()!)
        try zeros.withUnsafeBytes { z in
            for t in infos { try w.write(t.name, UnsafeRawBufferPointer(rebasing: z[0..<t.byteCount])) }
        }
        try w.finish()
    }

    private func detect(_ path: String) throws -> ModelDetection {
        let file = try SafetensorsFile(path: path)
        return ModelDetector.detect(file.tensors, metadata: file.metadata)
    }

    // MARK: - complete and partial models

    func testSynthesizedTinyIsDetectedWithEveryComponentComplete() throws {
        let path = try synthesize("tiny.safetensors")
        let report = try Inspector.inspect(path, hash: false)
        XCTAssertEqual(report.format, .safetensors)
        XCTAssertEqual(report.layout, "sgm")
        XCTAssertNil(report.lora)
        let d = report.detection
        XCTAssertEqual(d.architecture, "sdxl-tiny")
        XCTAssertEqual(d.family, "sdxl")
        XCTAssertEqual(d.notes, [], "a complete model needs no notes")
        XCTAssertEqual(d.extraTensors, [])
        XCTAssertFalse(d.inpainting)
        XCTAssertEqual(d.components.map(\.name), ["unet", "te1", "te2", "vae"])
        let rows = tiny.tensors.filter { !$0.optional }
        for c in d.components {
            XCTAssertEqual(c.status, "complete", c.name)
            XCTAssertEqual(c.parameters, tiny.parameterCounts[c.name], c.name)
            XCTAssertEqual(c.tensors, rows.filter { $0.component == c.name }.count, c.name)
            XCTAssertEqual(c.dtypes, ["F16": c.tensors], c.name)
        }
        XCTAssertEqual(d.tensorCount, rows.count)
        XCTAssertEqual(d.parameters, tiny.parameterCounts.values.reduce(0, +))
        XCTAssertEqual(d.prediction.type, "epsilon")
        XCTAssertEqual(d.prediction.source, "metadata modelspec.prediction_type", "synth writes modelspec.prediction_type")
        XCTAssertEqual(report.metadata["modelspec.architecture"], "mumu-sdxl-tiny")
    }

    func testModelWithoutTextEncodersSaysTheyAreAbsent() throws {
        let path = try synthesize("unet_vae.safetensors", components: ["unet", "vae"])
        let d = try detect(path)
        XCTAssertEqual(d.architecture, "sdxl-tiny")
        XCTAssertEqual(d.components.map(\.name), ["unet", "vae"])
        XCTAssertTrue(d.components.allSatisfy { $0.status == "complete" })
        XCTAssertEqual(d.parameters, tiny.parameterCounts["unet"]! + tiny.parameterCounts["vae"]!)
        let note = try XCTUnwrap(d.notes.first { $0.contains("absent") }, "\(d.notes)")
        XCTAssertTrue(note.contains("te1") && note.contains("te2"), note)
        XCTAssertFalse(note.contains("unet") || note.contains("vae"), note)
    }

    func testOneChangedShapeMakesTheModelUnknownAndSaysWhich() throws {
        let name = "model.diffusion_model.input_blocks.0.0.weight"
        let original = try XCTUnwrap(tiny.tensorsByName[name]).shape
        XCTAssertEqual(original, [32, 4, 3, 3])
        let path = dir + "/inpaint.safetensors"
        try writeTinyByHand(path, replacing: name, with: [32, 9, 3, 3])
        let d = try detect(path)
        XCTAssertNil(d.architecture)
        XCTAssertEqual(d.family, "sdxl", "the marker keys still tell the family")
        XCTAssertTrue(d.inpainting)
        let reason = try XCTUnwrap(d.notes.first { $0.contains(name) }, "\(d.notes)")
        XCTAssertTrue(reason.contains("[32, 9, 3, 3]"), reason)
        XCTAssertTrue(reason.contains("[32, 4, 3, 3]"), reason)
        XCTAssertTrue(reason.contains("sdxl-tiny"), "names the closest architecture: \(reason)")
        XCTAssertTrue(d.notes.contains { $0.contains("inpainting") }, "\(d.notes)")
        // Everything else fits, so the reason counts one tensor short.
        let total = tiny.tensors.filter { !$0.optional }.count
        XCTAssertTrue(reason.contains("(\(total - 1) of \(total) tensors fit)"), reason)

        // The same shape at the original width is detected again: the test's file is otherwise right.
        let fine = dir + "/fine.safetensors"
        try writeTinyByHand(fine, replacing: name, with: original)
        XCTAssertEqual(try detect(fine).architecture, "sdxl-tiny")
        XCTAssertFalse(try detect(fine).inpainting)
    }

    func testUnrelatedNamesAreUnknownWithAReason() throws {
        let path = dir + "/random.safetensors"
        try writeTensors(path, [("encoder.layer.0.attention.self.query.weight", [4, 4], [Float](repeating: 0.5, count: 16)),
                                ("pooler.dense.bias", [4], [1, 2, 3, 4]),
                                ("zz_top", [2], [0, 1])])
        let d = try detect(path)
        XCTAssertNil(d.architecture)
        XCTAssertNil(d.family)
        XCTAssertFalse(d.inpainting)
        XCTAssertEqual(d.components.count, 0)
        XCTAssertEqual(d.tensorCount, 3)
        XCTAssertEqual(d.parameters, 22)
        XCTAssertEqual(d.notes.count, 1)
        XCTAssertTrue(d.notes[0].contains("no known architecture"), d.notes[0])
        XCTAssertTrue(d.notes[0].contains("encoder.layer.0.attention.self.query.weight"), "names the keys it saw: \(d.notes[0])")
        let report = try Inspector.inspect(path, hash: false)
        XCTAssertEqual(report.layout, "unknown")
        XCTAssertNil(report.detection.architecture)
    }

    // MARK: - prediction type

    func testVPredKeyMakesAVPredictionModel() throws {
        let vpred = TensorInfo(name: "v_pred", dtype: .f32, shape: [])
        let ztsnr = TensorInfo(name: "ztsnr", dtype: .f32, shape: [])
        let zero = [UInt8](repeating: 0, count: 4)
        let path = try synthesize("vpred.safetensors", extra: [(vpred, zero), (ztsnr, zero)])
        let d = try detect(path)
        XCTAssertEqual(d.architecture, "sdxl-tiny", "marker keys do not stop detection")
        XCTAssertEqual(d.extraTensors, ["v_pred", "ztsnr"])
        XCTAssertEqual(d.prediction.type, "v")
        XCTAssertEqual(d.prediction.source, "key v_pred")
        XCTAssertTrue(d.prediction.zeroTerminalSNR)
        XCTAssertFalse(d.prediction.edm)
    }

    func testModelSpecPredictionTypeIsHonouredAndTheDefaultIsTheArchitecturesOwn() throws {
        var meta = Synthesizer(architecture: tiny).metadata()
        meta["modelspec.prediction_type"] = "v"
        let v = try detect(try synthesize("v_meta.safetensors", metadata: meta))
        XCTAssertEqual(v.architecture, "sdxl-tiny")
        XCTAssertEqual(v.prediction.type, "v")
        XCTAssertEqual(v.prediction.source, "metadata modelspec.prediction_type")
        XCTAssertFalse(v.prediction.zeroTerminalSNR)

        meta["modelspec.prediction_type"] = nil
        let plain = try detect(try synthesize("no_meta.safetensors", metadata: meta))
        XCTAssertEqual(plain.prediction.type, "epsilon")
        XCTAssertEqual(plain.prediction.source, "default")

        // A v_pred key wins over metadata that says epsilon.
        meta["modelspec.prediction_type"] = "epsilon"
        let both = try detect(try synthesize("both.safetensors", metadata: meta,
                                             extra: [(TensorInfo(name: "v_pred", dtype: .u8, shape: [1]), [1])]))
        XCTAssertEqual(both.prediction.type, "v")
        XCTAssertEqual(both.prediction.source, "key v_pred")

        // EDM v-prediction is told by its own key.
        let edm = try detect(try synthesize("edm.safetensors", metadata: meta,
                                            extra: [(TensorInfo(name: "edm_vpred.sigma_max", dtype: .f32, shape: []), [0, 0, 0x80, 0x3F])]))
        XCTAssertEqual(edm.prediction.type, "v")
        XCTAssertTrue(edm.prediction.edm)
    }

    // MARK: - the synthesizer

    func testSameSeedGivesTheSameBytesAndAnotherSeedOtherValues() throws {
        let a = try readFile(try synthesize("a.safetensors", seed: 42))
        let b = try readFile(try synthesize("b.safetensors", seed: 42))
        XCTAssertEqual(a.count, b.count)
        XCTAssertTrue(a == b, "the same seed must give the same file")

        let fa = try SafetensorsFile(path: dir + "/a.safetensors")
        let fc = try SafetensorsFile(path: try synthesize("c.safetensors", seed: 43))
        XCTAssertEqual(fa.tensors, fc.tensors, "same names, dtypes and shapes")
        var differing = 0, random = 0
        for t in fa.tensors {
            let x = try fa.tensor(t.name), y = try fc.tensor(t.name)
            let same = withExtendedLifetime((x, y)) { x.bytes.elementsEqual(y.bytes) }
            let values = try x.floats()
            let constant = values.allSatisfy { $0 == values[0] }
            if !constant {
                random += 1
                XCTAssertFalse(same, "\(t.name) is random but identical under another seed")
            }
            if !same { differing += 1 }
        }
        XCTAssertGreaterThan(random, fa.tensors.count * 9 / 10)
        XCTAssertEqual(differing, random)

        // Other dtypes: the same values, rounded differently.
        let f32 = try SafetensorsFile(path: try synthesize("a32.safetensors", seed: 42, dtype: .f32))
        let name = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
        let half = try fa.tensor(name).floats()
        let single = try f32.tensor(name).converted(to: .f16).floats()
        XCTAssertEqual(half, single, "f16 synth = f32 synth rounded to f16")
    }

    func testPerturbationHasTheAskedRelativeSize() throws {
        let basePath = try synthesize("base.safetensors", seed: 1)
        let base = try SafetensorsFile(path: basePath)
        let tuned = try SafetensorsFile(path: try synthesize("tuned.safetensors", seed: 2, perturb: (base, 0.01)))
        XCTAssertEqual(tuned.tensors, base.tensors)
        XCTAssertTrue(tuned.metadata["modelspec.title"]?.contains("fine-tune") ?? false)
        XCTAssertTrue(tuned.metadata["mumu.synth"]?.contains("\"perturb\"") ?? false)
        var ratios: [Double] = []
        for t in base.tensors where t.elementCount >= 4096 {
            let b = try base.tensor(t.name).floats(), p = try tuned.tensor(t.name).floats()
            var num = 0.0, den = 0.0
            for i in 0..<b.count {
                let d = Double(p[i]) - Double(b[i])
                num += d * d
                den += Double(b[i]) * Double(b[i])
            }
            let ratio = (num / den).squareRoot()
            XCTAssertGreaterThanOrEqual(ratio, 0.005, t.name)
            XCTAssertLessThanOrEqual(ratio, 0.02, t.name)
            ratios.append(ratio)
        }
        XCTAssertGreaterThan(ratios.count, 100)
        ratios.sort()
        let median = ratios[ratios.count / 2]
        XCTAssertEqual(median, 0.01, accuracy: 0.001, "noise RMS = 0.01 x tensor RMS")
        // The perturbed model is still the same architecture.
        XCTAssertEqual(ModelDetector.detect(tuned.tensors, metadata: tuned.metadata).architecture, "sdxl-tiny")

        // A base that lacks tensors cannot be perturbed into a full model.
        let partial = try SafetensorsFile(path: try synthesize("partial.safetensors", components: ["unet", "vae"]))
        XCTAssertThrowsError(try synthesize("bad.safetensors", perturb: (partial, 0.01))) { error in
            guard case let FormatError.missingTensor(_, tensor)? = error as? FormatError else { return XCTFail("\(error)") }
            XCTAssertTrue(tensor.hasPrefix("conditioner.embedders."), tensor)
        }
        XCTAssertFalse(fileExists(dir + "/bad.safetensors"))
    }

    // MARK: - a diffusers folder

    func testMicroDiffusersFolderIsReportedAsAnUnknownSDXLFamilyPipeline() throws {
        let path = fixturePath("layouts/micro_diffusers")
        let report = try Inspector.inspect(path, hash: false)
        XCTAssertEqual(report.format, .diffusers)
        XCTAssertEqual(report.layout, "diffusers")
        XCTAssertNil(report.lora)
        let folder = try DiffusersFolder(path: path)
        XCTAssertEqual(folder.components, [.unet, .vae, .te1, .te2])
        let prefixes = Set(report.tensors.map { String($0.name.prefix { $0 != "." }) })
        XCTAssertEqual(prefixes, ["unet", "vae", "text_encoder", "text_encoder_2"])
        XCTAssertEqual(report.sizeBytes, folder.tensors.reduce(0) { $0 + $1.byteCount })

        let d = report.detection
        XCTAssertNil(d.architecture, "the micro widths match no descriptor")
        XCTAssertEqual(d.family, "sdxl", "detected from the sgm view of the folder's names")
        // Detection counts the folder's tensors under sgm names, where bigG's q/k/v are fused: fewer
        // tensors, the same parameters.
        XCTAssertEqual(d.tensorCount, try SGMView.view(folder, format: .diffusers).source.tensors.count)
        XCTAssertLessThan(d.tensorCount, folder.tensors.count)
        XCTAssertEqual(d.parameters, folder.tensors.filter { $0.dtype.isFloatingPoint }.reduce(0) { $0 + $1.elementCount })
        // For an unknown model the component lines are the closest architecture's partial fits (a
        // few size-independent tensors): never "complete", and only components the folder has.
        XCTAssertTrue(d.components.allSatisfy { $0.status == "partial" }, "\(d.components.map(\.status))")
        XCTAssertTrue(Set(d.components.map(\.name)).isSubset(of: ["unet", "vae", "te1", "te2"]))
        XCTAssertFalse(d.notes.isEmpty)
        XCTAssertTrue(d.notes[0].hasPrefix("no known architecture matches"), d.notes[0])
        XCTAssertTrue(d.notes[0].contains("tensors have other shapes"), d.notes[0])
    }
}
