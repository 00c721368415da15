import Foundation
import MumuFormats

/// Paths and JSON of the fixtures scripts/gen_fixtures_encoder_{images,tokenizer}.py write.
enum EncoderFixtures {
    static var root: URL { Bundle.module.resourceURL!.appendingPathComponent("Fixtures") }
    static func image(_ name: String) -> String { root.appendingPathComponent("images/\(name)").path }
    static func tokenizerFile(_ name: String) -> String { root.appendingPathComponent("tokenizer/\(name)").path }

    static func json(_ path: String) throws -> JSONValue {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try data.withUnsafeBytes { try JSONParser.parse($0, maxDepth: 32) }
    }

    static func bytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }
}
