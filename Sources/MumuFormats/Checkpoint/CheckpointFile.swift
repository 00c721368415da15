import MumuTensor

/// A PyTorch `.ckpt` / `.pt` / `.pth` file written by `torch.save` (the zip format of PyTorch 1.6
/// and later), read without executing any pickle code.
///
/// The zip holds `<archive>/data.pkl` (the pickled object tree), `<archive>/data/<key>` (one
/// entry per storage, stored uncompressed) and `<archive>/byteorder`. The pickle is read by the
/// restricted `Unpickler`; the tensors are then flattened into names: a top-level `state_dict`
/// (Lightning, original Stable Diffusion) or a lone `model` / `module` dict is unwrapped, nested
/// dicts join their keys with `.`, and every other value (ints, strings, None, optimizer state)
/// is skipped and listed in `skipped`.
///
/// Contiguous tensors are served zero-copy from the memory mapping; strided views (a saved
/// `.t()`) and misaligned ones are gathered into an owned buffer.
public final class CheckpointFile: TensorSource {
    /// Largest `data.pkl` accepted (64 MiB).
    public static let maxPickleSize = 64 << 20
    /// A value the file holds that is not served as a tensor.
    public struct SkippedValue: Sendable, Equatable {
        /// Its name, joined with `.` like a tensor's (`global_step`, `state_dict.version`).
        public let name: String
        /// What it is: `int 7`, `str 'v1'`, `dict of 2 entries`, ...
        public let summary: String
        public init(name: String, summary: String) { self.name = name; self.summary = summary }
    }

    public let path: String
    public let tensors: [TensorInfo]
    /// A `.ckpt` has no string metadata.
    public let metadata: [String: String] = [:]
    /// The non-tensor values, in file order (for `mumu inspect`).
    public let skipped: [SkippedValue]
    /// The zip's top folder (the file stem for `torch.save`, `archive` for many others).
    public let archiveName: String
    /// The keys unwrapped to reach the tensors (`state_dict`), joined with `.`; empty for a bare state dict.
    public let tensorRoot: String

    public var skippedEntries: [String] { skipped.map(\.name) }

    private let archive: ZipArchive
    private let slots: [String: Slot]

    /// Where one tensor's elements lie.
    private struct Slot: Sendable {
        var info: TensorInfo
        /// The storage entry's bytes in the file.
        var storage: Range<Int>
        /// Element offset into the storage.
        var offset: Int
        var strides: [Int]
        /// Row-major contiguous and aligned: served from the mapping as is.
        var zeroCopy: Bool
    }

