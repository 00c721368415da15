import Foundation
import MumuFormats
import MumuTensor

/// One input model of a merge, opened and viewed under sgm names.
public struct MergeInput {
    public var name: String
    public var path: String
    public var source: TensorSource
    public var format: String
    public var architecture: String?
    public var family: String?
    public var infos: [String: TensorInfo]
}

/// Choices a merge run makes beyond the recipe.
public struct MergeOptions {
    public var threads = 1
    /// Overrides the recipe's `missing`.
    public var missing: MissingKeyPolicy?
    public var allowNonFinite = false
    /// Overrides the recipe's output dtype (f16, bf16, f32, keep).
    public var dtype: String?
    public init() {}
}

/// A checked merge: inputs opened and compatible, every output key resolved to the inputs it reads.
/// Building a plan reads headers only; nothing is computed and nothing large is allocated.
public final class MergePlan {
    public let recipe: Recipe
    public let graph: RecipeGraph
    public let inputs: [MergeInput]
    public let options: MergeOptions
    /// Output tensors in a stable order (sorted by name), with their output dtypes.
    public private(set) var outputs: [TensorInfo] = []
    /// Per output key: the inputs whose tensor it reads (after alpha-0 and untouched-key shortcuts).
    public private(set) var reads: [String: [Int]] = [:]
    /// Keys copied unmerged from one input because others lack them (`--missing keep-first`).
    public private(set) var copied: [String: Int] = [:]
    /// Keys left out (`--missing skip`, or outside the chosen components).
    public private(set) var skipped: [String] = []
    public private(set) var notes: [String] = []
    /// The architecture of the output (the first input's known one).
    public private(set) var architecture: ArchitectureDescriptor?
    /// The merge block of every key (descriptors first, the fallback rule for keys they do not know).
    public let blocks: BlockTable
    let regexes = RegexCache()
    var prepared: [Int: AnyObject] = [:]

    public static let componentNames = ["unet", "vae", "te1", "te2", "connector"]

    /// Opens the recipe's inputs and checks everything that can be checked before computing.
    public init(recipe: Recipe, options: MergeOptions = MergeOptions()) throws {
        self.recipe = recipe
        self.options = options
        graph = try RecipeGraph(recipe: recipe)
        let used = graph.inputsUsed
        var opened: [MergeInput] = []
        for (i, model) in recipe.models.enumerated() {
            guard used.contains(i) else {
                notes.append("model '\(model.name)' is listed but not used by the merge expression")
                opened.append(MergeInput(name: model.name, path: model.path, source: EmptySource(path: model.path), format: "unused",
                                         architecture: nil, family: nil, infos: [:]))
                continue
            }
            opened.append(try MergePlan.open(name: model.name, path: model.path))
        }
        inputs = opened
        let known = used.sorted().compactMap { opened[$0].architecture.flatMap(Architectures.named) }
        architecture = known.first
        blocks = BlockTable(architectures: known, families: used.compactMap { opened[$0].family })
        try checkCompatible(used: used.sorted())
        try prepareNodes()
        try planKeys(used: used.sorted())
    }

    /// Opens one input (any format `mumu inspect` reads) and views it under sgm names.
    static func open(name: String, path: String) throws -> MergeInput {
        guard FileManager.default.fileExists(atPath: path) else { throw MergeError.input(name, "\(path): no such file or folder") }
        let (source, format): (TensorSource, ModelFile.Format)
        do { (source, format) = try ModelFile.open(path) } catch {
            throw MergeError.input(name, "cannot read \(path): \(error)")
        }
        if LoraDetector.looksLikeLora(source.names) {
            throw MergeError.input(name, "\(path) is a LoRA, not a model: bake it in with {method: lora, model: ..., lora: \(path)}")
        }
        let view: SGMView
        do { view = try SGMView.view(source, format: format) } catch { throw MergeError.input(name, "\(error)") }
        let detection = ModelDetector.detect(view.source.tensors, metadata: view.original.metadata)
        return MergeInput(name: name, path: path, source: view.source, format: view.format.rawValue, architecture: detection.architecture,
                          family: detection.family, infos: view.source.infoByName)
    }

