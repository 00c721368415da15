import Foundation
import CPNG
import MumuFormats

/// An 8-bit RGB image: `pixels` holds `width * height * 3` bytes, row-major, R G B per pixel, top row first.
public struct RGBImage: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// An image of one gray level (0 black, 255 white).
    public init(width: Int, height: Int, fill: UInt8 = 0) {
        self.init(width: width, height: height,
                  pixels: [UInt8](repeating: fill, count: max(0, width) * max(0, height) * 3))
    }

    /// The image scaled up by an integer factor, each pixel a factor x factor block (nearest neighbour: small
    /// images shown large without blurring them).
    public func enlarged(_ factor: Int) -> RGBImage {
        let k = max(1, factor), w = width * k
        var out = [UInt8](repeating: 0, count: w * height * k * 3)
        for y in 0..<(height * k) {
            for x in 0..<w {
                let src = 3 * ((y / k) * width + x / k), dst = 3 * (y * w + x)
                out[dst] = pixels[src]; out[dst + 1] = pixels[src + 1]; out[dst + 2] = pixels[src + 2]
            }
        }
        return RGBImage(width: w, height: height * k, pixels: out)
    }

    /// Throws unless the size is positive and `pixels` holds exactly width x height x 3 bytes.
    public func validate(_ what: String = "image") throws {
        guard width > 0, height > 0 else {
            throw OutputError.invalidImage("\(what) is \(width)x\(height); both sides must be at least 1 pixel")
        }
        let (count, overflow) = width.multipliedReportingOverflow(by: height)
        let (bytes, overflow3) = count.multipliedReportingOverflow(by: 3)
        guard !overflow, !overflow3 else {
            throw OutputError.invalidImage("\(what) is \(width)x\(height), too large to hold in memory")
        }
        guard pixels.count == bytes else {
            throw OutputError.invalidImage("\(what) is \(width)x\(height) but holds \(pixels.count) bytes of pixels; "
                                           + "RGB needs width x height x 3 = \(bytes)")
        }
    }
}

/// What the output layer refuses to write. File errors (a path that exists, cannot be read, is not a PNG)
/// are `FormatError`s naming the path, as everywhere else in mumu.
public enum OutputError: Error, CustomStringConvertible, Equatable {
    /// Pixels that do not fit the stated size, or a size of zero.
    case invalidImage(String)
    /// A PNG text chunk that cannot be written (bad keyword, NUL in the text).
    case invalidText(String)
    /// libpng failed while encoding.
    case encode(String)
    /// A contact sheet that cannot be made (no tiles, bad column count).
    case contactSheet(String)

    public var description: String {
        switch self {
        case let .invalidImage(reason): return reason
        case let .invalidText(reason): return reason
        case let .encode(reason): return "PNG encoding failed: \(reason)"
        case let .contactSheet(reason): return "contact sheet: \(reason)"
        }
    }
}

/// PNG files through libpng: 8-bit RGB, not interlaced, with text chunks as AUTOMATIC1111 writes them
/// (its infotext goes in a chunk keyed `parameters`; see `InfoText`).
public enum PNG {
    /// Encodes `image` to PNG bytes. Each text entry becomes a tEXt chunk when its value is Latin-1 (every
    /// scalar below U+0100; stored as Latin-1 bytes), else an uncompressed iTXt chunk (UTF-8), the rule
    /// A1111's PIL-based writer follows. Keywords must be 1-79 Latin-1 printable characters without
    /// leading, trailing or doubled spaces (the PNG rule); values must not contain NUL.
    public static func encode(_ image: RGBImage, text: [(key: String, value: String)]) throws -> Data {
        try image.validate()
        guard image.width <= Int(Int32.max), image.height <= Int(Int32.max) else {
            throw OutputError.invalidImage("image is \(image.width)x\(image.height), larger than PNG allows")
        }
        var keys: [UnsafeMutablePointer<CChar>?] = []
        var values: [UnsafeMutablePointer<CChar>?] = []
        var itxt: [Int32] = []
        defer {
            for p in keys { free(p) }
            for p in values { free(p) }
        }
        for (key, value) in text {
            try checkKeyword(key)
            if value.unicodeScalars.contains("\0") {
                throw OutputError.invalidText("text chunk '\(key)': the value contains a NUL character, which PNG text cannot hold")
            }
            keys.append(mallocCString(key.unicodeScalars.map { UInt8($0.value) }))
            if let latin1 = latin1Bytes(value) {
                values.append(mallocCString(latin1))
                itxt.append(0)
            } else {
                values.append(mallocCString(Array(value.utf8)))
                itxt.append(1)
            }
        }
        let constKeys = keys.map { UnsafePointer($0) }
        let constValues = values.map { UnsafePointer($0) }
        var out: UnsafeMutablePointer<UInt8>? = nil
        var outLength = 0
        var err = [CChar](repeating: 0, count: 512)
        let rc = image.pixels.withUnsafeBufferPointer { px in
            mumu_png_encode(px.baseAddress, Int32(image.width), Int32(image.height), Int32(text.count),
                            constKeys, constValues, itxt, &out, &outLength, &err, err.count)
        }
        guard rc == 0, let out else {
            throw OutputError.encode(String(cMessage: err))
        }
        return Data(bytesNoCopy: out, count: outLength, deallocator: .free)
    }

