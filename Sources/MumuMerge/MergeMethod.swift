import MumuFormats
import MumuTensor

/// A part of one tensor that a kernel sees at a time: whole rows (the first dimension), in f32.
public struct Chunk: Sendable {
    /// The output key and its shape.
    public var key: String
    public var shape: [Int]
    /// Elements [start, start + count) of the flattened tensor.
    public var start: Int
    public var count: Int
    /// Rows of the first dimension this chunk covers (elements for 0-d and 1-D tensors).
    public var rows: Range<Int>
    /// Elements of the whole tensor.
    public var total: Int
}

/// The per-key computation of one method. The executor feeds it the inputs chunk by chunk: first
/// `reductionPasses` passes over every chunk (for methods that need whole-tensor statistics: norms,
/// dot products, top-k thresholds), then one pass that produces the output. Chunks of one key come in
/// order on one thread, so statistics are the same whatever the chunking or thread count.
public protocol MergeKernel: AnyObject {
    var reductionPasses: Int { get }
    /// Chunks must start and end on multiples of this many elements (e.g. a row of the last dimension
    /// for per-row statistics computed inside `map`); 1 when any whole-row chunking will do.
    var granularity: Int { get }
    func reduce(pass: Int, inputs: [UnsafePointer<Float>], chunk: Chunk)
    func endPass(_ pass: Int)
    func map(inputs: [UnsafePointer<Float>], output: UnsafeMutablePointer<Float>, chunk: Chunk) throws
}

extension MergeKernel {
    public var reductionPasses: Int { 0 }
    public var granularity: Int { 1 }
    public func reduce(pass: Int, inputs: [UnsafePointer<Float>], chunk: Chunk) {}
    public func endPass(_ pass: Int) {}
}

/// What a method does with one key: compute it, or hand one input through unchanged (alpha 0, a LoRA
/// that does not touch the key), in which case the other inputs are not even read.
public enum KernelChoice {
    case kernel(MergeKernel)
    case passthrough(Int)
}

/// A kernel whose output element i depends only on the inputs' element i.
public final class ElementwiseKernel: MergeKernel {
    let body: ([UnsafePointer<Float>], UnsafeMutablePointer<Float>, Int) -> Void
    public init(_ body: @escaping ([UnsafePointer<Float>], UnsafeMutablePointer<Float>, Int) -> Void) { self.body = body }
    public func map(inputs: [UnsafePointer<Float>], output: UnsafeMutablePointer<Float>, chunk: Chunk) throws {
        body(inputs, output, chunk.count)
    }
}

/// What a parameter accepts, as recipes are checked against it.
public struct ParameterSpec: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A number, settable per block and per key regex.
        case number(default: Double, range: ClosedRange<Double>?)
        /// A whole number, one value for the whole merge.
        case integer(default: Int, range: ClosedRange<Int>?)
        case bool(default: Bool)
        case choice([String], default: String)
        /// A file path, relative to the recipe; required.
        case path
    }
    public var name: String
    public var kind: Kind
    public var help: String
    public init(_ name: String, _ kind: Kind, _ help: String) { self.name = name; self.kind = kind; self.help = help }
}

/// One parameter's value for one key: a number (a block map already resolved), a whole number, a
/// bool, a choice or a path.
public enum ArgumentValue: Sendable, Equatable {
    case number(Double)
    case integer(Int)
    case bool(Bool)
    case text(String)
}