    public init(path: String) throws {
        self.path = path
        let file = try MappedFile(path: path)
        try Self.rejectNonZip(file)
        let archive = try ZipArchive(file: file)
        self.archive = archive

        // Like torch's reader: the archive name is the first entry's top folder.
        guard let first = archive.entries.first, let slash = first.name.firstIndex(of: "/") else {
            throw FormatError.malformed(path: path, reason: "a zip, but not a torch checkpoint: the entries are not in an archive folder with a data.pkl")
        }
        let archiveName = String(first.name[..<slash])
        self.archiveName = archiveName
        guard let pickleEntry = archive.entry(named: "\(archiveName)/data.pkl") else {
            throw FormatError.malformed(path: path, reason: "a zip, but not a torch checkpoint: no '\(archiveName)/data.pkl' entry")
        }
        if let order = archive.entry(named: "\(archiveName)/byteorder") {
            let bytes = try archive.data(of: order)
            let text = String(decoding: bytes.prefix(16), as: UTF8.self)
            guard text == "little" else {
                throw FormatError.malformed(path: path, reason: "the checkpoint was saved with byte order '\(text)'; mumu reads only little-endian checkpoints")
            }
        }

        // The object tree of a real checkpoint pickles to well under a megabyte (SDXL's 2,515 tensors:
        // ~400 KB); tensor data lives outside it. The unpickler needs up to ~200 bytes of memory per
        // pickle byte on hostile input, so a cap bounds it.
        guard pickleEntry.uncompressedSize <= Self.maxPickleSize else {
            throw FormatError.malformed(path: path, reason: "'\(pickleEntry.name)' is \(pickleEntry.uncompressedSize) bytes, over the \(Self.maxPickleSize)-byte limit for a checkpoint's object tree")
        }
        let pickle = try Unpickler.unpickle(try archive.data(of: pickleEntry), path: path, entry: pickleEntry.name)
        var flat = Flattener(pickle: pickle, path: path)
        let (root, rootName) = try flat.selectRoot()
        try flat.walk(root, prefix: "", depth: 0)
        self.tensorRoot = rootName
        self.skipped = flat.skipped

        var storages: [String: Range<Int>] = [:]
        var slots: [String: Slot] = [:]
        var infos: [TensorInfo] = []
        infos.reserveCapacity(flat.tensors.count)
        for (name, tensor) in flat.tensors {
            let range: Range<Int>
            if let known = storages[tensor.storage.key] {
                range = known
            } else {
                let entryName = "\(archiveName)/data/\(tensor.storage.key)"
                guard let entry = archive.entry(named: entryName) else {
                    throw FormatError.badTensor(path: path, tensor: name, reason: "its storage entry '\(entryName)' is not in the archive")
                }
                range = try archive.dataRange(of: entry)
                storages[tensor.storage.key] = range
            }
            let slot = try Self.slot(name: name, tensor: tensor, storage: range, path: path)
            slots[name] = slot
            infos.append(slot.info)
        }
        self.slots = slots
        self.tensors = infos
    }

    public func tensor(_ name: String) throws -> TensorData {
        guard let slot = slots[name] else { throw FormatError.missingTensor(path: path, tensor: name) }
        let file = archive.file
        let elementSize = slot.info.dtype.byteSize ?? 1
        let byteCount = slot.info.byteCount
        if byteCount == 0 {
            return TensorData(info: slot.info, bytes: UnsafeRawBufferPointer(start: nil, count: 0), owner: file)
        }
        // Both checked in `slot(...)`: the viewed elements lie inside the storage entry.
        let start = slot.storage.lowerBound + slot.offset * elementSize
        if slot.zeroCopy {
            return TensorData(info: slot.info, bytes: file.bytes(start..<(start + byteCount)), owner: file)
        }
        let buffer = OwnedBuffer(byteCount: byteCount)
        let storage = file.bytes(slot.storage)
        StridedGather.copy(from: storage.baseAddress! + slot.offset * elementSize, shape: slot.info.shape,
                           strides: slot.strides, elementSize: elementSize, into: buffer.pointer)
        return TensorData(info: slot.info, bytes: buffer.rawBuffer, owner: buffer)
    }

    // MARK: - Checks

