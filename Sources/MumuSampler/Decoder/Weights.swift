import CMumuKernels
import Foundation
import MumuFormats
import MumuTensor

/// How the models keep the weights of their matrix products (linear layers and convolutions).
/// Norms, embeddings and biases are always f32.
public enum WeightPrecision: String, Sendable, CaseIterable {
    /// Converted to f32 at load; products through OpenBLAS sgemm.
    case f32
    /// Rounded to bf16 at load (half the memory); products through mumu's bf16 GEMM on the CPU's best path
    /// (AMX, AVX-512-BF16, AVX2 + FMA at about sgemm's speed, or portable C, far slower than sgemm).
    case bf16
}

extension WeightPrecision {
    /// Generation's default: the faster precision on this CPU (`DenseWeight.bf16IsFaster`).
    public static var generationDefault: WeightPrecision { DenseWeight.bf16IsFaster ? .bf16 : .f32 }
    /// MUMU's encoder's default: bf16 wherever the bf16 kernel has a hardware path, for its size
    /// (`DenseWeight.bf16HasHardwarePath`).
    public static var encoderDefault: WeightPrecision { DenseWeight.bf16HasHardwarePath ? .bf16 : .f32 }
}

/// Reads one component's tensors by sgm name (under `prefix`), checks each shape against what the model's
/// configuration says and every value for NaN / infinity, and converts to what the layers hold.
/// Weights are copied out of the (memory-mapped) checkpoint as they are read, one tensor at a time.
public final class WeightReader: @unchecked Sendable {
    public let source: TensorSource
    public let prefix: String
    public let precision: WeightPrecision
    private let infos: [String: TensorInfo]
    /// Where every parameter read is recorded by its full sgm name (for patching styles in), when given.
    public let table: ParameterTable?

    public init(source: TensorSource, prefix: String, precision: WeightPrecision = .f32, table: ParameterTable? = nil) {
        self.source = source
        self.prefix = prefix
        self.precision = precision
        self.table = table
        infos = source.infoByName
    }

    /// Records where the parameter `name` (without the prefix) lives.
    public func record(_ name: String, _ slot: ParameterSlot) {
        table?.add(prefix + name, slot)
    }

    /// The path, for messages.
    public var path: String { source.path }

    public func has(_ name: String) -> Bool { infos[prefix + name] != nil }

    /// The stored shape of `name`, or nil.
    public func shape(_ name: String) -> [Int]? { infos[prefix + name]?.shape }

    /// The stored shape of `name`, or an error naming it.
    public func requireShape(_ name: String) throws -> [Int] {
        guard let s = shape(name) else { throw DecoderError.missingTensor(path: path, tensor: prefix + name) }
        return s
    }

    /// The values of `name` as f32, checked to have `shape` (or the same element count when `shape` lists a
    /// squeezed form, e.g. a 1x1 conv [O, I, 1, 1] read as [O, I]) and to be finite.
    public func floats(_ name: String, shape expected: [Int]) throws -> [Float] {
        let count = expected.reduce(1, *)
        return try [Float](unsafeUninitializedCapacity: count) { buffer, filled in
            try read(name, shape: expected, into: buffer.baseAddress!)
            filled = count
        }
    }

    /// `floats` into a caller's buffer of shape.product floats.
    func read(_ name: String, shape expected: [Int], into out: UnsafeMutablePointer<Float>) throws {
        try read(name, shape: expected, as: .f32, into: UnsafeMutableRawPointer(out))
    }

    /// A bf16 tensor's bits into `out`, without an f32 copy: bf16 weights of a bf16 checkpoint go straight into
    /// the packed layout (the values are the same as through f32). The caller checks the stored dtype is bf16.
    func readBF16(_ name: String, shape expected: [Int], into out: UnsafeMutablePointer<UInt16>) throws {
        try read(name, shape: expected, as: .bf16, into: UnsafeMutableRawPointer(out))
    }

