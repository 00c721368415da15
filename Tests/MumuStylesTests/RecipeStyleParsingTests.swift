import Foundation
import MumuFormats
import MumuMerge
import MumuStyles
import XCTest

/// `styles add --from RECIPE` reads recipes with the merge engine's parser: a "billion laughs" recipe
/// fails at once naming the file, and a chain of 64 shared anchors is checked in linear time (a parser
/// that expanded aliases would not finish these tests).
final class RecipeStyleParsingTests: XCTestCase {
    func write(_ text: String, _ name: String) throws -> String {
        let path = StyleRegistryTests.dir + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func registry(_ name: String = #function) throws -> StyleRegistry {
        let home = StyleRegistryTests.dir + "/home-" + name.filter { $0.isLetter || $0.isNumber }
        try? FileManager.default.removeItem(atPath: home)
        return try StyleRegistry(home: home)
    }

    func testBillionLaughsRecipeIsRefusedNamingTheFile() throws {
        var lines = ["version: 1", "models: {base: base.safetensors}", "merge: base", "lols:",
                     "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        for k in 1...9 { lines.append("  l\(k): &l\(k) [" + Array(repeating: "*l\(k - 1)", count: 10).joined(separator: ", ") + "]") }
        let path = try write(lines.joined(separator: "\n") + "\n", "laughs.yaml")
        let r = try registry()
        var request = StyleAddRequest(name: "laughs", from: path)
        request.base = StyleRegistryTests.models["base"]!
        XCTAssertThrowsError(try r.add(request, cache: StyleRegistryTests.cache)) { e in
            XCTAssertTrue("\(e)".contains("laughs.yaml"), "\(e)")
            XCTAssertTrue("\(e)".contains("unknown top-level field 'lols'"), "\(e)")
        }
        XCTAssertThrowsError(try r.manifest("laughs"))
    }

    func testDeeplySharedRecipeIsRegistered() throws {
        var expression = "&n0 base"
        for k in 1...64 { expression = "&n\(k) {method: weighted_sum, a: \(expression), b: *n\(k - 1)}" }
        let path = try write("version: 1\nmodels: {base: base.safetensors}\nmerge: \(expression)\n", "chain64.yaml")
        let r = try registry()
        var request = StyleAddRequest(name: "chain", from: path)
        request.base = StyleRegistryTests.models["base"]!
        let m = try r.add(request, cache: StyleRegistryTests.cache)
        XCTAssertEqual(m.kind, .recipe)
        XCTAssertEqual(try RecipeGraph(recipe: try Recipe.load(path: path)).nodes.count, 65)
    }
}
