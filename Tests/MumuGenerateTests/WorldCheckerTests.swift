import Foundation
import MumuFormats
import MumuGenerate
import MumuEncoder
import MumuTestSupport
import XCTest

/// The Swift port of world.py's checker and style classifiers (Tests/MumuTestSupport/WorldChecker.swift) gives
/// world.py's verdicts on true renders of held-out scenes in every style (scripts/gen_fixtures_world.py).
/// Fractions are ratios of pixel counts, so they agree exactly up to the fixture's 6 printed decimals.
final class WorldCheckerTests: XCTestCase {
    func testAgreesWithWorldPy() throws {
        let (constants, scenes) = try World.load()
        let checker = World.Checker(constants)
        let data = try Data(contentsOf: World.fixtures.appendingPathComponent("verdicts.json"))
        let verdicts = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        XCTAssertEqual(verdicts.count, 60)
        var claimed = 0, shapesNamed = 0, shapes = 0
        for v in verdicts {
            let scene = scenes[v["index"] as! Int]
            let style = v["style"] as! String
            let label = "\(v["file"] as! String)"
            let image = try ImageLoader.load(World.fixtures.appendingPathComponent("renders/\(v["file"] as! String)").path)
            XCTAssertEqual(checker.check(image, scene), v["check_flat"] as! [Bool], label)
            XCTAssertEqual(checker.check(image, scene, palette: style), v["check_style"] as! [Bool], label)
            for (key, fill) in [("interior", checker.interiorFill), ("outline", checker.outlineFill)] {
                let want = v[key] as! [[Double]]
                let got = fill(image, scene)
                XCTAssertEqual(got.count, want.count, label)
                for (g, w) in zip(got, want) {
                    XCTAssertEqual(g.0, w[0], accuracy: 1e-6, label)
                    XCTAssertEqual(g.1, w[1], accuracy: 1e-6, label)
                }
            }
            XCTAssertEqual(checker.blockiness(image), v["blockiness"] as! Double, accuracy: 1e-6, label)
            let classes = checker.styles(image, scene)
            XCTAssertEqual(classes, v["classifiers"] as! [String: Bool], label)
            if classes[style] == true { claimed += 1 }
            let kinds = checker.shapeOf(image, scene, palette: style == "pastel" ? "pastel" : "flat")
            XCTAssertEqual(kinds.map { $0 ?? "none" }, (v["shape_of"] as! [Any]).map { $0 as? String ?? "none" }, label)
            if style == "flat" || style == "pastel" {
                shapesNamed += zip(kinds, scene.shapes).filter { $0.0 == $0.1.shape }.count
                shapes += scene.shapes.count
            }
        }
        // The classifiers are not vacuous: on these true renders they claim most of their own style's images.
        XCTAssertGreaterThanOrEqual(claimed, 40)
        // shape_of names every flat and pastel shape's kind on true renders (399 of 399 on 200 held-out scenes).
        XCTAssertEqual(shapesNamed, shapes)
    }
}

/// A shipped model is handed out only with the bytes SHA256SUMS lists; missing or damaged files are named with the
/// command that rebuilds them.
final class ShippedModelsTests: XCTestCase {
    func testMissingAndDamagedFilesNameTheRebuild() throws {
        let dir = try makeTemporaryURL("shipped")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        XCTAssertThrowsError(try ShippedModels(folder: dir.path)) { XCTAssertTrue("\($0)".contains("SHA256SUMS: not found"), "\($0)") }
        let bytes = Data("shapes".utf8)
        let sum = bytes.withUnsafeBytes { Hashing.sha256($0) }
        try "\(sum)  base.safetensors\n\(sum)  outline.safetensors\n".write(to: dir.appendingPathComponent("SHA256SUMS"), atomically: true, encoding: .utf8)
        try bytes.write(to: dir.appendingPathComponent("base.safetensors"))
        let shipped = try ShippedModels(folder: dir.path)
        XCTAssertEqual(try shipped.path("base.safetensors"), dir.path + "/base.safetensors")
        XCTAssertThrowsError(try shipped.path("outline.safetensors")) {
            XCTAssertTrue("\($0)".hasSuffix("outline.safetensors: missing; rebuild it with: python3 scripts/train_world.py finetune --style outline && python3 scripts/train_world.py export"), "\($0)")
        }
        XCTAssertThrowsError(try shipped.path("pixel.safetensors")) { XCTAssertTrue("\($0)".contains("does not list pixel.safetensors"), "\($0)") }
        try Data("shapez".utf8).write(to: dir.appendingPathComponent("base.safetensors"))
        XCTAssertThrowsError(try shipped.path("base.safetensors")) {
            XCTAssertTrue("\($0)".contains("base.safetensors: damaged (SHA-256 "), "\($0)")
            XCTAssertTrue("\($0)".hasSuffix("rebuild it with: python3 scripts/train_world.py base && python3 scripts/train_world.py export"), "\($0)")
        }
    }
}
