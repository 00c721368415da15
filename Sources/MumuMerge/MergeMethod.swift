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

/// A declared parameter of a method.
public struct ParameterSpec: Sendable {
    public enum Kind: Sendable {
        /// A number, settable per block and per key regex.
        case number(default: Double, range: ClosedRange<Double>?)
        /// A whole number, one value for the whole merge.
        case integer(default: Int, range: ClosedRange<Int>?)
        case bool(default: Bool)
        case choice([String], default: String)
        /// A file path, relative to the recipe.
        case path
    }
    public var name: String
    public var kind: Kind
    public var help: String
    public init(_ name: String, _ kind: Kind, _ help: String) { self.name = name; self.kind = kind; self.help = help }
}

/// The arguments of one method node, resolved for one key.
public struct MethodArguments {
    public var key: String
    public var info: TensorInfo
    public var block: String?
    /// Numbers (per-key values of block maps), integers, bools, choices and paths by name.
    public var numbers: [String: Double]
    public var integers: [String: Int]
    public var bools: [String: Bool]
    public var choices: [String: String]
    /// Per-model weights for methods over a list of models (1 each unless given).
    public var weights: [Double]
    /// How many model inputs the kernel receives (named ones first, then the list).
    public var inputCount: Int
    /// What `prepare` returned for this node (an opened LoRA file, say).
    public var prepared: AnyObject?

    public func number(_ name: String) -> Double { numbers[name] ?? 0 }
    public func float(_ name: String) -> Float { Float(numbers[name] ?? 0) }
}

/// What `prepare` sees: the node's resolved constant arguments and the tensors its first input provides.
public struct PrepareContext {
    public var paths: [String: String]
    public var target: [TensorInfo]
}

/// A merge method: its inputs, parameters, and a pure function from arguments to a per-key kernel.
/// Methods are registered by name in `MergeMethods.registry`; the executor knows nothing of any one.
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
                weighted: Bool = false, parameters: [ParameterSpec] = [],
                prepare: ((PrepareContext) throws -> AnyObject?)? = nil,
                make: @escaping (MethodArguments) throws -> KernelChoice) {
        self.name = name; self.summary = summary; self.inputs = inputs; self.list = list
        self.minimumListCount = minimumListCount; self.weighted = weighted; self.parameters = parameters
        self.prepare = prepare; self.make = make
    }

    public func parameter(_ name: String) -> ParameterSpec? { parameters.first { $0.name == name } }
}