    /// Refuses inputs of different architectures (at once, naming keys and shapes) and shapes that differ.
    func checkCompatible(used: [Int]) throws {
        guard let first = used.first else { return }
        let a = inputs[first]
        for j in used.dropFirst() {
            let b = inputs[j]
            var mismatches: [String] = []
            for (key, ia) in a.infos.sorted(by: { $0.key < $1.key }) {
                if let ib = b.infos[key], ib.shape != ia.shape {
                    mismatches.append("\(key): \(ia.shape) in '\(a.name)', \(ib.shape) in '\(b.name)'")
                    if mismatches.count == 5 { break }
                }
            }
            let common = a.infos.keys.filter { b.infos[$0] != nil }.count
            let familyClash = a.family != nil && b.family != nil && a.family != b.family
            if familyClash || !mismatches.isEmpty || common == 0 {
                var message = "'\(a.name)' (\(a.architecture ?? "unknown architecture")) and '\(b.name)' (\(b.architecture ?? "unknown architecture")) cannot be merged"
                if common == 0 { message += ": they share no tensor names" }
                if !mismatches.isEmpty { message += "; first shapes that differ: " + mismatches.joined(separator: "; ") }
                if familyClash && mismatches.isEmpty {
                    let onlyA = a.infos.keys.filter { b.infos[$0] == nil }.sorted().prefix(3)
                    message += "; keys only in '\(a.name)': " + onlyA.joined(separator: ", ")
                }
                throw MergeError.incompatible(message)
            }
        }
    }

    func prepareNodes() throws {
        let target = Dictionary(inputs.flatMap { $0.infos.values.map { ($0.name, $0) } }, uniquingKeysWith: { a, _ in a })
            .values.sorted { $0.name < $1.name }
        for (id, node) in graph.nodes.enumerated() {
            guard case .method(let method, let args) = node.kind, let prepare = method.prepare else { continue }
            if let p = try prepare(PrepareContext(method: method.name, declared: method.parameters, values: args.constants, target: Array(target))) {
                prepared[id] = p
            }
            if let patches = prepared[id] as? LoraPatchSet {
                if patches.patchedKeys.isEmpty {
                    throw MergeError.incompatible("\(patches.path): no module of this LoRA matches a tensor of the models (another architecture?)")
                }
                let unmatched = patches.unmatchedModules.filter { !$0.contains(" ") }
                if !unmatched.isEmpty {
                    notes.append("\(patches.path): \(unmatched.count) LoRA modules match no tensor and are ignored: "
                                 + unmatched.prefix(3).joined(separator: ", ") + (unmatched.count > 3 ? ", ..." : ""))
                }
                notes.append(contentsOf: patches.unmatchedModules.filter { $0.contains(" ") }.prefix(3).map { "\(patches.path): \($0)" })
            }
        }
    }

    /// The output dtype of a key.
    func outputDType(_ key: String, inputs readers: [Int]) -> DType {
        let name = options.dtype ?? recipe.output.dtype
        let first = readers.first.flatMap { inputs[$0].infos[key] }
        let inputType = first?.dtype ?? .f32
        guard inputType.isConvertibleFloat else { return inputType }
        switch name {
        case "f32": return .f32
        case "bf16": return .bf16
        case "keep": return inputType
        default: return .f16
        }
    }