    /// The tensor `name` converted to `dtype` (f32 or bf16) into `out`, checked to have `shape` (or the same element
    /// count when `shape` lists a squeezed form) and every value to be finite.
    private func read(_ name: String, shape expected: [Int], as dtype: DType, into out: UnsafeMutableRawPointer) throws {
        let full = prefix + name
        guard let info = infos[full] else { throw DecoderError.missingTensor(path: path, tensor: full) }
        let squeezed = info.shape.filter { $0 != 1 }
        guard info.shape == expected || (squeezed == expected.filter { $0 != 1 } && info.elementCount == expected.reduce(1, *)) else {
            throw DecoderError.wrongShape(path: path, tensor: full, expected: expected, found: info.shape)
        }
        let data = try source.tensor(full)
        // Streamed with pread from a mapped file (StreamExecutor.converting): loading never faults the mapping in,
        // so the resident set holds the converted weights only, not also the file's pages.
        var filled = 0
        try StreamExecutor.converting(data, to: dtype)({ part in
            (out + filled).copyMemory(from: part.baseAddress!, byteCount: part.count)
            filled += part.count
        })
        let count = info.elementCount
        let bad = dtype == .bf16 ? mumu_count_nonfinite_bf16(out.assumingMemoryBound(to: UInt16.self), count)
                                 : mumu_count_nonfinite_f32(out.assumingMemoryBound(to: Float.self), count)
        if bad > 0 { throw DecoderError.nonFinite(path: path, tensor: full, count: bad) }
    }

    /// Two reusable buffers for the large weights (read, then reordered; a reader loads on one thread), so loading a model does not allocate
    /// and free a fresh f32 copy of every matrix (which fragments the heap by gigabytes over SDXL's 1,700 layers).
    private var scratch: [UnsafeMutablePointer<Float>] = []
    private var scratchCapacity = 0
    private func scratchBuffers(_ count: Int) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) {
        if count > scratchCapacity {
            scratch.forEach { $0.deallocate() }
            scratch = [.allocate(capacity: count), .allocate(capacity: count)]
            scratchCapacity = count
        }
        return (scratch[0], scratch[1])
    }

    deinit { scratch.forEach { $0.deallocate() } }

    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        Tensor(shape: shape, data: try floats(name, shape: shape))
    }

    /// A vector [count] (norm weights, biases).
    public func vector(_ name: String, count: Int) throws -> Tensor { try tensor(name, shape: [count]) }

    /// A linear layer: `name.weight` [outputs, inputs] and, when `bias`, `name.bias` [outputs]. A 1x1 conv
    /// weight [outputs, inputs, 1, 1] is read as the same matrix (sgm VAE attention, SD1 proj_in).
    public func linear(_ name: String, inputs: Int, outputs: Int, bias: Bool = true) throws -> DenseWeight {
        let (w, _) = scratchBuffers(outputs * inputs)
        if precision == .bf16, infos[prefix + name + ".weight"].map({ $0.dtype == .bf16 && $0.shape == [outputs, inputs] }) == true {
            let bits = UnsafeMutableRawPointer(w).bindMemory(to: UInt16.self, capacity: outputs * inputs)
            try readBF16(name + ".weight", shape: [outputs, inputs], into: bits)
            let b = bias ? try floats(name + ".bias", shape: [outputs]) : nil
            let layer = b.map { DenseWeight(bf16: bits, rows: outputs, cols: inputs, bias: $0) }
                ?? DenseWeight(bf16: bits, rows: outputs, cols: inputs, bias: nil)
            return recorded(name, layer, kernel: 1)
        }
        try read(name + ".weight", shape: [outputs, inputs], into: w)
        let b = bias ? try floats(name + ".bias", shape: [outputs]) : nil
        return recorded(name, dense(w, rows: outputs, cols: inputs, bias: b), kernel: 1)
    }

    /// A square convolution: `name.weight` [outputs, inputs, k, k] and `name.bias` [outputs], reordered for
    /// channels-last (`DenseWeight.convWeight`).
    public func conv(_ name: String, inputs: Int, outputs: Int, kernel: Int, bias: Bool = true) throws -> DenseWeight {
        let (w, reordered) = scratchBuffers(outputs * inputs * kernel * kernel)
        try read(name + ".weight", shape: [outputs, inputs, kernel, kernel], into: w)
        let b = bias ? try floats(name + ".bias", shape: [outputs]) : nil
        if kernel == 1 { return recorded(name, dense(w, rows: outputs, cols: inputs, bias: b), kernel: 1) }
        DenseWeight.convWeight(w, cout: outputs, cin: inputs, kh: kernel, kw: kernel, into: reordered)
        return recorded(name, dense(reordered, rows: outputs, cols: kernel * kernel * inputs, bias: b), kernel: kernel)
    }

    /// Bytes of weights read since the heap was last trimmed.
    private var readSinceTrim = 0

    private func recorded(_ name: String, _ layer: DenseWeight, kernel: Int) -> DenseWeight {
        // The loader's transient buffers (staging, converted values, biases) are freed but glibc keeps their
        // pages: on Idefics2-8b that held 2.2 GB at the end of loading (peak 17.5 GB for 15.2 GB of weights).
        // Returning them every 256 MB of weights keeps the peak near the weights themselves.
        readSinceTrim += layer.byteCount
        if readSinceTrim >= 256 << 20 {
            readSinceTrim = 0
            WeightMemory.releaseFreedHeap()
        }
        record(name + ".weight", .weight(layer, rows: 0..<layer.rows, kernel: kernel, transposed: false))
        if layer.hasBias { record(name + ".bias", .bias(layer, rows: 0..<layer.rows)) }
        return layer
    }

    /// A norm's weight and bias ([channels] each).
    public func norm(_ name: String, channels: Int) throws -> Norm {
        let n = Norm(weight: try vector(name + ".weight", count: channels), bias: try vector(name + ".bias", count: channels))
        record(name + ".weight", .normWeight(n))
        record(name + ".bias", .normBias(n))
        return n
    }

    private func dense(_ w: UnsafePointer<Float>, rows: Int, cols: Int, bias: [Float]?) -> DenseWeight {
        let bf16 = precision == .bf16
        if let bias { return DenseWeight(f32: w, rows: rows, cols: cols, bias: bias, bf16: bf16) }
        return DenseWeight(f32: w, rows: rows, cols: cols, bias: nil, bf16: bf16)
    }
}