    /// The magic number that opens torch's pre-1.6 pickle format (`0x1950a86a20f9469cfc6c`, as LONG1).
    private static let legacyMagic: [UInt8] = [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

    private static func rejectNonZip(_ file: MappedFile) throws {
        guard file.size >= 4 else { return }
        let head = file.bytes(0..<min(file.size, legacyMagic.count))
        if head[0] == 0x50, head[1] == 0x4B { return }
        if Array(head) == legacyMagic {
            throw FormatError.malformed(path: file.path, reason: "legacy non-zip torch format (saved before PyTorch 1.6, or with _use_new_zipfile_serialization=False): re-save it with a recent torch.save, or convert it to .safetensors with a tool you trust")
        }
        if head[0] == 0x80 {
            throw FormatError.malformed(path: file.path, reason: "a bare pickle, not a torch checkpoint zip: mumu reads only what torch.save writes (PyTorch 1.6 and later); convert it to .safetensors with a tool you trust")
        }
    }

    /// Validates a tensor's view against its storage entry (overflow-checked).
    private static func slot(name: String, tensor t: PickleTensor, storage: Range<Int>, path: String) throws -> Slot {
        func bad(_ reason: String) -> FormatError { .badTensor(path: path, tensor: name, reason: reason) }
        guard let elementSize = t.dtype.byteSize else { throw bad("dtype \(t.dtype.rawValue) is not a whole number of bytes") }
        guard let count = elementCount(t.shape), t.dtype.byteCount(elements: count) != nil else {
            throw bad("shape \(t.shape) has too many elements")
        }
        guard count > 0 else {
            return Slot(info: TensorInfo(name: name, dtype: t.dtype, shape: t.shape), storage: storage,
                        offset: 0, strides: t.strides, zeroCopy: true)
        }
        // The last element viewed: offset + sum((size - 1) * stride), in elements; it must lie
        // inside the storage entry.
        var last = t.offset
        var contiguous = true
        var expected = 1
        for d in (0..<t.shape.count).reversed() {
            let (step, o1) = (t.shape[d] - 1).multipliedReportingOverflow(by: t.strides[d])
            let (sum, o2) = last.addingReportingOverflow(step)
            guard !o1, !o2 else { throw bad("its strides \(t.strides) overflow") }
            last = sum
            if t.shape[d] != 1, t.strides[d] != expected { contiguous = false }
            expected *= t.shape[d]
        }
        guard last < Int.max, case let (end, false) = (last + 1).multipliedReportingOverflow(by: elementSize),
              end <= storage.count
        else {
            throw bad("its view (offset \(t.offset), shape \(t.shape), strides \(t.strides)) reaches past the \(storage.count) bytes of storage '\(t.storage.key)'")
        }
        // Zero-copy only where the first element is aligned for its type (torch aligns entries to 64).
        let aligned = (storage.lowerBound + t.offset * elementSize) % elementSize == 0
        return Slot(info: TensorInfo(name: name, dtype: t.dtype, shape: t.shape), storage: storage,
                    offset: t.offset, strides: t.strides, zeroCopy: contiguous && aligned)
    }
}

/// Turns the unpickled object tree into named tensors and skipped values, within budgets that
/// keep a hostile pickle's shared references (a "billion laughs" of dicts) from exploding.
private struct Flattener {
    let pickle: Pickle
    let path: String
    var tensors: [(String, PickleTensor)] = []
    var skipped: [CheckpointFile.SkippedValue] = []
    private var names: Set<String> = []
    private var visits = 0
    private var nameBytes = 0
    private let maxVisits: Int
    private let maxNameBytes: Int
    private static let maxDepth = 32

    init(pickle: Pickle, path: String) {
        self.pickle = pickle
        self.path = path
        let size = pickle.sequences.count + pickle.dicts.reduce(0) { $0 + $1.count }
        maxVisits = 1024 + 2 * size
        maxNameBytes = 1 << 20 + 64 * maxVisits
    }

    /// The dict that holds the tensors: the top-level dict, its `state_dict`, or a lone
    /// `model` / `module` dict; the other top-level values are recorded as skipped.
    mutating func selectRoot() throws -> (PickleDict, String) {
        guard var current = pickle.dict(pickle.root) else {
            throw FormatError.malformed(path: path, reason: "the checkpoint's pickle holds a \(pickle.summary(pickle.root)), not a dict of tensors")
        }
        var path: [String] = []
        for _ in 0..<4 {
            var wrapper: String?
            if let inner = current["state_dict"], pickle.dict(inner) != nil {
                wrapper = "state_dict"
            } else if !current.entries.contains(where: { if case .tensor = $0.value { return true } else { return false } }) {
                wrapper = ["model", "module"].first { key in current[key].flatMap { pickle.dict($0) } != nil }
            }
            guard let key = wrapper, let inner = current[key].flatMap({ pickle.dict($0) }) else { break }
            let prefix = path.joined(separator: ".")
            for entry in current.entries {
                if case .string(key) = entry.key { continue }
                skipped.append(.init(name: join(prefix, keyName(entry.key)), summary: pickle.summary(entry.value)))
            }
            path.append(key)
            current = inner
        }
        return (current, path.joined(separator: "."))
    }

