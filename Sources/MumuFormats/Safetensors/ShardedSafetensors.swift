import MumuTensor

/// A model split over several safetensors files with an index
/// (`NAME.safetensors.index.json` = `{"metadata": {"total_size": N}, "weight_map": {tensor: shard}}`).
public final class ShardedSafetensors: TensorSource, @unchecked Sendable {
    public let path: String
    public let shards: [SafetensorsFile]
    public let tensors: [TensorInfo]
    public let metadata: [String: String]
    /// Tensor name -> index into `shards`.
    private let location: [String: Int]

    public init(indexPath: String) throws {
        path = indexPath
        let file = try MappedFile(path: indexPath)
        let json: JSONValue
        do { json = try JSONParser.parse(file.all) } catch let e as JSONParseError {
            throw FormatError.malformed(path: indexPath, reason: "index is not valid JSON: \(e)")
        }
        guard let weightMap = json["weight_map"]?.objectValue else {
            throw FormatError.malformed(path: indexPath, reason: "index has no 'weight_map' object")
        }
        let dir = indexPath.lastIndex(of: "/").map { String(indexPath[..<$0]) } ?? "."
        var shardIndex: [String: Int] = [:]
        var shards: [SafetensorsFile] = []
        var location: [String: Int] = [:]
        for (tensor, value) in weightMap {
            guard let shard = value.stringValue else {
                throw FormatError.malformed(path: indexPath, reason: "weight_map entry for '\(tensor)' is not a file name")
            }
            guard !shard.contains("/"), shard != "..", shard != ".", !shard.isEmpty else {
                throw FormatError.malformed(path: indexPath, reason: "shard name '\(shard)' must be a plain file name beside the index")
            }
            guard location[tensor] == nil else {
                throw FormatError.malformed(path: indexPath, reason: "tensor '\(tensor)' is listed twice in weight_map")
            }
            if shardIndex[shard] == nil {
                let shardPath = dir + "/" + shard
                shardIndex[shard] = shards.count
                do { shards.append(try SafetensorsFile(path: shardPath)) } catch FormatError.io(_, let reason) {
                    throw FormatError.missingComponent(path: indexPath, component: "shard '\(shard)' (\(reason))")
                }
            }
            location[tensor] = shardIndex[shard]!
        }
        var tensors: [TensorInfo] = []
        for (s, shard) in shards.enumerated() {
            let listed = Set(location.filter { $0.value == s }.keys)
            let present = shard.infoByName
            for name in listed.sorted() where present[name] == nil {
                throw FormatError.missingTensor(path: shard.path, tensor: name + " (listed in \(indexPath))")
            }
            tensors.append(contentsOf: shard.tensors.filter { listed.contains($0.name) })
        }
        self.shards = shards
        self.tensors = tensors
        self.location = location
        metadata = shards.first?.metadata ?? [:]
    }

    public func tensor(_ name: String) throws -> TensorData {
        guard let s = location[name] else { throw FormatError.missingTensor(path: path, tensor: name) }
        return try shards[s].tensor(name)
    }

    /// The index file that goes with a shard named `NAME-00001-of-00003.safetensors`, if it exists.
    public static func indexPath(forShard path: String) -> String? {
        guard path.hasSuffix(".safetensors") else { return nil }
        let stem = path.dropLast(".safetensors".count)
        // NAME-XXXXX-of-YYYYY
        let parts = stem.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[parts.count - 2] == "of",
              parts[parts.count - 1].allSatisfy(\.isNumber), parts[parts.count - 3].allSatisfy(\.isNumber) else { return nil }
        let name = parts[..<(parts.count - 3)].joined(separator: "-")
        let index = name + ".safetensors.index.json"
        return fileExists(index) ? index : nil
    }
}

/// Writes a model as shards of at most `maxShardSize` bytes of tensor data each, plus the index.
/// Tensors are assigned in name order; a tensor bigger than the limit gets a shard of its own.
/// All shards are finished before the index is written, so a complete index means a complete set.
public final class ShardedSafetensorsWriter: @unchecked Sendable {
    public let indexPath: String
    public let writers: [SafetensorsWriter]
    private let shardOf: [String: Int]
    private let indexFile: AtomicFile
    private let indexJSON: [UInt8]

    /// `path` names the set: `DIR/NAME.safetensors` gives `DIR/NAME-0000i-of-0000n.safetensors`
    /// and `DIR/NAME.safetensors.index.json`.
    public init(path: String, tensors: [TensorInfo], metadata: [String: String] = [:],
                maxShardSize: Int, overwrite: Bool = false) throws {
        guard maxShardSize > 0 else { throw FormatError.unsupported("--max-shard-size must be positive") }
        let stem = path.hasSuffix(".safetensors") ? String(path.dropLast(".safetensors".count)) : path
        var groups: [[TensorInfo]] = [[]]
        var size = 0
        for t in tensors.sorted(by: { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }) {
            if size + t.byteCount > maxShardSize, !groups[groups.count - 1].isEmpty {
                groups.append([]); size = 0
            }
            groups[groups.count - 1].append(t)
            size += t.byteCount
        }
        let n = groups.count
        func pad(_ i: Int) -> String { let s = String(i); return String(repeating: "0", count: max(0, 5 - s.count)) + s }
        var writers: [SafetensorsWriter] = []
        var shardOf: [String: Int] = [:]
        var weightMap: [(String, JSONValue)] = []
        do {
            for (i, group) in groups.enumerated() {
                let shardPath = "\(stem)-\(pad(i + 1))-of-\(pad(n)).safetensors"
                writers.append(try SafetensorsWriter(path: shardPath, tensors: group, metadata: metadata, overwrite: overwrite))
                let shardName = shardPath.split(separator: "/").last.map(String.init) ?? shardPath
                for t in group { shardOf[t.name] = i; weightMap.append((t.name, .string(shardName))) }
            }
        } catch {
            writers.forEach { $0.abort() }
            throw error
        }
        weightMap.sort { $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) }
        let total = tensors.reduce(0) { $0 + $1.byteCount }
        let index: JSONValue = .object([("metadata", .object([("total_size", .int(total))])), ("weight_map", .object(weightMap))])
        indexJSON = Array(JSONWriter.write(index).utf8) + [0x0A]
        indexPath = stem + ".safetensors.index.json"
        do { indexFile = try AtomicFile(path: indexPath, overwrite: overwrite) } catch {
            writers.forEach { $0.abort() }
            throw error
        }
        self.writers = writers
        self.shardOf = shardOf
    }

    public func write(_ data: TensorData) throws {
        guard let s = shardOf[data.info.name] else { throw FormatError.unsupported("\(indexPath): tensor '\(data.info.name)' was not declared") }
        try writers[s].write(data)
    }

    public func finish() throws {
        do {
            for w in writers { try w.finish() }
            try indexJSON.withUnsafeBytes { try indexFile.write($0, at: 0) }
            try indexFile.commit()
        } catch {
            abort()
            throw error
        }
    }

    public func abort() {
        writers.forEach { $0.abort() }
        indexFile.abort()
    }
}
