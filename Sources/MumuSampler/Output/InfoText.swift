import Foundation
import MumuFormats

/// AUTOMATIC1111's "infotext": the generation parameters it stores in a PNG text chunk keyed `parameters`
/// (its modules/processing.py, `create_infotext`; docs/generating.md, "Output") and that other tools (Civitai,
/// Forge, ComfyUI readers) parse:
///
///     {prompt}
///     Negative prompt: {negative prompt}
///     Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 42, Size: 1024x1024, ...
///
/// Prompts may span several lines; the parameters are the last line, `key: value` pairs joined by ", ",
/// a value holding `,`, `:` or a newline written as a JSON string.
public struct InfoText: Equatable, Sendable {
    public var prompt: String
    /// Empty when there is none (the "Negative prompt:" line is then left out, as A1111 does).
    public var negativePrompt: String
    /// The parameters line, in order, values unquoted.
    public var parameters: [(String, String)]

    /// The PNG text keyword A1111 stores the infotext under.
    public static let pngKey = "parameters"

    public init(prompt: String, negativePrompt: String = "", parameters: [(String, String)] = []) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.parameters = parameters
    }

    public static func == (a: InfoText, b: InfoText) -> Bool {
        a.prompt == b.prompt && a.negativePrompt == b.negativePrompt
            && a.parameters.count == b.parameters.count
            && zip(a.parameters, b.parameters).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    /// The value of parameter `key`; the last one when it occurs twice (A1111 parses into a dict).
    public subscript(key: String) -> String? {
        parameters.last(where: { $0.0 == key })?.1
    }

    // MARK: - Rendering

    /// The infotext as A1111's `create_infotext` writes it: prompt, the "Negative prompt: " line when there
    /// is a negative prompt, then `k: v` pairs joined by ", " with values quoted by `quote`; the whole
    /// stripped of surrounding whitespace.
    public func render() -> String {
        let params = parameters.map { "\($0.0): \(InfoText.quote($0.1))" }.joined(separator: ", ")
        let negative = negativePrompt.isEmpty ? "" : "\nNegative prompt: \(negativePrompt)"
        return InfoText.pythonStrip("\(prompt)\(negative)\n\(params)")
    }

    /// A1111's `quote`: a value containing `,`, `:` or a newline becomes a JSON string (Python's
    /// `json.dumps(v, ensure_ascii=False)`); any other value is written as it is.
    public static func quote(_ value: String) -> String {
        guard value.unicodeScalars.contains(where: { $0 == "," || $0 == ":" || $0 == "\n" }) else { return value }
        // json.dumps(ensure_ascii=False) escapes exactly what serde_json does: `"`, `\`, control characters.
        return JSONWriter.quote(value)
    }

    /// A1111's `unquote`: a value in double quotes decoded as a JSON string; returned unchanged when it is
    /// not quoted or not valid JSON (as Python's `json.loads` failing falls back to the text).
    public static func unquote(_ text: String) -> String {
        guard text.unicodeScalars.count >= 2, text.hasPrefix("\""), text.hasSuffix("\""),
              case let .string(value)? = try? JSONParser.parse(text) else { return text }
        return value
    }

    // MARK: - Parsing

    /// A1111's `re_param`, verbatim: a key (a word character, then word characters, spaces, `-` or `/`),
    /// a colon, and a JSON-quoted value or everything up to the next comma.
    public static let paramPattern = #"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#
    private static let paramRegex = try! NSRegularExpression(pattern: paramPattern)

    /// The `(key, raw value)` pairs `re_param.findall` finds in `line`.
    static func paramMatches(_ line: String) -> [(String, String)] {
        let ns = line as NSString
        return paramRegex.matches(in: line, range: NSRange(location: 0, length: ns.length)).map {
            (ns.substring(with: $0.range(at: 1)), ns.substring(with: $0.range(at: 2)))
        }
    }

    /// A1111's `parse_generation_parameters` (modules/infotext_utils.py), without the UI defaults it adds
    /// afterwards: the text is stripped and split at newlines; the last line is the parameters line when
    /// `re_param` matches it at least 3 times, else it belongs to the prompt. The other lines, each stripped,
    /// form the prompt, up to a line starting "Negative prompt:", from which on (that prefix removed) they
    /// form the negative prompt; multi-line parts are joined with "\n". Quoted values are unquoted.
    /// Unlike A1111, which keeps a dict (and splits `WxH` sizes into two fields), this keeps every pair in
    /// order as written, and keeps an empty value (A1111 skips it with an error message).
    public static func parse(_ text: String) -> InfoText {
        var lines = pythonStrip(text).unicodeScalars
            .split(separator: "\n", omittingEmptySubsequences: false)
            .map { String(String.UnicodeScalarView($0)) }
        var lastLine = lines.removeLast()   // split always yields at least one element
        var matches = paramMatches(lastLine)
        if matches.count < 3 {
            lines.append(lastLine)
            lastLine = ""
            matches = []
        }
        var prompt = "", negative = ""
        var doneWithPrompt = false
        let marker = "Negative prompt:".unicodeScalars
        for raw in lines {
            var line = pythonStrip(raw)
            if line.unicodeScalars.starts(with: marker) {
                doneWithPrompt = true
                line = pythonStrip(String(String.UnicodeScalarView(line.unicodeScalars.dropFirst(marker.count))))
            }
            if doneWithPrompt {
                negative += (negative.isEmpty ? "" : "\n") + line
            } else {
                prompt += (prompt.isEmpty ? "" : "\n") + line
            }
        }
        let parameters = matches.map { key, value -> (String, String) in
            let s = value.unicodeScalars
            if s.first == "\"" && s.last == "\"" { return (key, unquote(value)) }
            return (key, value)
        }
        return InfoText(prompt: prompt, negativePrompt: negative, parameters: parameters)
    }

    // MARK: - A1111's parameter set

    /// The parameters A1111 writes for a txt2img image, in its order: Steps, Sampler, Schedule type (when
    /// given), CFG scale, Seed, Size (`WxH`), Model hash and Model (when given), then `extra` as given,
    /// then Lora hashes (`name: hash, ...`, names stripped of `:` and `,` as A1111's Lora extension does;
    /// left out when empty) and Version. CFG scale is written as Python writes a float (7 -> "7.0").
    public static func a1111Parameters(steps: Int, sampler: String, scheduleType: String?, cfgScale: Float,
                                       seed: UInt64, width: Int, height: Int, modelHash: String?,
                                       model: String?, loraHashes: [(String, String)], extra: [(String, String)],
                                       version: String) -> [(String, String)] {
        var p: [(String, String)] = [("Steps", String(steps)), ("Sampler", sampler)]
        if let scheduleType { p.append(("Schedule type", scheduleType)) }
        p.append(("CFG scale", formatFloat(cfgScale)))
        p.append(("Seed", String(seed)))
        p.append(("Size", "\(width)x\(height)"))
        if let modelHash { p.append(("Model hash", modelHash)) }
        if let model { p.append(("Model", model)) }
        p += extra
        if !loraHashes.isEmpty {
            let entries = loraHashes.map { name, hash in
                let alias = String(String.UnicodeScalarView(name.unicodeScalars.filter { $0 != ":" && $0 != "," }))
                return "\(alias): \(hash)"
            }
            p.append(("Lora hashes", entries.joined(separator: ", ")))
        }
        p.append(("Version", version))
        return p
    }

    /// `x` as Python's `repr(float)` writes it, from the shortest digits that give back this Float: at least
    /// one decimal ("7.0", "5.5"), exponent form below 1e-4 or from 1e16 ("1e-05", "1e+16"), "inf", "nan".
    public static func formatFloat(_ x: Float) -> String { pythonRepr(x.description) }

    /// Python's `repr(float)` for a Double (its shortest round-trip digits).
    public static func formatFloat(_ x: Double) -> String { pythonRepr(x.description) }

    /// Re-lays Swift's shortest round-trip `description` ("7.0", "1e-05", "1.5e+08") out by Python's rule:
    /// digits d1d2... with the point after position `point`; exponent form when point <= -4 or point > 16.
    static func pythonRepr(_ description: String) -> String {
        var s = Substring(description)
        var sign = ""
        if s.hasPrefix("-") { sign = "-"; s = s.dropFirst() }
        if s == "inf" || s == "nan" { return s == "nan" ? "nan" : sign + "inf" }
        var exponent = 0
        if let e = s.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(s[s.index(after: e)...]) ?? 0
            s = s[..<e]
        }
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        let integer = parts[0], fraction = parts.count > 1 ? parts[1] : ""
        var digits = Array(integer + fraction)
        var point = integer.count + exponent
        while digits.first == "0" { digits.removeFirst(); point -= 1 }
        while digits.last == "0" { digits.removeLast() }
        if digits.isEmpty { return sign + "0.0" }
        let d = String(digits)
        if point <= -4 || point > 16 {
            let e = point - 1
            let mantissa = digits.count == 1 ? d : "\(digits[0]).\(String(digits[1...]))"
            let magnitude = String(abs(e))
            return sign + mantissa + "e" + (e < 0 ? "-" : "+") + (magnitude.count < 2 ? "0" : "") + magnitude
        }
        if point <= 0 { return sign + "0." + String(repeating: "0", count: -point) + d }
        if point >= digits.count { return sign + d + String(repeating: "0", count: point - digits.count) + ".0" }
        return sign + String(digits[..<point]) + "." + String(digits[point...])
    }

    /// Python's `str.strip()`: removes leading and trailing whitespace (Unicode White_Space plus the
    /// separators U+001C...U+001F that Python also counts).
    static func pythonStrip(_ s: String) -> String {
        func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace || (0x1C...0x1F).contains(c.value) }
        let scalars = s.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }),
              let last = scalars.lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(scalars[first...last])
    }
}
