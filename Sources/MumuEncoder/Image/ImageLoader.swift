import CJPEG
import CPNG
import Foundation
import MumuFormats
import MumuSampler

/// Loads a PNG or JPEG as 8-bit RGB with the pixels `PIL.Image.open(path)` gives after
/// `ImageOps.exif_transpose` and transformers' `convert_to_rgb` (image_transforms.py, the one the Idefics2
/// image processors call): an image with an alpha channel or a transparency chunk is converted to RGBA and
/// alpha-composited onto opaque white with PIL's integer `alpha_composite` arithmetic, everything else is
/// converted to RGB as PIL's `convert("RGB")` does.
///
/// The format is sniffed from the first bytes, not the extension. PNG goes through libpng (palette, gray,
/// gray+alpha, RGB, RGBA, 1/2/4/8/16 bits, interlaced; 16-bit channels keep their high byte as PIL's raw
/// modes do, 16-bit gray is clipped at 255 as PIL's I;16 -> RGB conversion does). JPEG goes through
/// libjpeg(-turbo) with its defaults, as PIL's decoder: JDCT_ISLOW, fancy upsampling; gray and CMYK files are
/// converted as PIL converts "L" and "CMYK" (Adobe-inverted, PIL's "CMYK;I") to RGB.
/// EXIF orientation comes from the JPEG APP1 Exif block or the PNG eXIf chunk.
public enum ImageLoader {
    /// Files larger than this are not read (a 16384 x 16384 PNG is far smaller).
    public static let maxFileBytes = 1 << 30

    public static func load(_ path: String, limits: ImageLimits = .default) throws -> RGBImage {
        let bytes = try readFile(path)
        return try bytes.withUnsafeBytes { try decode($0, path: path, limits: limits) }
    }

    /// Decodes an image held in memory; `path` only names it in errors.
    public static func decode(_ data: UnsafeRawBufferPointer, path: String, limits: ImageLimits = .default) throws -> RGBImage {
        let p = data.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let n = data.count
        if n >= 8, let p, p[0] == 0x89, p[1] == 0x50, p[2] == 0x4E, p[3] == 0x47 {
            return try decodePNG(p, n, path: path, limits: limits)
        }
        if n >= 3, let p, p[0] == 0xFF, p[1] == 0xD8, p[2] == 0xFF {
            return try decodeJPEG(p, n, path: path, limits: limits)
        }
        throw ImageError.notAnImage(path: path)
    }

    // MARK: - PNG

    static func decodePNG(_ p: UnsafePointer<UInt8>, _ n: Int, path: String, limits: ImageLimits) throws -> RGBImage {
        var img = mumu_png_pixels()
        var err = [CChar](repeating: 0, count: 512)
        let rc = mumu_png_decode_pixels(p, n, limits.maxSide, Int64(limits.maxPixels), &img, &err, err.count)
        defer { mumu_png_pixels_free(&img) }
        switch rc {
        case 0: break
        case 2: throw ImageError.notAnImage(path: path)
        case 3: throw ImageError.tooLarge(path: path, width: Int(img.width), height: Int(img.height), limits: limits)
        default: throw ImageError.corrupt(path: path, format: "PNG", reason: String(cMessage: err))
        }
        let w = Int(img.width), h = Int(img.height), c = Int(img.channels)
        guard (1...4).contains(c), let src = img.pixels else {
            throw ImageError.unsupported(path: path, reason: "PNG decoded to \(c) channels")
        }
        let rgb = toRGB(UnsafeBufferPointer(start: src, count: w * h * c), width: w, height: h, channels: c)
        return orient(rgb, exif: img.exif, count: img.exif_len)
    }

    // MARK: - JPEG

    static func decodeJPEG(_ p: UnsafePointer<UInt8>, _ n: Int, path: String, limits: ImageLimits) throws -> RGBImage {
        var img = mumu_jpeg_image()
        var err = [CChar](repeating: 0, count: 512)
        let rc = mumu_jpeg_decode(p, n, limits.maxSide, Int64(limits.maxPixels), &img, &err, err.count)
        defer { mumu_jpeg_image_free(&img) }
        switch rc {
        case 0: break
        case 2: throw ImageError.notAnImage(path: path)
        case 3: throw ImageError.tooLarge(path: path, width: Int(img.width), height: Int(img.height), limits: limits)
        default: throw ImageError.corrupt(path: path, format: "JPEG", reason: String(cMessage: err))
        }
        let w = Int(img.width), h = Int(img.height), c = Int(img.channels)
        guard let src = img.pixels else { throw ImageError.corrupt(path: path, format: "JPEG", reason: "no pixels") }
        let count = w * h
        var out = [UInt8](repeating: 0, count: count * 3)
        switch c {
        case 1, 3:
            out = toRGB(UnsafeBufferPointer(start: src, count: count * c), width: w, height: h, channels: c).pixels
        case 4:
            // PIL reads 4-component JPEGs with raw mode "CMYK;I" (inverted, "assume adobe conventions"),
            // then cmyk2rgb: nk = 255 - k, out = nk - MULDIV255(c, nk).
            for i in 0..<count {
                let k = 255 - Int(src[4 * i + 3])        // PIL's (inverted) K
                let nk = 255 - k
                for j in 0..<3 {
                    let v = 255 - Int(src[4 * i + j])
                    out[3 * i + j] = UInt8(clamping: nk - mulDiv255(v, nk))
                }
            }
        default:
            throw ImageError.unsupported(path: path, reason: "a JPEG with \(c) components")
        }
        return orient(RGBImage(width: w, height: h, pixels: out), exif: img.exif, count: img.exif_len)
    }

