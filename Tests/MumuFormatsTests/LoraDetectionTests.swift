import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuTensor

/// LoRA-family detection against the fixtures scripts/gen_fixtures_lora.py wrote for sdxl-tiny
/// (kohya LoRA / LoCon, LyCORIS LoHa / LoKr / DoRA, diffusers PEFT) and its lora_expected.json.
final class LoraDetectionTests: XCTestCase {
    struct Expected {
        var file: String
        var kind: String
        var layout: String
        var rank: Int?
        var ranks: [Int]
        var alpha: Float?
        var alphas: [Float]
        var targets: [String]
        var tensorCount: Int
        /// Per module: the name mumu reports (kohya name, or the PEFT module path), component, rank, alpha.
        var modules: [(name: String, kohya: String, component: String, rank: Int?, alpha: Float)]
    }

    private func expectations() throws -> (architecture: String, files: [Expected]) {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("lora/lora_expected.json")))
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let files = try XCTUnwrap(json["files"] as? [String: [String: Any]])
        func float(_ v: Any?) -> Float? { (v as? NSNumber).map { $0.floatValue } }
        let out = files.keys.sorted().map { name -> Expected in
            let f = files[name]!
            let modules = (f["modules"] as! [[String: Any]]).map { m in
                let kohya = m["kohya"] as! String
                // PEFT modules are listed under their kohya names; the file holds `peft_module`.
                return (name: (m["peft_module"] as? String) ?? kohya, kohya: kohya, component: m["component"] as! String,
                        rank: m["rank"] as? Int, alpha: float(m["alpha"])!)
            }
            return Expected(file: name, kind: f["kind"] as! String, layout: f["layout"] as! String,
                            rank: f["rank"] as? Int, ranks: f["ranks"] as! [Int],
                            alpha: float(f["alpha"]), alphas: (f["alphas"] as! [NSNumber]).map(\.floatValue),
                            targets: f["targets"] as! [String], tensorCount: f["tensor_count"] as! Int, modules: modules)
        }
        return (json["architecture"] as! String, out)
    }

    func testFixturesCoverEveryKindAndBothLayouts() throws {
        let (architecture, files) = try expectations()
        XCTAssertEqual(architecture, "sdxl-tiny")
        XCTAssertEqual(Set(files.map(\.kind)), ["lora", "locon", "loha", "lokr", "dora"])
        XCTAssertEqual(Set(files.map(\.layout)), ["kohya", "peft"])
        XCTAssertEqual(files.count, 7)
    }

    func testEveryFixtureIsDetectedAsExpected() throws {
        let (architecture, files) = try expectations()
        for e in files {
            let source = try SafetensorsFile(path: fixturePath("lora/" + e.file))
            XCTAssertEqual(source.tensors.count, e.tensorCount, e.file)
            let d = try XCTUnwrap(try LoraDetector.detect(source), "\(e.file) is not seen as a LoRA")
            XCTAssertEqual(d.kind.lowercased(), e.kind, "\(e.file): kind")
            XCTAssertEqual(d.layout, e.layout, "\(e.file): layout")
            XCTAssertEqual(d.notes, [], "\(e.file): every tensor belongs to a module")

            // Ranks: every module's, and the file's (the largest here is also the most common).
            XCTAssertEqual(d.ranks, e.ranks, "\(e.file): ranks")
            XCTAssertEqual(d.rank, e.rank, "\(e.file): rank")
            // Alphas: the set, and the file's single alpha when all modules agree.
            XCTAssertEqual(d.alphas, e.alphas, "\(e.file): alphas")
            XCTAssertEqual(d.alphas.count == 1 ? d.alphas[0] : nil, e.alpha, "\(e.file): alpha")

            // Targets: the modules, by name, and per component.
            XCTAssertEqual(d.modules.count, e.targets.count, "\(e.file): target count")
            XCTAssertEqual(Set(d.modules.map(\.name)), Set(e.modules.map(\.name)), "\(e.file): targets")
            if e.layout == "kohya" {
                XCTAssertEqual(d.modules.map(\.name).sorted(), e.targets, "\(e.file): kohya targets")
            }
            var perComponent: [String: Int] = [:]
            for m in e.modules { perComponent[m.component, default: 0] += 1 }
            XCTAssertEqual(d.targets, perComponent, "\(e.file): targets per component")
            let byName = Dictionary(uniqueKeysWithValues: d.modules.map { ($0.name, $0) })
            for m in e.modules {
                guard let got = byName[m.name] else { continue }
                XCTAssertEqual(got.component, m.component, "\(e.file) \(m.kohya): component")
                XCTAssertEqual(got.rank, m.rank, "\(e.file) \(m.kohya): rank")
                XCTAssertEqual(got.alpha, m.alpha, "\(e.file) \(m.kohya): alpha")
            }

            // The base: every kohya fixture's shapes fit sdxl-tiny (and not SDXL base).
            if e.layout == "kohya" {
                XCTAssertEqual(d.architecture, architecture, "\(e.file): architecture")
            }
        }
    }

    func testKindsOfModulesWithinAFile() throws {
        let locon = try XCTUnwrap(try LoraDetector.detect(try SafetensorsFile(path: fixturePath("lora/kohya_locon.safetensors"))))
        // Conv 3x3 modules are LoCon; linears and the 1x1 conv are plain LoRA.
        XCTAssertEqual(locon.kinds, ["LoCon", "LoRA"])
        XCTAssertEqual(locon.modules.filter { $0.kind == "LoCon" }.map(\.name).sorted(),
                       ["lora_unet_input_blocks_2_0_out_layers_3", "lora_unet_input_blocks_3_0_op", "lora_unet_output_blocks_8_0_in_layers_2"])
        let dora = try XCTUnwrap(try LoraDetector.detect(try SafetensorsFile(path: fixturePath("lora/dora.safetensors"))))
        XCTAssertEqual(dora.kinds, ["DoRA"], "every module of the DoRA file carries dora_scale")
        let lokr = try XCTUnwrap(try LoraDetector.detect(try SafetensorsFile(path: fixturePath("lora/lokr.safetensors"))))
        XCTAssertEqual(lokr.modules.filter { $0.rank == nil }.map(\.name).sorted(),
                       ["lora_unet_input_blocks_1_0_out_layers_3", "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"],
                       "LoKr modules with both factors full have no rank")
    }

    func testInspectReportsTheLoraAndItsLayout() throws {
        let report = try Inspector.inspect(fixturePath("lora/peft.safetensors"), hash: false)
        XCTAssertEqual(report.layout, "peft")
        XCTAssertEqual(report.lora?.kind, "LoRA")
        let kohya = try Inspector.inspect(fixturePath("lora/kohya_lora.safetensors"), hash: false)
        XCTAssertEqual(kohya.layout, "kohya")
        XCTAssertEqual(kohya.lora?.architecture, "sdxl-tiny")
        XCTAssertNil(kohya.detection.architecture, "a LoRA is not a model")
    }

    func testFullModelsAndPlainFilesAreNotLoras() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/plain.safetensors"
        try writeTensors(path, [("model.diffusion_model.out.2.weight", [2, 2], [1, 2, 3, 4])])
        XCTAssertNil(try LoraDetector.detect(try SafetensorsFile(path: path)))
        XCTAssertNil(try LoraDetector.detect(try SafetensorsFile(path: fixturePath("layouts/micro_sgm.safetensors"))))
    }
}
