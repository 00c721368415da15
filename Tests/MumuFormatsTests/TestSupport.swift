import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuTensor

/// The committed fixtures folder.
func fixturePath(_ relative: String) -> String {
    Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent(relative).path
}

