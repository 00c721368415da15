import MumuFormats
import MumuSampler

/// One `<image:PATH>` of a prompt made ready for the vision model: the file decoded as the Idefics2 processor
/// sees it (`ImageLoader`), resized to its MUMU size (`MumuImageSize`, PIL's bilinear), rescaled and normalized
/// (`Resample.pixelValues`), with the file's SHA-256 for the infotext.
public struct PreparedImage: Sendable {
    public let path: String
    /// Hex SHA-256 of the file's bytes (the infotext writes its first 12 characters).
    public let sha256: String
    /// The decoded size (after EXIF orientation) and the resized size (multiples of 14).
    public let originalWidth: Int
    public let originalHeight: Int
    public let width: Int
    public let height: Int
    /// [3, height, width], channels first, (x / 255 - 0.5) / 0.5.
    public let pixelValues: [Float]

    /// Patches per row and per column: (height / 14, width / 14). Every patch is real (no padding).
    public var patchGrid: (rows: Int, columns: Int) { (height / MumuImageSize.patch, width / MumuImageSize.patch) }
    /// `<image>` tokens this image gives: one per 14x14 patch.
    public var patchCount: Int { patchGrid.rows * patchGrid.columns }

    public init(path: String, imageSize: Int = MumuImageSize.defaultImageSize, limits: ImageLimits = .default) throws {
        let bytes = try ImageLoader.readFile(path)
        let decoded = try bytes.withUnsafeBytes { try ImageLoader.decode($0, path: path, limits: limits) }
        let resized = try MumuImageSize.resize(decoded, imageSize: imageSize)
        self.path = path
        sha256 = bytes.withUnsafeBytes { Hashing.sha256($0) }
        originalWidth = decoded.width
        originalHeight = decoded.height
        width = resized.width
        height = resized.height
        pixelValues = Resample.pixelValues(resized)
    }
}