/// A Swift type a parameter's value is read as.
public protocol ParameterValue: Sendable {
    init?(argument: ArgumentValue)
}
extension Double: ParameterValue {
    public init?(argument: ArgumentValue) { guard case .number(let d) = argument else { return nil }; self = d }
}
extension Float: ParameterValue {
    public init?(argument: ArgumentValue) { guard case .number(let d) = argument else { return nil }; self = Float(d) }
}
extension Int: ParameterValue {
    public init?(argument: ArgumentValue) { guard case .integer(let i) = argument else { return nil }; self = i }
}
extension Bool: ParameterValue {
    public init?(argument: ArgumentValue) { guard case .bool(let b) = argument else { return nil }; self = b }
}
extension String: ParameterValue {
    public init?(argument: ArgumentValue) { guard case .text(let s) = argument else { return nil }; self = s }
}
/// A parameter with a fixed set of values: an enum whose raw values are what recipes write.
public protocol ParameterChoice: ParameterValue, RawRepresentable, CaseIterable where RawValue == String {}
extension ParameterChoice {
    public init?(argument: ArgumentValue) { guard case .text(let s) = argument else { return nil }; self.init(rawValue: s) }
}

/// Any parameter declaration, as a method's definition lists them.
public protocol AnyParameter: Sendable {
    var spec: ParameterSpec { get }
}

/// A method's parameter, declared once: the declaration is listed in the method's definition (which is
/// what recipes are checked against) and is the only way the kernel reads the value (`try args[alpha]`).
/// Reading a parameter the method does not list throws `MergeError.undeclaredParameter`.
public struct Parameter<Value: ParameterValue>: AnyParameter {
    public let spec: ParameterSpec
    public var name: String { spec.name }
    init(spec: ParameterSpec) { self.spec = spec }
}

extension Parameter where Value == Double {
    /// A number (a block map in recipes) read as Double.
    public init(_ name: String, default value: Double, range: ClosedRange<Double>? = nil, help: String) {
        spec = ParameterSpec(name, .number(default: value, range: range), help)
    }
}
extension Parameter where Value == Float {
    /// A number (a block map in recipes) read as Float (the f32 the kernels compute in).
    public init(_ name: String, default value: Double, range: ClosedRange<Double>? = nil, help: String) {
        spec = ParameterSpec(name, .number(default: value, range: range), help)
    }
}
extension Parameter where Value == Int {
    /// A whole number, one value for the whole merge.
    public init(_ name: String, default value: Int, range: ClosedRange<Int>? = nil, help: String) {
        spec = ParameterSpec(name, .integer(default: value, range: range), help)
    }
}
extension Parameter where Value == Bool {
    public init(_ name: String, default value: Bool, help: String) {
        spec = ParameterSpec(name, .bool(default: value), help)
    }
}
extension Parameter where Value == String {
    /// A required file path (relative to the recipe's folder).
    public static func path(_ name: String, help: String) -> Parameter<String> {
        Parameter(spec: ParameterSpec(name, .path, help))
    }
}
extension Parameter where Value: ParameterChoice {
    /// One of the enum's raw values.
    public init(_ name: String, default value: Value, help: String) {
        spec = ParameterSpec(name, .choice(Value.allCases.map(\.rawValue), default: value.rawValue), help)
    }
}

/// The arguments of one method node, resolved for one key.
public struct MethodArguments {
    /// The method these are for (for messages).
    public var method: String
    public var key: String
    public var info: TensorInfo
    public var block: String?
    /// Per-model weights for methods over a list of models (1 each unless given).
    public var weights: [Double]
    /// How many model inputs the kernel receives (named ones first, then the list).
    public var inputCount: Int
    /// What `prepare` returned for this node (an opened LoRA file, say).
    public var prepared: AnyObject?
    /// The method's declared parameters and their values for this key (defaults applied; a path
    /// only when given, and the recipe check requires it).
    let declared: [ParameterSpec]
    let values: [String: ArgumentValue]

    init(method: String, key: String, info: TensorInfo, block: String?, weights: [Double], inputCount: Int,
         prepared: AnyObject?, declared: [ParameterSpec], values: [String: ArgumentValue]) {
        self.method = method; self.key = key; self.info = info; self.block = block; self.weights = weights
        self.inputCount = inputCount; self.prepared = prepared; self.declared = declared; self.values = values
    }

    /// The value of a parameter the method declares; throws for one it does not.
    public subscript<V>(_ parameter: Parameter<V>) -> V {
        get throws {
            try ParameterTable.read(parameter, method: method, declared: declared, values: values)
        }
    }
}

