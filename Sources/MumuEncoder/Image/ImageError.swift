/// What can go wrong reading, decoding or resizing an image. Every case names the file.
public enum ImageError: Error, CustomStringConvertible, Equatable {
    /// The file is missing, a directory, unreadable, or larger than the loader reads.
    case unreadable(path: String, reason: String)
    /// The first bytes are neither a PNG signature nor a JPEG SOI marker.
    case notAnImage(path: String)
    /// The header announces more pixels than the limits allow; nothing was decoded.
    case tooLarge(path: String, width: Int, height: Int, limits: ImageLimits)
    /// The data is truncated or corrupt (the decoder's message in `reason`).
    case corrupt(path: String, format: String, reason: String)
    /// A valid file this loader does not handle.
    case unsupported(path: String, reason: String)
    /// A resize to a size that is not positive or beyond the limits.
    case invalidTargetSize(width: Int, height: Int)
    /// A pixel buffer whose length does not match its width and height.
    case invalidPixels(width: Int, height: Int, count: Int)

    public var description: String {
        switch self {
        case let .unreadable(path, reason):
            return "cannot read image \(path): \(reason)"
        case let .notAnImage(path):
            return "\(path) is not a PNG or JPEG image (its first bytes are neither a PNG signature nor a JPEG SOI marker)"
        case let .tooLarge(path, w, h, limits):
            return "image \(path) is \(w)x\(h): over the limit of \(limits.maxSide) pixels a side and "
                + "\(limits.maxPixels) pixels in all; refused before decoding (shrink it first)"
        case let .corrupt(path, format, reason):
            return "image \(path) is not a readable \(format): \(reason)"
        case let .unsupported(path, reason):
            return "image \(path) is not supported: \(reason)"
        case let .invalidTargetSize(w, h):
            return "cannot resize an image to \(w)x\(h): width and height must be positive and within the image limits"
        case let .invalidPixels(w, h, count):
            return "an RGB image of \(w)x\(h) needs \(w * h * 3) bytes, got \(count)"
        }
    }
}

/// How large an image the loader accepts, checked against the file's header before anything is decoded.
public struct ImageLimits: Equatable, Sendable {
    public var maxSide: Int
    public var maxPixels: Int
    /// 16384 pixels a side, 64 Mi pixels (67,108,864: 8192 x 8192) in all.
    public static let `default` = ImageLimits(maxSide: 16384, maxPixels: 64 << 20)
    public init(maxSide: Int, maxPixels: Int) {
        self.maxSide = maxSide
        self.maxPixels = maxPixels
    }
}
