import MumuFormats

/// The recipe's expression as a DAG: identical sub-expressions (YAML aliases, or the same thing
/// written twice) are one node, so they are computed once per key. Building it is linear in the
/// recipe as written: a YAML anchor is visited once however many aliases use it.
public struct RecipeGraph {
    public enum Kind {
        /// An input model, by its index in `Recipe.models`.
        case input(Int)
        case method(MethodDefinition, NodeArguments)
    }
    public struct Node {
        public var kind: Kind
        /// Model inputs in the order the kernel receives them.
        public var children: [Int]
    }
    /// Arguments of a method node as written (numbers may be block maps), checked against the method.
    public struct NodeArguments {
        /// Number parameters (block maps resolved per key).
        public var numbers: [String: ScalarArgument] = [:]
        /// Whole numbers, bools, choices and paths (paths made absolute), one value for every key.
        public var constants: [String: ArgumentValue] = [:]
        public var weights: [ScalarArgument] = []
    }

    /// How deep expressions may nest (through aliases too).
    public static let maximumDepth = 512

    /// Nodes in topological order: children before parents; the root is last.
    public private(set) var nodes: [Node] = []
    public var root: Int { nodes.count - 1 }

    /// Builds the graph, checking method names, argument names, types and ranges.
    public init(recipe: Recipe) throws {
        var builder = Builder(recipe: recipe)
        _ = try builder.build(recipe.merge, path: "merge", depth: 0)
        nodes = builder.nodes
    }

    /// The inputs the expression reads (indices into `Recipe.models`).
    public var inputsUsed: Set<Int> {
        Set(nodes.compactMap { if case .input(let i) = $0.kind { return i }; return nil })
    }

    /// How many method and model nodes the expression has written out as a tree (a shared node
    /// counted each time it is used), saturating at `Int.max`.
    public var expandedNodeCount: Int {
        var sizes: [Int] = []
        sizes.reserveCapacity(nodes.count)
        for node in nodes {
            var n = 1
            for c in node.children {
                let (sum, overflow) = n.addingReportingOverflow(sizes[c])
                n = overflow ? Int.max : sum
            }
            sizes.append(n)
        }
        return sizes.last ?? 0
    }

    private struct Builder {
        let recipe: Recipe
        var nodes: [Node] = []
        var index: [String: Int] = [:]
        /// Nodes already built for a YAML anchor (the hash-consing by identity that keeps aliases linear).
        var anchored: [ObjectIdentifier: Int] = [:]
        let origin: String

        init(recipe: Recipe) { self.recipe = recipe; origin = recipe.origin }

        mutating func add(_ node: Node, signature: String) -> Int {
            if let i = index[signature] { return i }
            nodes.append(node)
            index[signature] = nodes.count - 1
            return nodes.count - 1
        }

        mutating func build(_ value: RecipeValue, path: String, depth: Int) throws -> Int {
            guard depth < RecipeGraph.maximumDepth else {
                throw MergeError.recipe(origin, "\(path): expressions nest more than \(RecipeGraph.maximumDepth) deep")
            }
            switch value {
            case .anchor(let a):
                if let i = anchored[ObjectIdentifier(a)] { return i }
                let i = try build(a.value, path: path, depth: depth)
                anchored[ObjectIdentifier(a)] = i
                return i
            case .string(let name):
                guard let i = recipe.models.firstIndex(where: { $0.name == name }) else {
                    throw MergeError.unknownName(origin: origin, at: path, kind: "model", name: name, valid: recipe.models.map(\.name))
                }
                return add(Node(kind: .input(i), children: []), signature: "model:\(name)")
            case .map(let entries):
                return try buildMethod(entries, path: path, depth: depth)
            default:
                throw MergeError.recipe(origin, "\(path): expected a model name or {method: ..., ...}")
            }
        }

