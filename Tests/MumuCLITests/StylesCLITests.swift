import Foundation
import MumuTestSupport
import XCTest

/// The styles, merge and lora commands as a user runs them (issue 12, part B 8, 10, 11, 12), with `CLITests`'s
/// runner: `--quiet` is quiet, options that do nothing for the kind are usage errors, reading never creates the
/// registry, `show` prints text, `merge --dry-run --json`, `merge --method lora`, a delta style finds its base.
extension CLITests {
    static let styleModels: TinyModels = {
        let t = TinyModels(label: "styles-cli")
        try! t.synth("base", seed: 1)
        try! t.synth("ft", seed: 2, perturb: "base")
        return t
    }()

    static var loraFixture: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("MumuMergeTests/Fixtures/lora/kohya_lora.safetensors").path
    }

    func testStylesAddQuietPrintsNothing() throws {
        let home = try makeTemporaryDirectory("cli-styles") + "/home"
        let r = try mumu(["styles", "add", "anime", "--from", Self.styleModels["ft"], "--quiet", "--home", home])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.out, "")
        XCTAssertEqual(r.err, "")
        // Every command of the family that prints a summary takes it too.
        let dir = try makeTemporaryDirectory("cli-styles")
        for args in [["styles", "materialize", "anime", "-o", dir + "/m.safetensors"], ["styles", "remove", "anime"], ["styles", "gc"],
                     ["lora", "extract", "--base", Self.styleModels["base"], "--tuned", Self.styleModels["ft"], "--rank", "2", "-o", dir + "/l.safetensors"]] {
            let q = try mumu(args + ["--quiet", "--home", home].filter { args[0] == "styles" || $0 == "--quiet" })
            XCTAssertEqual(q.status, 0, "\(args): \(q.err)")
            XCTAssertEqual(q.out + q.err, "", "\(args)")
        }
    }

    func testStylesOptionsThatDoNothingAreUsageErrors() throws {
        let home = try makeTemporaryDirectory("cli-styles") + "/home"
        let cases: [([String], String)] = [
            (["--from", Self.loraFixture, "--kind", "lora", "--rank", "4"], "--rank does nothing for a lora style"),
            (["--from", Self.styleModels["ft"], "--kind", "full", "--base", Self.styleModels["base"]], "--base does nothing for --kind full"),
            (["--from", Self.styleModels["ft"], "--kind", "delta"], "a delta style needs --base"),
            (["--from", Self.styleModels["ft"], "--base", Self.styleModels["base"], "--conv-rank", "2"], "--conv-rank applies with --rank"),
            (["--from", Self.styleModels["ft"], "--kind", "delta", "--base", Self.styleModels["base"], "--by-reference"], "--by-reference does nothing"),
        ]
        for (args, message) in cases {
            let r = try mumu(["styles", "add", "x"] + args + ["--home", home])
            XCTAssertEqual(r.status, 64, "\(args): \(r.err)")
            XCTAssertTrue(r.err.contains(message) && r.err.contains("Usage: mumu styles add"), r.err)
        }
        // Found once the file is read (the kind is inferred): a runtime error naming the option, no flag quoted.
        let r = try mumu(["styles", "add", "x", "--from", Self.loraFixture, "--rank", "4", "--base", Self.styleModels["base"], "--home", home])
        XCTAssertEqual(r.status, 1, r.err)
        XCTAssertTrue(r.err.hasPrefix("mumu: error: a rank does nothing for a lora style"), r.err)
    }

    func testStylesListAndShowReadWithoutCreating() throws {
        let home = try makeTemporaryDirectory("cli-styles") + "/never-made"
        let list = try mumu(["styles", "list", "--json", "--home", home])
        XCTAssertEqual(list.status, 0, list.err)
        let json = try JSONSerialization.jsonObject(with: Data(list.out.utf8)) as? [String: Any]
        XCTAssertEqual((json?["styles"] as? [Any])?.count, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: home), "styles list --json created the registry")

        let home2 = try makeTemporaryDirectory("cli-styles") + "/home"
        XCTAssertEqual(try mumu(["styles", "add", "anime", "--from", Self.styleModels["ft"], "--home", home2]).status, 0)
        let text = try mumu(["styles", "show", "anime", "--home", home2])
        XCTAssertEqual(text.status, 0, text.err)
        XCTAssertTrue(text.out.hasPrefix("name") && text.out.contains("kind          full"), text.out)
        XCTAssertNil(try? JSONSerialization.jsonObject(with: Data(text.out.utf8)), "text by default")
        let js = try mumu(["styles", "show", "anime", "--json", "--home", home2])
        let manifest = try JSONSerialization.jsonObject(with: Data(js.out.utf8)) as? [String: Any]
        XCTAssertEqual(manifest?["name"] as? String, "anime")
    }

    /// B11 end to end, and removing the base other styles were added against names them.
    func testDeltaStyleMaterializesWithItsRecordedBase() throws {
        let home = try makeTemporaryDirectory("cli-styles") + "/home"
        let dir = try makeTemporaryDirectory("cli-styles")
        let add = try mumu(["styles", "add", "ft", "--from", Self.styleModels["ft"], "--base", Self.styleModels["base"], "--home", home])
        XCTAssertEqual(add.status, 0, add.err)
        let m = try mumu(["styles", "materialize", "ft", "-o", dir + "/ft.safetensors", "--home", home])
        XCTAssertEqual(m.status, 0, m.err)
        XCTAssertEqual(try readFile(dir + "/ft.safetensors").count, try readFile(Self.styleModels["ft"]).count)
        // A registry given by a relative path: a rank-limited delta (materialized through a LoRA recipe) still finds its blob.
        let cwd = (home as NSString).deletingLastPathComponent
        let lossy = try mumu(["styles", "add", "ft64", "--from", Self.styleModels["ft"], "--base", Self.styleModels["base"], "--rank", "2",
                              "--home", "home"], cwd: cwd)
        XCTAssertEqual(lossy.status, 0, lossy.err)
        let m2 = try mumu(["styles", "materialize", "ft64", "-o", dir + "/ft64.safetensors", "--home", "home"], cwd: cwd)
        XCTAssertEqual(m2.status, 0, m2.err)

        XCTAssertEqual(try mumu(["styles", "add", "sdxl", "--from", Self.styleModels["base"], "--home", home]).status, 0)
        let removed = try mumu(["styles", "remove", "sdxl", "--home", home])
        XCTAssertEqual(removed.status, 0, removed.err)
        XCTAssertTrue(removed.err.contains("style 'sdxl' was the base of 'ft'"), removed.err)
    }

    func testMergeDryRunJSONAndInlineLora() throws {
        let dir = try makeTemporaryDirectory("cli-merge")
        let plan = try mumu(["merge", "--method", "weighted_sum", "--a", Self.styleModels["base"], "--b", Self.styleModels["ft"],
                             "--alpha", "0.5", "--dry-run", "--json"])
        XCTAssertEqual(plan.status, 0, plan.err)
        let json = try JSONSerialization.jsonObject(with: Data(plan.out.utf8)) as? [String: Any]
        XCTAssertEqual((json?["inputs"] as? [Any])?.count, 2, plan.out)
        XCTAssertNotNil((json?["output"] as? [String: Any])?["bytes"] as? Int)

        let lora = try mumu(["merge", "--method", "lora", "--a", Self.styleModels["base"], "--lora", Self.loraFixture, "--strength", "0.5",
                             "-o", dir + "/baked.safetensors", "--quiet"])
        XCTAssertEqual(lora.status, 0, lora.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/baked.safetensors"))
        let noLora = try mumu(["merge", "--method", "lora", "--a", Self.styleModels["base"], "-o", dir + "/x.safetensors"])
        XCTAssertEqual(noLora.status, 64)
        XCTAssertTrue(noLora.err.contains("--method lora needs --lora FILE"), noLora.err)
    }
}