    /// Encodes and writes a PNG to `path` through `AtomicFile`: the bytes go to a temporary file in the same
    /// folder, renamed into place only when complete, so an interrupted run never leaves a half PNG. An
    /// existing file is refused (a `FormatError` naming the path and `--force`) unless `overwrite` is set.
    public static func write(_ image: RGBImage, text: [(key: String, value: String)], to path: String,
                             overwrite: Bool) throws {
        // Refuse an existing file before spending time on encoding.
        let file = try AtomicFile(path: path, overwrite: overwrite)
        do {
            let data = try encode(image, text: text)
            try data.withUnsafeBytes { try file.write($0, at: 0) }
            try file.commit()
        } catch {
            file.abort()
            throw error
        }
    }

    /// Reads any PNG (palette, gray, 16-bit, with alpha, interlaced) as 8-bit RGB (alpha is dropped, not
    /// composited; 16-bit channels reduced as PIL opens them) with its text chunks: tEXt and zTXt decoded as
    /// Latin-1, iTXt as UTF-8. A keyword that occurs twice keeps its last value (as PIL's `info` does). Errors are
    /// `FormatError`s naming the file. The decoder is the one the encoder's image loader uses (CPNG's
    /// `mumu_png_decode_pixels`: chunk lengths checked against the file before libpng allocates them), here with
    /// a limit of 2^30 pixels.
    public static func read(_ path: String) throws -> (image: RGBImage, text: [String: String]) {
        let file = try MappedFile(path: path)
        var decoded = mumu_png_pixels()
        var err = [CChar](repeating: 0, count: 512)
        let rc = withExtendedLifetime(file) {
            mumu_png_decode_pixels(file.base?.assumingMemoryBound(to: UInt8.self), file.size, Int.max, 1 << 30, &decoded, &err, err.count)
        }
        defer { mumu_png_pixels_free(&decoded) }
        guard rc == 0 else {
            let reason = rc == 3 ? "image too large (\(decoded.width) x \(decoded.height), over 2^30 pixels)" : String(cMessage: err)
            throw FormatError.malformed(path: path, reason: rc == 1 ? "not a readable PNG: \(reason)" : reason)
        }
        let width = Int(decoded.width), height = Int(decoded.height), channels = Int(decoded.channels)
        guard (1...4).contains(channels) else { throw FormatError.malformed(path: path, reason: "PNG decoded to \(channels) channels") }
        let n = width * height
        let src = UnsafeBufferPointer(start: decoded.pixels, count: n * channels)
        let pixels = [UInt8](unsafeUninitializedCapacity: n * 3) { out, filled in
            for i in 0..<n {
                let p = i * channels
                let (r, g, b) = channels < 3 ? (src[p], src[p], src[p]) : (src[p], src[p + 1], src[p + 2])
                out[3 * i] = r; out[3 * i + 1] = g; out[3 * i + 2] = b
            }
            filled = n * 3
        }
        var text: [String: String] = [:]
        for i in 0..<Int(decoded.ntext) {
            let key = latin1String(UnsafeRawPointer(decoded.keys![i]!), strlen(decoded.keys![i]!))
            let bytes = UnsafeRawPointer(decoded.values![i]!)
            let count = decoded.value_lengths![i]
            if decoded.is_utf8![i] != 0 {
                text[key] = String(decoding: UnsafeRawBufferPointer(start: bytes, count: count), as: UTF8.self)
            } else {
                text[key] = latin1String(bytes, count)
            }
        }
        return (RGBImage(width: width, height: height, pixels: pixels), text)
    }

    // MARK: - Helpers

    /// The PNG keyword rule (spec section 11.3.4.2): 1-79 bytes of printable Latin-1 (32-126, 161-255),
    /// no leading, trailing or consecutive spaces. libpng would otherwise rewrite or reject the keyword.
    static func checkKeyword(_ key: String) throws {
        let scalars = Array(key.unicodeScalars)
        func refuse(_ why: String) -> OutputError {
            .invalidText("PNG text keyword '\(key)' \(why)")
        }
        guard (1...79).contains(scalars.count) else { throw refuse("must be 1 to 79 characters long") }
        for s in scalars where !((32...126).contains(s.value) || (161...255).contains(s.value)) {
            throw refuse("contains '\(s.escaped(asASCII: true))'; keywords are printable Latin-1 only")
        }
        if scalars.first == " " || scalars.last == " " { throw refuse("starts or ends with a space") }
        if zip(scalars, scalars.dropFirst()).contains(where: { $0 == " " && $1 == " " }) {
            throw refuse("contains two spaces in a row")
        }
    }

    /// The Latin-1 bytes of `s`, or nil when a scalar is U+0100 or above.
    static func latin1Bytes(_ s: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.unicodeScalars.count)
        for scalar in s.unicodeScalars {
            guard scalar.value < 256 else { return nil }
            bytes.append(UInt8(scalar.value))
        }
        return bytes
    }

    static func latin1String(_ bytes: UnsafeRawPointer, _ count: Int) -> String {
        var s = String.UnicodeScalarView()
        for b in UnsafeRawBufferPointer(start: bytes, count: count) { s.append(Unicode.Scalar(b)) }
        return String(s)
    }

    private static func mallocCString(_ bytes: [UInt8]) -> UnsafeMutablePointer<CChar> {
        let p = malloc(bytes.count + 1)!.bindMemory(to: CChar.self, capacity: bytes.count + 1)
        bytes.withUnsafeBytes { raw in
            if raw.count > 0 { memcpy(p, raw.baseAddress!, raw.count) }
        }
        p[bytes.count] = 0
        return p
    }
}