    // MARK: - Conversion to RGB (PIL's arithmetic)

    /// PIL's MULDIV255: (a * b + 128) / 255, rounded, in integers.
    @inline(__always) static func mulDiv255(_ a: Int, _ b: Int) -> Int {
        let t = a * b + 128
        return ((t >> 8) + t) >> 8
    }

    /// One RGBA pixel composited over opaque white as PIL's `alpha_composite` (AlphaComposite.c) does.
    @inline(__always) static func overWhite(_ r: Int, _ g: Int, _ b: Int, _ a: Int) -> (UInt8, UInt8, UInt8) {
        if a == 0 { return (255, 255, 255) }
        let precision = 7
        let blend = 255 * (255 - a)               // dst.a * (255 - src.a), dst.a = 255
        let outa255 = a * 255 + blend
        let coef1 = a * 255 * 255 * (1 << precision) / outa255
        let coef2 = 255 * (1 << precision) - coef1
        @inline(__always) func channel(_ s: Int) -> UInt8 {
            let t = s * coef1 + 255 * coef2 + (0x80 << precision)
            return UInt8(truncatingIfNeeded: (((t >> 8) + t) >> 8) >> precision)
        }
        return (channel(r), channel(g), channel(b))
    }

    /// Gray, gray+alpha, RGB or RGBA (8 bits a channel) to RGB; alpha composited on white.
    static func toRGB(_ src: UnsafeBufferPointer<UInt8>, width: Int, height: Int, channels: Int) -> RGBImage {
        let count = width * height
        var out = [UInt8](repeating: 0, count: count * 3)
        out.withUnsafeMutableBufferPointer { dst in
            switch channels {
            case 1:
                for i in 0..<count { let v = src[i]; dst[3 * i] = v; dst[3 * i + 1] = v; dst[3 * i + 2] = v }
            case 2:
                for i in 0..<count {
                    let v = Int(src[2 * i])
                    let (r, g, b) = overWhite(v, v, v, Int(src[2 * i + 1]))
                    dst[3 * i] = r; dst[3 * i + 1] = g; dst[3 * i + 2] = b
                }
            case 3:
                for i in 0..<count * 3 { dst[i] = src[i] }
            default:
                for i in 0..<count {
                    let (r, g, b) = overWhite(Int(src[4 * i]), Int(src[4 * i + 1]), Int(src[4 * i + 2]), Int(src[4 * i + 3]))
                    dst[3 * i] = r; dst[3 * i + 1] = g; dst[3 * i + 2] = b
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: out)
    }

    static func orient(_ image: RGBImage, exif: UnsafeMutablePointer<UInt8>?, count: Int) -> RGBImage {
        guard let exif, count > 0 else { return image }
        let block = [UInt8](UnsafeBufferPointer(start: exif, count: count))
        guard let o = ExifOrientation.parse(block) else { return image }
        return ExifOrientation.apply(o, to: image)
    }

    // MARK: - Files

    static func readFile(_ path: String) throws -> [UInt8] {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw ImageError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ImageError.unreadable(path: path, reason: "not a regular file") }
        guard Int(st.st_size) <= maxFileBytes else {
            throw ImageError.unreadable(path: path, reason: "\(st.st_size) bytes, over the \(maxFileBytes)-byte limit for an image file")
        }
        guard let f = fopen(path, "rb") else {
            throw ImageError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        defer { fclose(f) }
        var bytes = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let got = fread(&chunk, 1, chunk.count, f)
            if got > 0 { bytes.append(contentsOf: chunk[0..<got]) }
            if bytes.count > maxFileBytes {
                throw ImageError.unreadable(path: path, reason: "over the \(maxFileBytes)-byte limit for an image file")
            }
            if got < chunk.count {
                if ferror(f) != 0 { throw ImageError.unreadable(path: path, reason: "read error") }
                break
            }
        }
        return bytes
    }
}