/// What `prepare` sees: the node's constant arguments and the tensors its first input provides.
public struct PrepareContext {
    public var method: String
    let declared: [ParameterSpec]
    let values: [String: ArgumentValue]
    public var target: [TensorInfo]

    /// The value of a constant parameter (a path, a choice, ...) the method declares.
    public subscript<V>(_ parameter: Parameter<V>) -> V {
        get throws {
            try ParameterTable.read(parameter, method: method, declared: declared, values: values)
        }
    }
}

enum ParameterTable {
    static func read<V>(_ parameter: Parameter<V>, method: String, declared: [ParameterSpec], values: [String: ArgumentValue]) throws -> V {
        guard declared.contains(parameter.spec), let raw = values[parameter.name], let value = V(argument: raw) else {
            throw MergeError.undeclaredParameter(method: method, parameter: parameter.name, declared: declared.map(\.name))
        }
        return value
    }
}

/// A merge method: its inputs, parameters, and a pure function from arguments to a per-key kernel.
/// A method is one declaration (its parameters as `Parameter` values, listed here and read by the
/// kernel through `args[parameter]`); `MergeMethods.all` lists the methods, and the executor knows
/// nothing of any one.
public struct MethodDefinition: @unchecked Sendable {
    public var name: String
    public var summary: String
    /// Named model inputs, in the order the kernel receives them (e.g. a, b, c; base).
    public var inputs: [String]
    /// A list of models (`models: [x, y]`) that follows the named inputs, and its minimum length.
    public var list: String?
    public var minimumListCount: Int
    /// Whether the list takes per-model `weights`.
    public var weighted: Bool
    public var parameters: [ParameterSpec]
    /// Once per merge, before any key (opens files the method reads).
    public var prepare: ((PrepareContext) throws -> AnyObject?)?
    public var make: (MethodArguments) throws -> KernelChoice

    public init(name: String, summary: String, inputs: [String], list: String? = nil, minimumListCount: Int = 0,
                weighted: Bool = false, parameters: [any AnyParameter] = [],
                prepare: ((PrepareContext) throws -> AnyObject?)? = nil,
                make: @escaping (MethodArguments) throws -> KernelChoice) {
        self.name = name; self.summary = summary; self.inputs = inputs; self.list = list
        self.minimumListCount = minimumListCount; self.weighted = weighted; self.parameters = parameters.map(\.spec)
        self.prepare = prepare; self.make = make
    }

    public func parameter(_ name: String) -> ParameterSpec? { parameters.first { $0.name == name } }

    /// Every name a recipe may write in this method's expression.
    public var argumentNames: [String] {
        var names = inputs
        if let list { names.append(list) }
        if weighted { names.append("weights") }
        return names + parameters.map(\.name)
    }
}

extension MethodDefinition {
    /// The arguments `make` receives for one key: `values` by parameter name (numbers already resolved
    /// for the key), the declared defaults for the others. The planner calls this; so can tests and tools
    /// that run one method directly.
    public func arguments(key: String, info: TensorInfo, block: String? = nil, values given: [String: ArgumentValue] = [:],
                          weights: [Double] = [], inputCount: Int? = nil, prepared: AnyObject? = nil) -> MethodArguments {
        var values: [String: ArgumentValue] = [:]
        for spec in parameters {
            if let v = given[spec.name] { values[spec.name] = v; continue }
            switch spec.kind {
            case .number(let d, _): values[spec.name] = .number(d)
            case .integer(let d, _): values[spec.name] = .integer(d)
            case .bool(let d): values[spec.name] = .bool(d)
            case .choice(_, let d): values[spec.name] = .text(d)
            case .path: break
            }
        }
        return MethodArguments(method: name, key: key, info: info, block: block, weights: weights,
                               inputCount: inputCount ?? inputs.count + weights.count, prepared: prepared,
                               declared: parameters, values: values)
    }
}
