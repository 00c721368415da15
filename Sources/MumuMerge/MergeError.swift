import MumuFormats

/// What can be wrong with a merge, found before any compute where it can be. Each message names
/// the recipe, file, model, key or argument concerned.
public enum MergeError: Error, CustomStringConvertible, Equatable {
    /// The recipe document (its path, and what is wrong).
    case recipe(String, String)
    /// A name in a recipe that is not one of the valid names: a top-level field, a method, a method's
    /// argument, a model. `at` says where (`merge.b (weighted_sum)`), `kind` what the name is.
    case unknownName(origin: String, at: String, kind: String, name: String, valid: [String])
    /// A method's kernel read a parameter its definition does not declare (a defect in that method).
    case undeclaredParameter(method: String, parameter: String, declared: [String])
    /// An input model (its name in the recipe, and what is wrong).
    case input(String, String)
    /// The inputs do not fit together (architectures, shapes, key sets).
    case incompatible(String)
    /// A value that cannot be written (non-finite, out of range).
    case output(String)

    public var description: String {
        switch self {
        case let .recipe(origin, reason): return "\(origin): \(reason)"
        case let .unknownName(origin, at, kind, name, valid):
            var text = "\(origin): " + (at.isEmpty ? "" : "\(at): ") + "unknown \(kind) '\(name)'"
            if let guess = NameSuggestion.closest(to: name, in: valid) { text += " (did you mean '\(guess)'?)" }
            return text + "; expected one of: " + valid.joined(separator: ", ")
        case let .undeclaredParameter(method, parameter, declared):
            return "merge method '\(method)' reads parameter '\(parameter)', which it does not declare (it declares: "
                + (declared.isEmpty ? "none" : declared.joined(separator: ", ")) + ")"
        case let .input(name, reason): return "model '\(name)': \(reason)"
        case let .incompatible(reason): return reason
        case let .output(reason): return reason
        }
    }
}

/// The valid name closest to a misspelled one, for "did you mean" hints.
public enum NameSuggestion {
    /// The candidate at the smallest edit distance (case-insensitive), if it is at most a third of the
    /// name's length (at least 1) away; ties go to the first candidate.
    public static func closest(to name: String, in candidates: [String]) -> String? {
        let limit = max(1, name.count / 3)
        var best: (String, Int)?
        for c in candidates {
            let d = distance(Array(name.lowercased()), Array(c.lowercased()))
            if d <= limit, d < (best?.1 ?? Int.max) { best = (c, d) }
        }
        return best?.0
    }

    /// Levenshtein distance, with adjacent transpositions counting one (optimal string alignment).
    static func distance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous2 = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { current[j] = min(current[j], previous2[j - 2] + 1) }
            }
            (previous2, previous, current) = (previous, current, previous2)
        }
        return previous[b.count]
    }
}