    mutating func walk(_ dict: PickleDict, prefix: String, depth: Int) throws {
        guard depth < Self.maxDepth else {
            throw FormatError.malformed(path: path, reason: "dicts nested more than \(Self.maxDepth) deep under '\(prefix)'")
        }
        for entry in dict.entries {
            visits += 1
            guard visits <= maxVisits else {
                throw FormatError.malformed(path: path, reason: "the pickle's shared references expand to more than \(maxVisits) values")
            }
            let name = join(prefix, keyName(entry.key))
            nameBytes += name.utf8.count
            guard nameBytes <= maxNameBytes else {
                throw FormatError.malformed(path: path, reason: "the tensor names add up to more than \(maxNameBytes) bytes")
            }
            switch entry.value {
            case .tensor(let t):
                if names.insert(name).inserted {
                    tensors.append((name, t))
                } else {
                    skipped.append(.init(name: name, summary: "tensor \(t.dtype.rawValue) \(t.shape), a duplicate name (the first one is served)"))
                }
            case .dict:
                if let inner = pickle.dict(entry.value) { try walk(inner, prefix: name, depth: depth + 1) }
            default:
                skipped.append(.init(name: name, summary: pickle.summary(entry.value)))
            }
        }
    }

    private func keyName(_ key: PickleValue) -> String {
        switch key {
        case .string(let s): return s
        case .int(let n): return String(n)
        default: return "<\(pickle.summary(key))>"
        }
    }

    private func join(_ prefix: String, _ key: String) -> String { prefix.isEmpty ? key : prefix + "." + key }
}

/// Copies a strided view into row-major order.
enum StridedGather {
    /// `source` points at the view's first element; all viewed elements must lie in the mapping
    /// (checked by the caller); `shape` has no zero dimension.
    static func copy(from source: UnsafeRawPointer, shape: [Int], strides: [Int], elementSize e: Int,
                     into destination: UnsafeMutableRawPointer) {
        guard let inner = shape.last, let innerStride = strides.last else {
            destination.copyMemory(from: source, byteCount: e) // rank 0
            return
        }
        let outerRank = shape.count - 1
        var index = [Int](repeating: 0, count: outerRank)
        var rowOffset = 0 // in elements
        var out = destination
        while true {
            let row = source + rowOffset * e
            if innerStride == 1 {
                out.copyMemory(from: row, byteCount: inner * e)
            } else {
                let step = innerStride * e
                switch e {
                case 1: for i in 0..<inner { out.storeBytes(of: row.load(fromByteOffset: i * step, as: UInt8.self), toByteOffset: i, as: UInt8.self) }
                case 2: for i in 0..<inner { out.storeBytes(of: row.loadUnaligned(fromByteOffset: i * step, as: UInt16.self), toByteOffset: i * 2, as: UInt16.self) }
                case 4: for i in 0..<inner { out.storeBytes(of: row.loadUnaligned(fromByteOffset: i * step, as: UInt32.self), toByteOffset: i * 4, as: UInt32.self) }
                case 8: for i in 0..<inner { out.storeBytes(of: row.loadUnaligned(fromByteOffset: i * step, as: UInt64.self), toByteOffset: i * 8, as: UInt64.self) }
                default: for i in 0..<inner { (out + i * e).copyMemory(from: row + i * step, byteCount: e) }
                }
            }
            out += inner * e
            // Next row: an odometer over the outer dimensions.
            var d = outerRank - 1
            while d >= 0 {
                index[d] += 1
                rowOffset += strides[d]
                if index[d] < shape[d] { break }
                rowOffset -= strides[d] * shape[d]
                index[d] = 0
                d -= 1
            }
            if d < 0 { return }
        }
    }
}
