import Foundation

/// A prompt with images inside: `a <image:man.jpg> man and his <image:dog.png> dog`.
///
/// Syntax: `<image:` starts an image; its path is everything up to the next `>`, with leading and trailing
/// whitespace removed (so a path cannot contain `>`); an unclosed `<image:` or an empty path is an error.
/// Relative paths are resolved against the working directory given to the parser; absolute paths are kept.
/// Text between images is kept verbatim (no whitespace is trimmed or collapsed): the ids are those of
/// transformers' Idefics2Processor for the same text, whose own rules decide spacing (see `expandedText`).
/// The prompt itself may not contain the tokenizer's `<image>` or `<fake_token_around_image>` tokens literally:
/// they would stand for image embeddings that do not exist.
public struct MultimodalPrompt: Equatable, Sendable {
    public enum Piece: Equatable, Sendable {
        case text(String)
        /// `path` resolved against the working directory; `written` as it appears in the prompt.
        case image(path: String, written: String)
    }

    /// The prompt as given (what goes into the PNG infotext).
    public let source: String
    public let pieces: [Piece]

    /// The resolved paths of the images, in prompt order.
    public var imagePaths: [String] {
        pieces.compactMap { if case let .image(path, _) = $0 { return path }; return nil }
    }

    public var hasImages: Bool { !imagePaths.isEmpty }

    /// The images' paths as written in the prompt, in prompt order (for the infotext).
    public var imageWrittenPaths: [String] {
        pieces.compactMap { if case let .image(_, written) = $0 { return written }; return nil }
    }

    public init(parsing prompt: String, workingDirectory: String = FileManager.default.currentDirectoryPath) throws {
        source = prompt
        var pieces = [Piece]()
        let opener = Array("<image:".unicodeScalars)
        let scalars = Array(prompt.unicodeScalars)
        var text = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            if scalars[i] == "<", i + opener.count <= scalars.count, Array(scalars[i..<(i + opener.count)]) == opener {
                guard let close = scalars[(i + opener.count)...].firstIndex(of: ">") else {
                    throw PromptError.unclosedImage(position: i, prompt: prompt)
                }
                var written = String.UnicodeScalarView()
                written.append(contentsOf: scalars[(i + opener.count)..<close])
                let path = String(written).trimmingCharacters(in: .whitespacesAndNewlines)
                guard !path.isEmpty else { throw PromptError.emptyImagePath(position: i, prompt: prompt) }
                if !text.isEmpty { pieces.append(.text(String(text))); text = String.UnicodeScalarView() }
                pieces.append(.image(path: Self.resolve(path, in: workingDirectory), written: path))
                i = close + 1
            } else {
                text.append(scalars[i])
                i += 1
            }
        }
        if !text.isEmpty { pieces.append(.text(String(text))) }
        self.pieces = pieces
    }

    static func resolve(_ path: String, in directory: String) -> String {
        if path.hasPrefix("/") { return path }
        return URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: directory, isDirectory: true)).standardizedFileURL.path
    }

    /// The text Idefics2Processor (transformers 5, processing_idefics2.py) tokenizes for this prompt when image k
    /// gives `imagePatchCounts[k]` tokens: each image written as `<fake_token_around_image>` + `<image>` x n +
    /// `<fake_token_around_image>`; two fake tokens in a row (adjacent images) merged into one; a space inserted
    /// after a fake token followed by anything but whitespace (Python's `\s`) or `<`.
    public func expandedText(imagePatchCounts: [Int], imageToken: String = "<image>",
                             fakeToken: String = "<fake_token_around_image>") throws -> String {
        let images = imagePaths.count
        guard imagePatchCounts.count == images else {
            throw PromptError.imageCountMismatch(images: images, counts: imagePatchCounts.count)
        }
        var out = ""
        var k = 0
        for piece in pieces {
            switch piece {
            case let .text(t):
                for token in [imageToken, fakeToken] where t.contains(token) {
                    throw PromptError.literalSpecialToken(token: token, prompt: source)
                }
                out += t
            case let .image(path, _):
                let n = imagePatchCounts[k]
                guard n >= 1 else { throw PromptError.invalidPatchCount(image: path, count: n) }
                out += fakeToken + String(repeating: imageToken, count: n) + fakeToken
                k += 1
            }
        }
        out = out.replacingOccurrences(of: fakeToken + fakeToken, with: fakeToken)
        // closing_fake_pattern = fake(?=[^\s<]) -> "fake "
        var result = ""
        var rest = Substring(out)
        while let r = rest.range(of: fakeToken) {
            result += rest[..<r.upperBound]
            rest = rest[r.upperBound...]
            if let next = rest.unicodeScalars.first, next != "<", !Self.isPythonSpace(next) { result += " " }
        }
        result += rest
        return result
    }

    /// Python's `str.isspace()` (what `\s` matches in a str pattern): Unicode White_Space plus U+001C...U+001F.
    static func isPythonSpace(_ u: Unicode.Scalar) -> Bool {
        u.properties.isWhitespace || (0x1C...0x1F).contains(u.value)
    }

    /// The ids for this prompt: BOS (the tokenizer's template), then the expanded text's tokens. The number of
    /// `<image>` ids equals the sum of `imagePatchCounts`, in prompt order.
    public func tokens(tokenizer: SentencePieceBPETokenizer, imagePatchCounts: [Int]) throws -> [Int] {
        let text = try expandedText(imagePatchCounts: imagePatchCounts)
        let ids = try tokenizer.encode(text)
        let expected = imagePatchCounts.reduce(0, +)
        let got = ids.lazy.filter { $0 == tokenizer.imageTokenId }.count
        guard got == expected else { throw PromptError.imageTokenMismatch(expected: expected, got: got) }
        return ids
    }
}

public enum PromptError: Error, CustomStringConvertible, Equatable {
    /// `position`: the offset of `<image:` in Unicode scalars from the start of the prompt.
    case unclosedImage(position: Int, prompt: String)
    case emptyImagePath(position: Int, prompt: String)
    case imageCountMismatch(images: Int, counts: Int)
    case invalidPatchCount(image: String, count: Int)
    case literalSpecialToken(token: String, prompt: String)
    case imageTokenMismatch(expected: Int, got: Int)

    public var description: String {
        switch self {
        case let .unclosedImage(position, prompt):
            return "prompt \(prompt.debugDescription): \"<image:\" at character \(position) has no closing \">\" "
                + "(write images as <image:PATH>)"
        case let .emptyImagePath(position, prompt):
            return "prompt \(prompt.debugDescription): \"<image:>\" at character \(position) names no file"
        case let .imageCountMismatch(images, counts):
            return "the prompt has \(images) image(s) but \(counts) patch count(s) were given"
        case let .invalidPatchCount(image, count):
            return "image \(image) gives \(count) patches; at least one is needed"
        case let .literalSpecialToken(token, prompt):
            return "prompt \(prompt.debugDescription) contains the token \(token) literally; write images as <image:PATH>"
        case let .imageTokenMismatch(expected, got):
            return "the prompt's ids hold \(got) image tokens, expected \(expected)"
        }
    }
}
