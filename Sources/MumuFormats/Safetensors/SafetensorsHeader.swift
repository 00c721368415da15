import MumuTensor

/// A parsed and validated safetensors header: the tensors with their data offsets, and the metadata.
/// Validation follows the reference implementation's order (huggingface/safetensors, safetensors/src/tensor.rs;
/// docs/formats.md), plus explicit rejection of duplicate names and NUL bytes in names.
public struct SafetensorsHeader: Sendable {
    public struct Entry: Sendable, Equatable {
        public var info: TensorInfo
        /// Byte range inside the data buffer (which starts right after the header).
        public var range: Range<Int>
    }

    /// Entries in file order (sorted by data offset).
    public var entries: [Entry]
    public var metadata: [String: String]
    /// Header length N (the JSON, padding included).
    public var headerLength: Int
    /// Where the data buffer starts: 8 + N.
    public var dataStart: Int { 8 + headerLength }

    /// The reference refuses headers above this size.
    public static let maxHeaderLength = 100_000_000

    /// Parses the header at the start of `file` (the whole file, for the length checks).
    public static func parse(_ file: UnsafeRawBufferPointer, path: String) throws -> SafetensorsHeader {
        func bad(_ reason: String) -> FormatError { .malformed(path: path, reason: reason) }
        guard file.count >= 8 else {
            throw bad("file is \(file.count) bytes, too short for a safetensors header (8-byte length + JSON)")
        }
        var n64: UInt64 = 0
        withUnsafeMutableBytes(of: &n64) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: file[0..<8])) }
        n64 = UInt64(littleEndian: n64)
        guard n64 <= UInt64(maxHeaderLength) else {
            throw bad("header length \(n64) exceeds the 100,000,000-byte limit (not a safetensors file?)")
        }
        let n = Int(n64)
        guard 8 + n <= file.count else {
            throw bad("header length \(n) runs past the end of the file (\(file.count) bytes): truncated file?")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: file[8..<(8 + n)])
        guard String(validating: headerBytes, as: UTF8.self) != nil else {
            throw bad("header is not valid UTF-8")
        }
        let json: JSONValue
        do { json = try JSONParser.parse(headerBytes) } catch let e as JSONParseError {
            throw bad("header is not valid JSON: \(e.reason) at byte \(8 + e.offset)")
        }
        guard case let .object(members) = json else { throw bad("header is not a JSON object") }

        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        entries.reserveCapacity(members.count)
        var seen = Set<String>()
        seen.reserveCapacity(members.count)
        for (name, value) in members {
            guard seen.insert(name).inserted else {
                throw FormatError.badTensor(path: path, tensor: name, reason: "name appears twice in the header")
            }
            if name == "__metadata__" {
                guard case let .object(meta) = value else { throw bad("__metadata__ is not an object") }
                for (k, v) in meta {
                    guard case let .string(s) = v else {
                        throw bad("__metadata__ value for '\(k)' is not a string (safetensors metadata is string -> string)")
                    }
                    metadata[k] = s
                }
                continue
            }
            guard !name.utf8.contains(0) else {
                throw FormatError.badTensor(path: path, tensor: String(name.map { $0 == "\0" ? "\u{2400}" : $0 }),
                                            reason: "name contains a NUL byte")
            }
            entries.append(try entry(name, value, path: path))
        }

        // Offsets: sorted by begin, contiguous from 0, no gaps or overlaps, ending at EOF.
        entries.sort { ($0.range.lowerBound, $0.range.upperBound) < ($1.range.lowerBound, $1.range.upperBound) }
        var expected = 0
        for e in entries {
            guard e.range.lowerBound == expected else {
                let what = e.range.lowerBound > expected ? "a gap" : "an overlap"
                throw FormatError.badTensor(path: path, tensor: e.info.name,
                    reason: "data starts at \(e.range.lowerBound), expected \(expected): \(what) in the data buffer")
            }
            expected = e.range.upperBound
        }
        let (total, o) = (8 + n).addingReportingOverflow(expected)
        guard !o, total == file.count else {
            if !o && total < file.count {
                throw bad("\(file.count - total) trailing bytes after the last tensor (data ends at \(total), file is \(file.count) bytes)")
            }
            throw bad("tensor data runs past the end of the file (needs \(expected) data bytes, file has \(file.count - 8 - n)): truncated file?")
        }
        return SafetensorsHeader(entries: entries, metadata: metadata, headerLength: n)
    }

    private static func entry(_ name: String, _ value: JSONValue, path: String) throws -> Entry {
        func bad(_ reason: String) -> FormatError { .badTensor(path: path, tensor: name, reason: reason) }
        guard case .object = value else { throw bad("entry is not an object") }
        guard let dtypeName = value["dtype"]?.stringValue else { throw bad("missing or non-string 'dtype'") }
        guard let dtype = DType(rawValue: dtypeName) else { throw bad("unknown dtype '\(dtypeName)'") }
        guard let shapeValues = value["shape"]?.arrayValue else { throw bad("missing or non-array 'shape'") }
        var shape: [Int] = []
        shape.reserveCapacity(shapeValues.count)
        for d in shapeValues {
            guard let v = d.intValue, v >= 0 else { throw bad("shape \(JSONWriter.write(.array(shapeValues))) has a dimension that is not a non-negative 64-bit integer") }
            shape.append(v)
        }
        guard let offsets = value["data_offsets"]?.arrayValue, offsets.count == 2,
              let begin = offsets[0].intValue, let end = offsets[1].intValue, begin >= 0, end >= 0 else {
            throw bad("'data_offsets' must be two non-negative integers [begin, end]")
        }
        guard end >= begin else { throw bad("data_offsets [\(begin), \(end)] end before they begin") }
        guard let numel = elementCount(shape) else {
            throw bad("shape \(shape) has more elements than fit in 64 bits")
        }
        let (bitsTotal, o) = numel.multipliedReportingOverflow(by: dtype.bits)
        guard !o else { throw bad("shape \(shape) of \(dtype.rawValue) is too large to address") }
        guard bitsTotal % 8 == 0 else {
            throw bad("\(numel) elements of \(dtype.rawValue) are not a whole number of bytes")
        }
        guard end - begin == bitsTotal / 8 else {
            throw bad("shape \(shape) of \(dtype.rawValue) needs \(bitsTotal / 8) bytes but data_offsets [\(begin), \(end)] give \(end - begin)")
        }
        return Entry(info: TensorInfo(name: name, dtype: dtype, shape: shape), range: begin..<end)
    }
}
