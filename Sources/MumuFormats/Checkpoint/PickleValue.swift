import MumuTensor

/// A value the restricted unpickler built. Containers are indices into their `Pickle` document
/// (an arena), not nested values, so a hostile pickle cannot build structures whose release
/// recurses deeply, and cycles cost nothing.
public enum PickleValue: Sendable, Equatable {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer that does not fit in 64 bits; only its size in bytes is kept.
    case bigInt(byteCount: Int)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    /// Index into `Pickle.sequences`.
    case list(Int)
    /// Index into `Pickle.sequences`.
    case tuple(Int)
    /// A set or frozenset: index into `Pickle.sequences`.
    case set(Int)
    /// A dict or OrderedDict: index into `Pickle.dicts`.
    case dict(Int)
    /// An allow-listed global (a type or a function mumu interprets itself).
    case global(PickleGlobal)
    /// A torch storage named by a persistent id.
    case storage(PickleStorage)
    /// A tensor rebuilt by one of torch's `_rebuild_*` functions.
    case tensor(PickleTensor)
    /// An inert placeholder object (numpy dtype or array, a Lightning callback): index into `Pickle.objects`.
    case object(Int)
}

/// A storage as torch's persistent id names it: `('storage', type, key, location, numel)`.
public struct PickleStorage: Sendable, Equatable {
    /// The zip entry is `<archive>/data/<key>`.
    public var key: String
    /// Element type of a typed storage (`torch.FloatStorage`); nil for `torch.UntypedStorage`.
    public var dtype: DType?
    /// Where the tensor lived when saved (`cpu`, `cuda:0`); mumu reads everything on the CPU.
    public var location: String
    /// Element count (typed) or byte count (untyped) that torch recorded.
    public var count: Int
}

/// A tensor view of a storage: element offset, shape and strides in elements.
public struct PickleTensor: Sendable, Equatable {
    public var storage: PickleStorage
    public var dtype: DType
    public var offset: Int
    public var shape: [Int]
    public var strides: [Int]
}

/// A dict in insertion order. Setting an existing string or integer key replaces its value in
/// place, as Python does; other keys are only appended (mumu never looks them up).
public struct PickleDict: Sendable {
    public struct Entry: Sendable {
        public var key: PickleValue
        public var value: PickleValue
    }
    public private(set) var entries: [Entry] = []
    private var stringIndex: [String: Int] = [:]
    private var intIndex: [Int: Int] = [:]

    public init() {}

    public var count: Int { entries.count }

    public mutating func set(_ key: PickleValue, _ value: PickleValue) {
        switch key {
        case .string(let s):
            if let i = stringIndex[s] { entries[i].value = value; return }
            stringIndex[s] = entries.count
        case .int(let n):
            if let i = intIndex[n] { entries[i].value = value; return }
            intIndex[n] = entries.count
        default:
            break
        }
        entries.append(Entry(key: key, value: value))
    }

    public subscript(key: String) -> PickleValue? {
        guard let i = stringIndex[key] else { return nil }
        return entries[i].value
    }
}

/// An inert object: what an allow-listed class or function that mumu does not need would have
/// built. Its arguments and state are kept as data; nothing is ever called.
public struct PickleObject: Sendable {
    /// The allow-listed global that made it, e.g. `numpy.dtype`.
    public var type: PickleGlobal
    public var arguments: [PickleValue]
    /// The value a BUILD opcode gave it, if any.
    public var state: PickleValue?
}

/// The result of unpickling: the root value and the arena its containers live in.
public struct Pickle: Sendable {
    public let root: PickleValue
    public let sequences: [[PickleValue]]
    public let dicts: [PickleDict]
    public let objects: [PickleObject]

    /// The items of a list, tuple or set; nil for anything else.
    public func items(_ value: PickleValue) -> [PickleValue]? {
        switch value {
        case .list(let i), .tuple(let i), .set(let i): return sequences[i]
        default: return nil
        }
    }

    /// The dict a value is; nil for anything else.
    public func dict(_ value: PickleValue) -> PickleDict? {
        if case .dict(let i) = value { return dicts[i] }
        return nil
    }

    /// A short description for messages and reports: `int 7`, `str 'v1'`, `dict of 3 entries`.
    public func summary(_ value: PickleValue) -> String {
        switch value {
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let n): return "int \(n)"
        case .bigInt(let n): return "int of \(n) bytes"
        case .float(let x): return "float \(x)"
        case .string(let s):
            let shown = s.count > 60 ? String(s.prefix(57)) + "..." : s
            return "str '\(shown)'"
        case .bytes(let b): return "bytes (\(b.count))"
        case .list(let i): return "list of \(sequences[i].count)"
        case .tuple(let i): return "tuple of \(sequences[i].count)"
        case .set(let i): return "set of \(sequences[i].count)"
        case .dict(let i): return "dict of \(dicts[i].count) entries"
        case .global(let g): return "global \(g.qualifiedName)"
        case .storage(let s): return "storage '\(s.key)'"
        case .tensor(let t): return "tensor \(t.dtype.rawValue) \(t.shape)"
        case .object(let i): return "\(objects[i].type.qualifiedName) object"
        }
    }
}
