import MumuTensor

/// A restricted pickle machine (protocols 0 to 5) for the pickles inside torch checkpoints.
///
/// It never executes anything: GLOBAL, STACK_GLOBAL and INST resolve only the names in
/// `PickleGlobal` and refuse every other one with `FormatError.forbiddenGlobal` the moment it is
/// read; REDUCE, NEWOBJ, OBJ and BUILD "call" only those, interpreted by Swift code below.
///
/// Bounded by its input: every opcode consumes at least one byte and pushes at most one value,
/// so the stack, the memo and the containers are bounded by the pickle's length; the few
/// conversions that copy (set(list), torch.Size(list), OrderedDict(pairs), _codecs.encode)
/// and the hashing of string dict keys draw from a budget proportional to that length. There
/// are no loops over untrusted counts.
public struct Unpickler {
    /// The file the pickle came from, for errors.
    public let path: String
    /// The pickle's name inside the file (`archive/data.pkl`), for errors.
    public let entry: String

    private let data: UnsafeRawBufferPointer
    private var pos = 0
    /// Offset of the opcode being run, for errors.
    private var opcodeStart = 0
    private var stack: [PickleValue] = []
    /// Stack heights at each MARK.
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]
    private var sequences: [[PickleValue]] = []
    private var dicts: [PickleDict] = []
    private var objects: [PickleObject] = []
    /// Elements and bytes the conversions may still create.
    private var budget: Int

    /// Unpickles `data` (which must stay valid during the call).
    public static func unpickle(_ data: UnsafeRawBufferPointer, path: String, entry: String = "data.pkl") throws -> Pickle {
        var machine = Unpickler(data: data, path: path, entry: entry)
        return try machine.run()
    }

    /// Unpickles a byte array.
    public static func unpickle(_ bytes: [UInt8], path: String, entry: String = "data.pkl") throws -> Pickle {
        try bytes.withUnsafeBytes { try unpickle($0, path: path, entry: entry) }
    }

    private init(data: UnsafeRawBufferPointer, path: String, entry: String) {
        self.data = data
        self.path = path
        self.entry = entry
        self.budget = 65_536 + 4 * data.count
    }

    // MARK: - Errors

    private func malformed(_ reason: String) -> FormatError {
        let opcode = opcodeStart < data.count ? " (opcode 0x\(String(data[opcodeStart], radix: 16)))" : ""
        return .malformed(path: path, reason: "pickle '\(entry)' at byte \(opcodeStart)\(opcode): \(reason)")
    }

    // MARK: - The machine

    private mutating func run() throws -> Pickle {
        while pos < data.count {
            opcodeStart = pos
            let op = data[pos]
            pos += 1
            if op == 0x2E { // STOP
                let root = try pop()
                return Pickle(root: root, sequences: sequences, dicts: dicts, objects: objects)
            }
            try step(op)
        }
        opcodeStart = data.count
        throw malformed("the pickle ends without a STOP opcode (truncated or not a pickle)")
    }

    private mutating func step(_ op: UInt8) throws {
        switch op {
        // Framing and protocol.
        case 0x80: // PROTO
            let version = try readByte()
            guard version <= 5 else { throw malformed("pickle protocol \(version) is not supported (0 to 5 are)") }
        case 0x95: // FRAME: the frame must lie in the data; its contents are read as usual.
            let length = try readU64()
            guard length <= UInt64(data.count - pos) else { throw malformed("a frame of \(length) bytes runs past the end of the pickle") }

        // Stack manipulation.
        case 0x28: marks.append(stack.count) // MARK
        case 0x30: // POP: the top item, or the mark when the top segment is empty
            if stack.count > (marks.last ?? 0) { stack.removeLast() } else { _ = try popMark() }
        case 0x31: _ = try popMark() // POP_MARK
        case 0x32: push(try top()) // DUP

        // Constants and numbers.
        case 0x4E: push(.none) // NONE
        case 0x88: push(.bool(true)) // NEWTRUE
        case 0x89: push(.bool(false)) // NEWFALSE
        case 0x4A: // BININT
            let b = try read(4)
            push(.int(Int(Int32(bitPattern: UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24))))
        case 0x4B: push(.int(Int(try readByte()))) // BININT1
        case 0x4D: // BININT2
            let b = try read(2)
            push(.int(Int(b[0]) | Int(b[1]) << 8))
        case 0x8A: // LONG1
            let n = Int(try readByte())
            push(decodeLong(try read(n)))
        case 0x8B: // LONG4
            let n = try readI32()
            guard n >= 0 else { throw malformed("LONG4 with a negative length") }
            push(decodeLong(try read(Int(n))))
        case 0x47: // BINFLOAT (big-endian)
            let b = try read(8)
            var bits: UInt64 = 0
            for i in 0..<8 { bits = bits << 8 | UInt64(b[i]) }
            push(.float(Double(bitPattern: bits)))
        case 0x49: // INT (text; 01 and 00 are True and False)
            let line = try readLine()
            if line == "01" { push(.bool(true)) } else if line == "00" { push(.bool(false)) } else { push(try parseInt(line)) }
        case 0x4C: // LONG (text, trailing L)
            var line = try readLine()
            if line.hasSuffix("L") { line.removeLast() }
            push(try parseInt(line))
        case 0x46: // FLOAT (text)
            let line = try readLine()
            guard let x = Double(line.trimmingSpaces) else { throw malformed("FLOAT with an unreadable value") }
            push(.float(x))

        // Strings and bytes.
        case 0x58: push(.string(utf8(try read(try readLength32())))) // BINUNICODE
        case 0x8C: push(.string(utf8(try read(Int(try readByte()))))) // SHORT_BINUNICODE
        case 0x8D: push(.string(utf8(try read(try readLength64())))) // BINUNICODE8
        case 0x54: // BINSTRING (signed length)
            let n = try readI32()
            guard n >= 0 else { throw malformed("BINSTRING with a negative length") }
            push(.string(latin1(try read(Int(n)))))
        case 0x55: push(.string(latin1(try read(Int(try readByte()))))) // SHORT_BINSTRING
        case 0x42: push(.bytes(Array(try read(try readLength32())))) // BINBYTES
        case 0x43: push(.bytes(Array(try read(Int(try readByte()))))) // SHORT_BINBYTES
        case 0x8E, 0x96: push(.bytes(Array(try read(try readLength64())))) // BINBYTES8, BYTEARRAY8
        case 0x53: push(.string(try decodeQuoted(try readLine()))) // STRING (text, quoted)
        case 0x56: push(.string(decodeRawUnicodeEscape(try readLineBytes()))) // UNICODE (text)
        case 0x97: throw malformed("out-of-band buffers (NEXT_BUFFER) are not supported")
        case 0x98: _ = try top() // READONLY_BUFFER: no effect on data

        // Containers.
        case 0x7D: push(newDict(PickleDict())) // EMPTY_DICT
        case 0x5D: push(newSequence([], .list)) // EMPTY_LIST
        case 0x29: push(newSequence([], .tuple)) // EMPTY_TUPLE
        case 0x8F: push(newSequence([], .set)) // EMPTY_SET
        case 0x64: // DICT
            let items = try popMark()
            guard items.count % 2 == 0 else { throw malformed("DICT with an odd number of items") }
            var dict = PickleDict()
            for i in stride(from: 0, to: items.count, by: 2) {
                try spend(keyCost(items[i]), "DICT")
                dict.set(items[i], items[i + 1])
            }
            push(newDict(dict))
        case 0x6C: push(newSequence(try popMark(), .list)) // LIST
        case 0x74: push(newSequence(try popMark(), .tuple)) // TUPLE
        case 0x91: push(newSequence(try popMark(), .set)) // FROZENSET
        case 0x85: // TUPLE1
            let a = try pop()
            push(newSequence([a], .tuple))
        case 0x86: // TUPLE2
            let b = try pop(), a = try pop()
            push(newSequence([a, b], .tuple))
        case 0x87: // TUPLE3
            let c = try pop(), b = try pop(), a = try pop()
            push(newSequence([a, b, c], .tuple))
        case 0x61: // APPEND
            let value = try pop()
            try appendItems([value], to: try top(), kind: "APPEND", wants: .list)
        case 0x65: // APPENDS
            let items = try popMark()
            try appendItems(items, to: try top(), kind: "APPENDS", wants: .list)
        case 0x90: // ADDITEMS
            let items = try popMark()
            try appendItems(items, to: try top(), kind: "ADDITEMS", wants: .set)
        case 0x73: // SETITEM
            let value = try pop(), key = try pop()
            try setItems([key, value], in: try top())
        case 0x75: // SETITEMS
            let items = try popMark()
            guard items.count % 2 == 0 else { throw malformed("SETITEMS with an odd number of items") }
            try setItems(items, in: try top())

        // Memo.
        case 0x71: try put(Int(try readByte())) // BINPUT
        case 0x72: try put(Int(try readU32())) // LONG_BINPUT
        case 0x70: try put(try parseIndex(try readLine())) // PUT
        case 0x94: try put(memo.count) // MEMOIZE
        case 0x68: try get(Int(try readByte())) // BINGET
        case 0x6A: try get(Int(try readU32())) // LONG_BINGET
        case 0x67: try get(try parseIndex(try readLine())) // GET

        // Globals, calls and objects.
        case 0x63: // GLOBAL
            let module = try readLine(), name = try readLine()
            push(.global(try resolve(module: module, name: name)))
        case 0x93: // STACK_GLOBAL
            let name = try pop(), module = try pop()
            guard case .string(let n) = name, case .string(let m) = module else {
                throw malformed("STACK_GLOBAL needs two strings")
            }
            push(.global(try resolve(module: m, name: n)))
        case 0x69: // INST: module and name on lines, arguments since the mark
            let module = try readLine(), name = try readLine()
            let global = try resolve(module: module, name: name)
            let args = try popMark()
            push(try call(global, args))
        case 0x6F: // OBJ: class and arguments since the mark
            let items = try popMark()
            guard let cls = items.first else { throw malformed("OBJ without a class") }
            push(try call(try callable(cls), Array(items.dropFirst())))
        case 0x52: // REDUCE
            let args = try pop(), function = try pop()
            push(try call(try callable(function), try arguments(args)))
        case 0x81: // NEWOBJ
            let args = try pop(), cls = try pop()
            push(try call(try callable(cls), try arguments(args)))
        case 0x92: // NEWOBJ_EX
            let kwargs = try pop(), args = try pop(), cls = try pop()
            guard case .dict(let k) = kwargs, dicts[k].count == 0 else {
                throw malformed("NEWOBJ_EX with keyword arguments is not supported")
            }
            push(try call(try callable(cls), try arguments(args)))
        case 0x62: // BUILD
            let state = try pop()
            try build(try top(), state: state)
        case 0x51: // BINPERSID
            push(try persistentLoad(try pop()))
        case 0x50: // PERSID
            _ = try readLine()
            throw malformed("text persistent ids (PERSID) are not used by torch checkpoints")
        case 0x82, 0x83, 0x84: // EXT1, EXT2, EXT4
            throw malformed("extension-registry codes (EXT1/2/4) are not supported: they name globals mumu cannot check")
        default:
            throw malformed("unknown opcode 0x\(String(op, radix: 16))")
        }
    }

    // MARK: - Stack

    private mutating func push(_ value: PickleValue) { stack.append(value) }

    private mutating func pop() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0) else { throw malformed("stack underflow") }
        return stack.removeLast()
    }

    private func top() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0) else { throw malformed("stack underflow") }
        return stack[stack.count - 1]
    }

    /// The items pushed since the last MARK, removing them and the mark.
    private mutating func popMark() throws -> [PickleValue] {
        guard let mark = marks.popLast() else { throw malformed("no MARK on the stack") }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    // MARK: - Memo

    private mutating func put(_ index: Int) throws {
        memo[index] = try top()
    }

    private mutating func get(_ index: Int) throws {
        guard let value = memo[index] else { throw malformed("memo entry \(index) is read before it is written") }
        push(value)
    }

    // MARK: - Containers

    private enum SequenceKind { case list, tuple, set }

    private mutating func newSequence(_ items: [PickleValue], _ kind: SequenceKind) -> PickleValue {
        sequences.append(items)
        let i = sequences.count - 1
        switch kind {
        case .list: return .list(i)
        case .tuple: return .tuple(i)
        case .set: return .set(i)
        }
    }

    private mutating func newDict(_ dict: PickleDict) -> PickleValue {
        dicts.append(dict)
        return .dict(dicts.count - 1)
    }

    private mutating func appendItems(_ items: [PickleValue], to target: PickleValue, kind: String, wants: SequenceKind) throws {
        switch (target, wants) {
        case (.list(let i), .list), (.set(let i), .set):
            sequences[i].append(contentsOf: items)
        default:
            throw malformed("\(kind) on a \(pickle.summary(target)), not a \(wants == .list ? "list" : "set")")
        }
    }

    private mutating func setItems(_ items: [PickleValue], in target: PickleValue) throws {
        guard case .dict(let d) = target else { throw malformed("SETITEM on a \(pickle.summary(target)), not a dict") }
        for i in stride(from: 0, to: items.count, by: 2) {
            try spend(keyCost(items[i]), "SETITEM")
            dicts[d].set(items[i], items[i + 1])
        }
    }

    /// What setting `key` in a dict costs: a string key is hashed whole, and a memoized one can
    /// be used again and again for two bytes of pickle each, so its length is charged to the budget.
    private func keyCost(_ key: PickleValue) -> Int {
        if case .string(let s) = key { return s.utf8.count }
        return 0
    }

    /// The arena so far, for summaries in messages.
    private var pickle: Pickle { Pickle(root: .none, sequences: sequences, dicts: dicts, objects: objects) }

    private mutating func spend(_ amount: Int, _ what: String) throws {
        guard amount <= budget else {
            throw malformed("\(what) builds more data than a pickle of \(data.count) bytes can hold (a decompression bomb?)")
        }
        budget -= amount
    }

    // MARK: - Globals

    private func resolve(module: String, name: String) throws -> PickleGlobal {
        if let global = PickleGlobal(module: module, name: name) { return global }
        let shown = "\(module).\(name)"
        throw FormatError.forbiddenGlobal(path: path, global: shown.count > 200 ? String(shown.prefix(200)) + "..." : shown)
    }

    private func callable(_ value: PickleValue) throws -> PickleGlobal {
        guard case .global(let g) = value else { throw malformed("a call on a \(pickle.summary(value)), which is not an allowed global") }
        return g
    }

    private func arguments(_ value: PickleValue) throws -> [PickleValue] {
        guard case .tuple(let i) = value else { throw malformed("call arguments are a \(pickle.summary(value)), not a tuple") }
        return sequences[i]
    }

    /// What calling an allow-listed global with `args` would have built, computed here.
    private mutating func call(_ global: PickleGlobal, _ args: [PickleValue]) throws -> PickleValue {
        switch global {
        case .orderedDict:
            var dict = PickleDict()
            if let source = args.first {
                if case .dict(let d) = source {
                    try spend(dicts[d].count, "OrderedDict(dict)")
                    for e in dicts[d].entries {
                        try spend(keyCost(e.key), "OrderedDict(dict)")
                        dict.set(e.key, e.value)
                    }
                } else if let pairs = pickle.items(source) {
                    try spend(pairs.count, "OrderedDict(pairs)")
                    for pair in pairs {
                        guard let kv = pickle.items(pair), kv.count == 2 else { throw malformed("OrderedDict with an item that is not a pair") }
                        try spend(keyCost(kv[0]), "OrderedDict(pairs)")
                        dict.set(kv[0], kv[1])
                    }
                } else {
                    throw malformed("OrderedDict of a \(pickle.summary(source))")
                }
            }
            return newDict(dict)
        case .set, .frozenset, .torchSize:
            let kind: SequenceKind = global == .torchSize ? .tuple : .set
            guard let source = args.first else { return newSequence([], kind) }
            guard let items = pickle.items(source) else { throw malformed("\(global.qualifiedName) of a \(pickle.summary(source))") }
            try spend(items.count, global.qualifiedName)
            return newSequence(items, kind)
        case .codecsEncode:
            return try encode(args)
        case .rebuildTensor, .rebuildTensorV2, .rebuildTensorV3:
            return .tensor(try rebuildTensor(global, args))
        case .rebuildParameter, .rebuildParameterWithState:
            guard let data = args.first, case .tensor = data else { throw malformed("\(global.qualifiedName) without a tensor") }
            return data
        case .rebuildFromTypeV2:
            guard args.count >= 3, case .global(let function) = args[0], case .global(let type) = args[1],
                  type == .tensorType || type == .parameterType
            else { throw malformed("_rebuild_from_type_v2 with arguments other than (rebuild function, tensor type, args, state)") }
            switch function {
            case .rebuildTensor, .rebuildTensorV2, .rebuildTensorV3, .rebuildParameter, .rebuildParameterWithState:
                return try call(function, try arguments(args[2]))
            default:
                throw malformed("_rebuild_from_type_v2 with \(function.qualifiedName), which is not a tensor rebuild function")
            }
        case .numpyScalar:
            return try numpyScalar(args)
        case .numpyDType, .numpyReconstruct, .inert:
            objects.append(PickleObject(type: global, arguments: args, state: nil))
            return .object(objects.count - 1)
        case .tensorType, .parameterType, .typedStorage, .untypedStorage, .dtype:
            throw malformed("\(global.qualifiedName) is called; torch checkpoints never do that")
        }
    }

    private mutating func build(_ target: PickleValue, state: PickleValue) throws {
        switch target {
        case .object(let i): objects[i].state = state
        // An OrderedDict's state holds attributes (torch's `_metadata`), not items; a tensor's
        // state (from _rebuild_from_type_v2 paths) holds Python attributes. Neither is data.
        case .dict, .tensor: break
        default: throw malformed("BUILD on a \(pickle.summary(target))")
        }
    }

    // MARK: - Torch

    /// `('storage', storage_type, key, location, numel)` -> a storage reference.
    private func persistentLoad(_ pid: PickleValue) throws -> PickleValue {
        guard let items = pickle.items(pid), items.count >= 5, case .string("storage") = items[0] else {
            throw malformed("a persistent id that is not ('storage', type, key, location, numel)")
        }
        let dtype: DType?
        switch items[1] {
        case .global(.typedStorage(let d)): dtype = d
        case .global(.untypedStorage): dtype = nil
        default: throw malformed("a storage of type \(pickle.summary(items[1]))")
        }
        let key: String
        switch items[2] {
        case .string(let s): key = s
        case .int(let n): key = String(n)
        default: throw malformed("a storage key that is a \(pickle.summary(items[2]))")
        }
        guard case .string(let location) = items[3] else { throw malformed("a storage location that is not a string") }
        guard case .int(let count) = items[4], count >= 0 else { throw malformed("a storage size that is not a non-negative int") }
        return .storage(PickleStorage(key: key, dtype: dtype, location: location, count: count))
    }

    /// `_rebuild_tensor(storage, offset, size, stride)`, `_v2(..., requires_grad, hooks[, metadata])`,
    /// `_v3(..., requires_grad, hooks, dtype[, metadata])`.
    private func rebuildTensor(_ function: PickleGlobal, _ args: [PickleValue]) throws -> PickleTensor {
        let name = function.qualifiedName
        guard args.count >= 4, case .storage(let storage) = args[0] else { throw malformed("\(name) without (storage, offset, size, stride)") }
        guard case .int(let offset) = args[1], offset >= 0 else { throw malformed("\(name) with a storage offset that is not a non-negative int") }
        let shape = try intTuple(args[2], "\(name) size")
        let strides = try intTuple(args[3], "\(name) stride")
        guard shape.count == strides.count else { throw malformed("\(name) with \(shape.count) sizes but \(strides.count) strides") }
        var dtype = storage.dtype
        if function == .rebuildTensorV3 {
            guard args.count >= 7, case .global(.dtype(let d)) = args[6] else { throw malformed("\(name) without a dtype") }
            if let typed = storage.dtype, typed != d { throw malformed("\(name): dtype \(d.rawValue) on a \(typed.rawValue) storage") }
            dtype = d
        }
        guard let dtype else { throw malformed("\(name) on an untyped storage without a dtype") }
        return PickleTensor(storage: storage, dtype: dtype, offset: offset, shape: shape, strides: strides)
    }

    /// A tuple (or list) of non-negative ints: a shape or strides (rank at most 64).
    private func intTuple(_ value: PickleValue, _ what: String) throws -> [Int] {
        guard let items = pickle.items(value) else { throw malformed("\(what) is a \(pickle.summary(value)), not a tuple") }
        guard items.count <= 64 else { throw malformed("\(what) has \(items.count) dimensions (at most 64)") }
        return try items.map {
            guard case .int(let n) = $0, n >= 0 else { throw malformed("\(what) holds a \(pickle.summary($0)), not a non-negative int") }
            return n
        }
    }

    // MARK: - Data conversions

    /// `_codecs.encode(str, encoding)`: protocol 2's spelling of `bytes`.
    private mutating func encode(_ args: [PickleValue]) throws -> PickleValue {
        guard let first = args.first, case .string(let text) = first else { throw malformed("_codecs.encode without a string") }
        var encoding = "utf-8"
        if args.count > 1 {
            guard case .string(let e) = args[1] else { throw malformed("_codecs.encode with an encoding that is not a string") }
            encoding = e.lowercased()
        }
        switch encoding {
        case "latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1":
            try spend(text.unicodeScalars.count, "_codecs.encode")
            var bytes: [UInt8] = []
            for scalar in text.unicodeScalars {
                guard scalar.value <= 0xFF else { throw malformed("_codecs.encode: a character outside latin-1") }
                bytes.append(UInt8(scalar.value))
            }
            return .bytes(bytes)
        case "utf-8", "utf8":
            try spend(text.utf8.count, "_codecs.encode")
            return .bytes(Array(text.utf8))
        default:
            throw malformed("_codecs.encode with encoding '\(encoding.prefix(40))' (only latin-1 and utf-8 are read)")
        }
    }

    /// `numpy.core.multiarray.scalar(dtype, bytes)` for the integer, float and bool dtypes; any
    /// other is kept as an inert object.
    private mutating func numpyScalar(_ args: [PickleValue]) throws -> PickleValue {
        guard args.count >= 2, case .object(let d) = args[0], objects[d].type == .numpyDType,
              case .string(let descrString) = objects[d].arguments.first ?? .none
        else {
            objects.append(PickleObject(type: .numpyScalar, arguments: args, state: nil))
            return .object(objects.count - 1)
        }
        // A Substring, so dropping the byte-order character copies nothing; and at most 9 bytes
        // of the data (a scalar has at most 8): a memoized long string may be passed again and again.
        var descr = Substring(descrString)
        let raw: [UInt8]
        switch args[1] {
        case .bytes(let b): raw = Array(b.prefix(9))
        case .string(let s): raw = s.unicodeScalars.prefix(9).map { UInt8(truncatingIfNeeded: $0.value) }
        default: throw malformed("numpy scalar data is a \(pickle.summary(args[1]))")
        }
        var bigEndian = false
        if case .tuple(let t)? = objects[d].state, sequences[t].count > 1, case .string(let order) = sequences[t][1] {
            bigEndian = order == ">"
        }
        if descr.hasPrefix("<") || descr.hasPrefix(">") || descr.hasPrefix("=") || descr.hasPrefix("|") {
            bigEndian = descr.hasPrefix(">")
            descr.removeFirst()
        }
        let size = raw.count
        let bits: UInt64 = (bigEndian ? raw : raw.reversed()).reduce(0) { $0 << 8 | UInt64($1) }
        switch (descr, size) {
        case ("b1", 1), ("?", 1): return .bool(bits != 0)
        case ("u1", 1), ("u2", 2), ("u4", 4): return .int(Int(bits))
        case ("u8", 8): return bits <= UInt64(Int.max) ? .int(Int(bits)) : .bigInt(byteCount: 8)
        case ("i1", 1): return .int(Int(Int8(truncatingIfNeeded: bits)))
        case ("i2", 2): return .int(Int(Int16(truncatingIfNeeded: bits)))
        case ("i4", 4): return .int(Int(Int32(truncatingIfNeeded: bits)))
        case ("i8", 8): return .int(Int(Int64(bitPattern: bits)))
        case ("f4", 4): return .float(Double(Float(bitPattern: UInt32(truncatingIfNeeded: bits))))
        case ("f8", 8): return .float(Double(bitPattern: bits))
        default:
            objects.append(PickleObject(type: .numpyScalar, arguments: args, state: nil))
            return .object(objects.count - 1)
        }
    }

    // MARK: - Reading

    private mutating func read(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, count <= data.count - pos else {
            throw malformed("\(count) bytes announced but only \(data.count - pos) left (truncated pickle)")
        }
        defer { pos += count }
        return UnsafeRawBufferPointer(rebasing: data[pos..<(pos + count)])
    }

    private mutating func readByte() throws -> UInt8 { try read(1)[0] }

    private mutating func readU32() throws -> UInt32 {
        let b = try read(4)
        return UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
    }

    private mutating func readI32() throws -> Int32 { Int32(bitPattern: try readU32()) }

    private mutating func readU64() throws -> UInt64 {
        let b = try read(8)
        var v: UInt64 = 0
        for i in (0..<8).reversed() { v = v << 8 | UInt64(b[i]) }
        return v
    }

    /// A 32-bit length; `read` checks it against what is left.
    private mutating func readLength32() throws -> Int { Int(try readU32()) }

    /// A 64-bit length, which must fit in what is left.
    private mutating func readLength64() throws -> Int {
        let n = try readU64()
        guard n <= UInt64(data.count - pos) else { throw malformed("\(n) bytes announced but only \(data.count - pos) left (truncated pickle)") }
        return Int(n)
    }

    /// The bytes up to the next newline (which is consumed).
    private mutating func readLineBytes() throws -> UnsafeRawBufferPointer {
        var end = pos
        while end < data.count, data[end] != 0x0A { end += 1 }
        guard end < data.count else { throw malformed("a text line without its newline (truncated pickle)") }
        let line = UnsafeRawBufferPointer(rebasing: data[pos..<end])
        pos = end + 1
        return line
    }

    private mutating func readLine() throws -> String { utf8(try readLineBytes()) }

    private func utf8(_ bytes: UnsafeRawBufferPointer) -> String { String(decoding: bytes, as: UTF8.self) }

    private func latin1(_ bytes: UnsafeRawBufferPointer) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(Unicode.Scalar(b)) }
        return String(s)
    }

    private func parseInt(_ line: String) throws -> PickleValue {
        let text = line.trimmingSpaces
        if let n = Int(text) { return .int(n) }
        let digits = text.hasPrefix("-") || text.hasPrefix("+") ? text.dropFirst() : Substring(text)
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { throw malformed("an integer that does not parse") }
        return .bigInt(byteCount: digits.count / 2 + 1)
    }

    private func parseIndex(_ line: String) throws -> Int {
        guard let n = Int(line.trimmingSpaces), n >= 0 else { throw malformed("a memo index that does not parse") }
        return n
    }

    /// Little-endian two's complement of any length; more than 64 bits gives `.bigInt`.
    private func decodeLong(_ bytes: UnsafeRawBufferPointer) -> PickleValue {
        let n = bytes.count
        if n == 0 { return .int(0) }
        let negative = bytes[n - 1] & 0x80 != 0
        // Bytes beyond the eighth must only repeat the sign for the value to fit.
        if n > 8 {
            let fill: UInt8 = negative ? 0xFF : 0x00
            for i in 8..<n where bytes[i] != fill { return .bigInt(byteCount: n) }
            if (bytes[7] & 0x80 != 0) != negative { return .bigInt(byteCount: n) }
        }
        var v: UInt64 = negative ? ~0 : 0
        // Starting from all ones when negative sign-extends the shorter encodings.
        for i in (0..<min(n, 8)).reversed() { v = v << 8 | UInt64(bytes[i]) }
        return .int(Int(Int64(bitPattern: v)))
    }

    /// Python 2's quoted string repr ('...' or "..."), with the common backslash escapes.
    private func decodeQuoted(_ line: String) throws -> String {
        let scalars = Array(line.unicodeScalars)
        guard scalars.count >= 2, let q = scalars.first, q == "'" || q == "\"", scalars.last == q else {
            throw malformed("STRING without matching quotes")
        }
        var out = String.UnicodeScalarView()
        var i = 1
        let end = scalars.count - 1
        while i < end {
            let c = scalars[i]
            i += 1
            guard c == "\\", i < end else { out.append(c); continue }
            let e = scalars[i]
            i += 1
            switch e {
            case "n": out.append("\n")
            case "t": out.append("\t")
            case "r": out.append("\r")
            case "x":
                guard i + 2 <= end, let v = UInt8(String(String.UnicodeScalarView(scalars[i..<(i + 2)])), radix: 16) else {
                    throw malformed("STRING with a bad \\x escape")
                }
                out.append(Unicode.Scalar(v))
                i += 2
            default: out.append(e)
            }
        }
        return String(out)
    }

    /// Python's raw-unicode-escape: latin-1 bytes, except `\uXXXX` and `\UXXXXXXXX`.
    private func decodeRawUnicodeEscape(_ bytes: UnsafeRawBufferPointer) -> String {
        var out = String.UnicodeScalarView()
        var i = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if b == 0x5C, i + 1 < n, bytes[i + 1] == 0x75 || bytes[i + 1] == 0x55 {
                let digits = bytes[i + 1] == 0x75 ? 4 : 8
                if i + 2 + digits <= n {
                    var v: UInt32 = 0
                    var ok = true
                    for k in 0..<digits {
                        guard let d = hexValue(bytes[i + 2 + k]) else { ok = false; break }
                        v = v << 4 | d
                    }
                    if ok, let scalar = Unicode.Scalar(v) {
                        out.append(scalar)
                        i += 2 + digits
                        continue
                    }
                }
            }
            out.append(Unicode.Scalar(b))
            i += 1
        }
        return String(out)
    }

    private func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case 0x30...0x39: return UInt32(c - 0x30)
        case 0x41...0x46: return UInt32(c - 0x41 + 10)
        case 0x61...0x66: return UInt32(c - 0x61 + 10)
        default: return nil
        }
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\r" || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\r" || l == "\t" { s.removeLast() }
        return String(s)
    }
}

/// libFuzzer entry point: runs the unpickler on arbitrary bytes and discards the result and
/// any error. Build with `-sanitize=fuzzer` and call it from `LLVMFuzzerTestOneInput`.
public func fuzzUnpickle(_ data: UnsafeRawBufferPointer) {
    _ = try? Unpickler.unpickle(data, path: "<fuzz>", entry: "input")
}