/// The affine part of a GroupNorm or LayerNorm (a reference, so a style can patch it in place).
public final class Norm: @unchecked Sendable {
    public var weight: Tensor
    public var bias: Tensor

    public init(weight: Tensor, bias: Tensor) {
        self.weight = weight
        self.bias = bias
    }

    /// GroupNorm (channels-last), optionally followed by SiLU in the same pass.
    public func group(_ x: Tensor, groups: Int, eps: Float, silu: Bool = false) -> Tensor {
        NN.groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps, silu: silu)
    }

    /// LayerNorm over the last dimension.
    public func layer(_ x: Tensor, eps: Float) -> Tensor {
        NN.layerNorm(x, weight: weight, bias: bias, eps: eps)
    }
}

/// A float array a model holds that a style may replace (embeddings).
public final class FloatParameter: @unchecked Sendable {
    public var values: [Float]
    public init(_ values: [Float]) { self.values = values }
}

/// Where one checkpoint tensor lives inside the loaded models, so it can be replaced in place (`ResidentDecoder`).
public enum ParameterSlot {
    /// Rows `rows` of a product's weight. The checkpoint stores them as [rows, inputs] (a linear layer), or
    /// [rows, inputs, k, k] (a convolution, kept reordered to [rows, k, k, inputs]), or transposed ([inputs, rows]:
    /// OpenCLIP's text_projection).
    case weight(DenseWeight, rows: Range<Int>, kernel: Int, transposed: Bool)
    case bias(DenseWeight, rows: Range<Int>)
    case normWeight(Norm)
    case normBias(Norm)
    case values(FloatParameter)
}

/// The parameters of loaded models by full sgm name (filled by `WeightReader`s given the table).
public final class ParameterTable: @unchecked Sendable {
    public private(set) var slots: [String: ParameterSlot] = [:]
    private let lock = NSLock()
    public init() {}
    public func add(_ name: String, _ slot: ParameterSlot) {
        lock.lock(); defer { lock.unlock() }
        slots[name] = slot
    }
    public subscript(_ name: String) -> ParameterSlot? {
        lock.lock(); defer { lock.unlock() }
        return slots[name]
    }
    public var names: [String] {
        lock.lock(); defer { lock.unlock() }
        return Array(slots.keys)
    }
}