    func planKeys(used: [Int]) throws {
        let policy = options.missing ?? recipe.missing ?? .error
        var allKeys = Set<String>()
        for i in used { allKeys.formUnion(inputs[i].infos.keys) }
        let include = recipe.output.components.map(Set.init)
        let exclude = Set(recipe.output.excludeComponents)
        var missingReport: [String] = []
        var outputs: [TensorInfo] = []
        for key in allKeys.sorted() {
            let component = componentOf(key)
            if let component, exclude.contains(component) || !(include?.contains(component) ?? true) {
                skipped.append(key); continue
            }
            if component == nil, include != nil { skipped.append(key); continue }
            guard let owner = used.first(where: { inputs[$0].infos[key] != nil }) else { continue }
            let info = inputs[owner].infos[key]!
            let resolution = try resolve(key: key, info: info)
            let lacking = resolution.leaves.filter { inputs[$0].infos[key] == nil }
            var readers = resolution.leaves
            if !lacking.isEmpty {
                switch policy {
                case .error:
                    if missingReport.count < 5 {
                        missingReport.append("\(key) (missing in \(lacking.map { "'\(inputs[$0].name)'" }.joined(separator: ", ")))")
                    } else { missingReport.append("") }
                    continue
                case .skip:
                    skipped.append(key); continue
                case .keepFirst:
                    copied[key] = owner
                    readers = [owner]
                }
            }
            if !info.dtype.isConvertibleFloat {
                // Integer buffers (position ids) and exotic dtypes are carried over, never merged.
                copied[key] = owner
                readers = [owner]
                outputs.append(info)
                reads[key] = readers
                continue
            }
            reads[key] = readers
            outputs.append(TensorInfo(name: key, dtype: outputDType(key, inputs: readers), shape: info.shape))
        }
        if !missingReport.isEmpty {
            let shown = missingReport.filter { !$0.isEmpty }
            throw MergeError.incompatible("\(missingReport.count) keys are not in every input the merge reads: "
                + shown.joined(separator: "; ") + (missingReport.count > shown.count ? "; ..." : "")
                + ". Choose --missing keep-first (copy them from the first model that has them) or --missing skip (leave them out)")
        }
        guard !outputs.isEmpty else { throw MergeError.incompatible("the merge has no output tensors (check output.components)") }
        self.outputs = outputs
        if !copied.isEmpty { notes.append("\(copied.count) keys copied unmerged from the first model that has them (--missing keep-first)") }
        if policy == .skip && !skipped.isEmpty { notes.append("\(skipped.count) keys left out") }
    }

    /// Total bytes of the output tensors.
    public var outputBytes: Int { outputs.reduce(0) { $0 + $1.byteCount } }

    /// Output keys per block (for --dry-run).
    public var keysPerBlock: [(String, Int)] {
        var counts: [String: Int] = [:]
        for o in outputs { counts[blocks.block(of: o.name) ?? "other", default: 0] += 1 }
        let order = Blocks.all(inputs: 12, outputs: 12) + ["other"]
        return counts.sorted { (order.firstIndex(of: $0.key) ?? 99, $0.key) < (order.firstIndex(of: $1.key) ?? 99, $1.key) }
    }

    // MARK: per-key resolution

    /// One key's computation: leaves (input tensors) and kernels, children before parents.
    struct Resolution {
        enum Step { case leaf(Int); case kernel(MergeKernel, [Int]) }
        var steps: [Step] = []
        var leaves: [Int] = []
        /// The step whose values are the key's output.
        var output = 0
        var isLeaf: Bool { steps.count == 1 }
    }

    /// Resolves the graph for one key: block-map values, alpha-0 and untouched-key shortcuts.
    func resolve(key: String, info: TensorInfo) throws -> Resolution {
        var res = Resolution()
        var memo: [Int: Int] = [:]
        let block = blocks.block(of: key)
        func visit(_ id: Int) throws -> Int {
            if let s = memo[id] { return s }
            let node = graph.nodes[id]
            let step: Int
            switch node.kind {
            case .input(let i):
                res.steps.append(.leaf(i))
                if !res.leaves.contains(i) { res.leaves.append(i) }
                step = res.steps.count - 1
            case .method(let method, let a):
                var values = a.constants
                for (name, argument) in a.numbers {
                    if let v = argument.value(key: key, block: block, regexes: regexes) { values[name] = .number(v) }
                }
                let args = method.arguments(key: key, info: info, block: block, values: values,
                                            weights: a.weights.map { $0.value(key: key, block: block, regexes: regexes) ?? 1 },
                                            inputCount: node.children.count, prepared: prepared[id])
                switch try method.make(args) {
                case .passthrough(let i):
                    step = try visit(node.children[i])
                case .kernel(let kernel):
                    let children = try node.children.map { try visit($0) }
                    res.steps.append(.kernel(kernel, children))
                    step = res.steps.count - 1
                }
            }
            memo[id] = step
            return step
        }
        res.output = try visit(graph.root)
        return res
    }
}

/// Stands in for a model the recipe lists but does not use.
final class EmptySource: TensorSource, @unchecked Sendable {
    let path: String
    init(path: String) { self.path = path }
    var tensors: [TensorInfo] { [] }
    var metadata: [String: String] { [:] }
    func tensor(_ name: String) throws -> TensorData { throw FormatError.missingTensor(path: path, tensor: name) }
}