        mutating func buildMethod(_ entries: [(String, RecipeValue)], path: String, depth: Int) throws -> Int {
            let dict = Dictionary(entries, uniquingKeysWith: { a, _ in a })
            guard case .string(let name)? = dict["method"]?.resolved else {
                throw MergeError.recipe(origin, "\(path): an expression needs 'method: NAME'")
            }
            guard let method = MergeMethods.named(name) else {
                throw MergeError.unknownName(origin: origin, at: "\(path).method", kind: "method", name: name,
                                             valid: MergeMethods.all.map(\.name))
            }
            let here = "\(path) (\(name))"
            // Every name first, so a misspelt argument is reported as such rather than as a missing one.
            for (key, _) in entries where key != "method" && !method.argumentNames.contains(key) {
                throw MergeError.unknownName(origin: origin, at: here, kind: "argument", name: key, valid: method.argumentNames)
            }
            var children: [Int] = []
            var signature = "method:\(name)"
            for input in method.inputs {
                guard let v = dict[input] else { throw MergeError.recipe(origin, "\(here): missing model argument '\(input)'") }
                let child = try build(v, path: "\(path).\(input)", depth: depth + 1)
                children.append(child)
                signature += "|\(input)=#\(child)"
            }
            if let list = method.list {
                guard case .list(let items)? = dict[list]?.resolved else {
                    throw MergeError.recipe(origin, "\(here): '\(list)' must be a list of models")
                }
                guard items.count >= method.minimumListCount else {
                    throw MergeError.recipe(origin, "\(here): '\(list)' needs at least \(method.minimumListCount) models, got \(items.count)")
                }
                for (k, item) in items.enumerated() {
                    let child = try build(item, path: "\(path).\(list)[\(k)]", depth: depth + 1)
                    children.append(child)
                    signature += "|\(list)[\(k)]=#\(child)"
                }
            }
            var args = NodeArguments()
            for (key, written) in entries where key != "method" && !method.inputs.contains(key) && key != method.list {
                let field = "\(here).\(key)"
                let v = written.resolved
                if key == "weights" && method.weighted {
                    guard case .list(let items) = v, items.count == children.count - method.inputs.count else {
                        throw MergeError.recipe(origin, "\(field): needs one weight per model in '\(method.list ?? "")'")
                    }
                    args.weights = try items.enumerated().map { try scalar($1.resolved, field: "\(field)[\($0)]") }
                    continue
                }
                guard let spec = method.parameter(key) else {
                    throw MergeError.unknownName(origin: origin, at: here, kind: "argument", name: key, valid: method.argumentNames)
                }
                switch spec.kind {
                case .number(_, let range):
                    let s = try scalar(v, field: field)
                    if let range {
                        let values = [s.constant, s.fallback].compactMap { $0 } + s.entries.map(\.1)
                        if let bad = values.first(where: { !range.contains($0) }) {
                            throw MergeError.recipe(origin, "\(field): \(bad) is out of range [\(range.lowerBound), \(range.upperBound)]")
                        }
                    }
                    args.numbers[key] = s
                    signature += "|\(key)=\(JSONWriter.write(s.json))"
                    continue
                case .integer(_, let range):
                    guard case .number(let d) = v, d == d.rounded(), abs(d) < 9e15 else {
                        throw MergeError.recipe(origin, "\(field): must be a whole number")
                    }
                    if let range, !range.contains(Int(d)) {
                        throw MergeError.recipe(origin, "\(field): \(Int(d)) is out of range [\(range.lowerBound), \(range.upperBound)]")
                    }
                    args.constants[key] = .integer(Int(d))
                case .bool:
                    guard case .bool(let b) = v else { throw MergeError.recipe(origin, "\(field): must be true or false") }
                    args.constants[key] = .bool(b)
                case .choice(let options, _):
                    guard case .string(let s) = v, options.contains(s) else {
                        throw MergeError.recipe(origin, "\(field): must be one of \(options.joined(separator: ", "))")
                    }
                    args.constants[key] = .text(s)
                case .path:
                    guard case .string(let s) = v else { throw MergeError.recipe(origin, "\(field): must be a file path") }
                    args.constants[key] = .text(s.hasPrefix("/") ? s : recipe.directory + "/" + s)
                }
                signature += "|\(key)=\(v.json)"
            }
            if method.weighted && args.weights.isEmpty {
                args.weights = Array(repeating: ScalarArgument(1), count: children.count - method.inputs.count)
            }
            if method.weighted { signature += "|weights=\(args.weights.map { JSONWriter.write($0.json) })" }
            for spec in method.parameters {
                if case .path = spec.kind, args.constants[spec.name] == nil {
                    throw MergeError.recipe(origin, "\(here): missing argument '\(spec.name)' (a file)")
                }
            }
            return add(Node(kind: .method(method, args), children: children), signature: signature)
        }

        func scalar(_ v: RecipeValue, field: String) throws -> ScalarArgument {
            switch v.resolved {
            case .number(let d):
                guard d.isFinite else { throw MergeError.recipe(origin, "\(field): must be a finite number") }
                return ScalarArgument(d)
            case .map(let m): return try ScalarArgument(map: m, origin: origin, field: field)
            default: throw MergeError.recipe(origin, "\(field): must be a number or a block map {default: x, OUT00-OUT08: y, ...}")
            }
        }
    }
}
