import Foundation
import MumuFormats

/// The shapes world's trained models that ship in the repository (`models/shapes`, issue 14): each file is
/// listed with its SHA-256 in `models/shapes/SHA256SUMS` (`sha256sum` format), and `path(_:)` hands a file out
/// only when it is there with those bytes. A missing or damaged file is an error naming the file and the
/// command that rebuilds it, never a download.
public struct ShippedModels: Sendable {
    public let folder: String
    /// name (as listed, e.g. `base.safetensors`) -> SHA-256
    public let sums: [String: String]

    public enum Error: Swift.Error, CustomStringConvertible {
        case missingFolder(String)
        case unlisted(folder: String, name: String)
        case missing(path: String, rebuild: String)
        case damaged(path: String, found: String, expected: String, rebuild: String)

        public var description: String {
            switch self {
            case .missingFolder(let f):
                return "\(f)/SHA256SUMS: not found; the shapes world's models ship in the repository under models/shapes (run from the repository's root, or give --models)"
            case let .unlisted(folder, name):
                return "\(folder)/SHA256SUMS does not list \(name)"
            case let .missing(path, rebuild):
                return "\(path): missing; rebuild it with: \(rebuild)"
            case let .damaged(path, found, expected, rebuild):
                return "\(path): damaged (SHA-256 \(found.prefix(12))..., SHA256SUMS says \(expected.prefix(12))...); restore it with git (git checkout -- \(path)) or rebuild it with: \(rebuild)"
            }
        }
    }

    public init(folder: String) throws {
        self.folder = folder
        let list = folder + "/SHA256SUMS"
        guard let text = try? String(contentsOfFile: list, encoding: .utf8) else { throw Error.missingFolder(folder) }
        var sums: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.isEmpty {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { continue }
            sums[parts[1].trimmingCharacters(in: CharacterSet(charactersIn: " *"))] = String(parts[0])
        }
        self.sums = sums
    }

    /// The command that rebuilds a shipped file (scripts/train_world.py, models/shapes/README.md).
    public static func rebuildCommand(_ name: String) -> String {
        let train = "python3 scripts/train_world.py"
        let stem = name.hasSuffix(".safetensors") ? String(name.dropLast(".safetensors".count)) : name
        switch stem {
        case "base": return "\(train) base && \(train) export"
        case "outline", "striped", "pixel", "pastel": return "\(train) finetune --style \(stem) && \(train) export"
        case _ where stem == "mumu-decoder" || stem.hasPrefix("encoder/") || stem.hasPrefix("crops/"):
            return "python3 scripts/train_world_mumu.py train && python3 scripts/train_world_mumu.py export"
        default: return "\(train) export (models/shapes/README.md lists every step)"
        }
    }

    /// A shipped folder (`encoder`): its path after checking every file SHA256SUMS lists under it.
    public func folderPath(_ name: String) throws -> String {
        let files = sums.keys.filter { $0.hasPrefix(name + "/") }.sorted()
        guard !files.isEmpty else { throw Error.unlisted(folder: folder, name: name + "/") }
        for file in files { _ = try path(file) }
        return folder + "/" + name
    }

    /// The file's path after checking that it exists and has the listed SHA-256.
    public func path(_ name: String) throws -> String {
        guard let expected = sums[name] else { throw Error.unlisted(folder: folder, name: name) }
        let path = folder + "/" + name
        let rebuild = Self.rebuildCommand(name)
        guard FileManager.default.fileExists(atPath: path) else { throw Error.missing(path: path, rebuild: rebuild) }
        let file = try MappedFile(path: path)
        let found = Hashing.sha256(UnsafeRawBufferPointer(start: file.base, count: file.size))
        guard found == expected else { throw Error.damaged(path: path, found: found, expected: expected, rebuild: rebuild) }
        return path
    }
}
