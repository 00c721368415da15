import MumuFormats

/// The recipe's expression as a DAG: identical sub-expressions (YAML aliases, or the same thing
/// written twice) are one node, so they are computed once per key.
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
        public var numbers: [String: ScalarArgument] = [:]
        public var integers: [String: Int] = [:]
        public var bools: [String: Bool] = [:]
        public var choices: [String: String] = [:]
        public var paths: [String: String] = [:]
        public var weights: [ScalarArgument] = []
    }

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

    private struct Builder {
        let recipe: Recipe
        var nodes: [Node] = []
        var index: [String: Int] = [:]
        let origin: String

        init(recipe: Recipe) { self.recipe = recipe; origin = recipe.origin }

        mutating func add(_ node: Node, signature: String) -> Int {
            if let i = index[signature] { return i }
            nodes.append(node)
            index[signature] = nodes.count - 1
            return nodes.count - 1
        }

        mutating func build(_ value: RecipeValue, path: String, depth: Int) throws -> Int {
            guard depth < 64 else { throw MergeError.recipe(origin, "\(path): expressions nest more than 64 deep (a cycle of aliases?)") }
            switch value {
            case .string(let name):
                guard let i = recipe.models.firstIndex(where: { $0.name == name }) else {
                    let known = recipe.models.map(\.name).joined(separator: ", ")
                    throw MergeError.recipe(origin, "\(path): unknown model '\(name)' (models: \(known))")
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
            guard case .string(let name)? = dict["method"] else {
                throw MergeError.recipe(origin, "\(path): an expression needs 'method: NAME'")
            }
            guard let method = MergeMethods.named(name) else {
                throw MergeError.recipe(origin, "\(path): unknown method '\(name)' (known: \(MergeMethods.all.map(\.name).joined(separator: ", ")))")
            }
            let here = "\(path) (\(name))"
            var children: [Int] = []
            var signature = "method:\(name)"
            for input in method.inputs {
                guard let v = dict[input] else { throw MergeError.recipe(origin, "\(here): missing model argument '\(input)'") }
                let child = try build(v, path: "\(path).\(input)", depth: depth + 1)
                children.append(child)
                signature += "|\(input)=#\(child)"
            }
            if let list = method.list {
                guard case .list(let items)? = dict[list] else {
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
            for (key, v) in entries where key != "method" && !method.inputs.contains(key) && key != method.list {
                let field = "\(here).\(key)"
                if key == "weights" && method.weighted {
                    guard case .list(let items) = v, items.count == children.count - method.inputs.count else {
                        throw MergeError.recipe(origin, "\(field): needs one weight per model in '\(method.list ?? "")'")
                    }
                    args.weights = try items.enumerated().map { try scalar($1, field: "\(field)[\($0)]") }
                    continue
                }
                guard let spec = method.parameter(key) else {
                    var known = method.inputs + method.parameters.map(\.name)
                    if let l = method.list { known.append(l) }
                    if method.weighted { known.append("weights") }
                    throw MergeError.recipe(origin, "\(here): unknown argument '\(key)' (\(name) takes \(known.joined(separator: ", ")))")
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
                case .integer(_, let range):
                    guard case .number(let d) = v, d == d.rounded(), abs(d) < 9e15 else {
                        throw MergeError.recipe(origin, "\(field): must be a whole number")
                    }
                    if let range, !range.contains(Int(d)) {
                        throw MergeError.recipe(origin, "\(field): \(Int(d)) is out of range [\(range.lowerBound), \(range.upperBound)]")
                    }
                    args.integers[key] = Int(d)
                case .bool:
                    guard case .bool(let b) = v else { throw MergeError.recipe(origin, "\(field): must be true or false") }
                    args.bools[key] = b
                case .choice(let options, _):
                    guard case .string(let s) = v, options.contains(s) else {
                        throw MergeError.recipe(origin, "\(field): must be one of \(options.joined(separator: ", "))")
                    }
                    args.choices[key] = s
                case .path:
                    guard case .string(let s) = v else { throw MergeError.recipe(origin, "\(field): must be a file path") }
                    args.paths[key] = s.hasPrefix("/") ? s : recipe.directory + "/" + s
                }
                signature += "|\(key)=\(v.json)"
            }
            if method.weighted && args.weights.isEmpty {
                args.weights = Array(repeating: ScalarArgument(1), count: children.count - method.inputs.count)
            }
            if method.weighted { signature += "|weights=\(args.weights.map { JSONWriter.write($0.json) })" }
            for spec in method.parameters {
                if case .path = spec.kind, args.paths[spec.name] == nil {
                    throw MergeError.recipe(origin, "\(here): missing argument '\(spec.name)' (a file)")
                }
            }
            return add(Node(kind: .method(method, args), children: children), signature: signature)
        }

        func scalar(_ v: RecipeValue, field: String) throws -> ScalarArgument {
            switch v {
            case .number(let d):
                guard d.isFinite else { throw MergeError.recipe(origin, "\(field): must be a finite number") }
                return ScalarArgument(d)
            case .map(let m): return try ScalarArgument(map: m, origin: origin, field: field)
            default: throw MergeError.recipe(origin, "\(field): must be a number or a block map {default: x, OUT00-OUT08: y, ...}")
            }
        }
    }
}
