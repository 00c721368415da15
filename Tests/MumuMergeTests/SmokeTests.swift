import XCTest
import Yams

final class SmokeTests: XCTestCase {
    func testYamsParses() throws {
        let value = try Yams.load(yaml: "a: 1\nb: [x, y]") as? [String: Any]
        XCTAssertEqual(value?["a"] as? Int, 1)
    }
}
