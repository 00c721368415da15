import MumuSampler

/// PIL's `Image.resize(size, filter)` for 8-bit RGB images, written from Pillow's `libImaging/Resample.c`:
/// two separable passes, each output sample a weighted sum over a window whose support is the filter's scaled by
/// the downscale factor (so downscaling antialiases), weights normalized to sum 1 in double precision
/// (`precompute_coeffs`), then rounded to 22-bit fixed point (`PRECISION_BITS = 32 - 8 - 2`), accumulated in
/// integers from a rounding half and clipped to 0...255 after the shift. A pass whose size does not change is
/// skipped. Order of the passes, as Pillow 13 does it: horizontal first (over only the rows the vertical pass
/// reads), except when the height shrinks by more than twice as many pixels as the width does
/// (`h - th > 2 (w - tw)`, python-pillow#9549, not yet in the Resample.c of Pillow's main branch we read), when
/// the vertical pass runs first. The 8-bit intermediate depends on the order, so it matters to the last bit.
/// The rule was confirmed on 397 random size pairs against the installed Pillow 13.0.0 (scripts' fixtures and
/// ResizeTests check it bit for bit).
public enum Resample {
    public enum Filter: Sendable {
        case box, bilinear, bicubic

        var support: Double {
            switch self {
            case .box: return 0.5
            case .bilinear: return 1
            case .bicubic: return 2
            }
        }

        func weight(_ x: Double) -> Double {
            switch self {
            case .box:
                return x > -0.5 && x <= 0.5 ? 1 : 0
            case .bilinear:
                let a = abs(x)
                return a < 1 ? 1 - a : 0
            case .bicubic:
                let a = -0.5, t = abs(x)
                if t < 1 { return ((a + 2) * t - (a + 3)) * t * t + 1 }
                if t < 2 { return (((t - 5) * t + 8) * t - 4) * a }
                return 0
            }
        }
    }

    static let precisionBits = 32 - 8 - 2

    /// `image` resized to `width` x `height` with `filter` (the Idefics2 image processor's is bilinear).
    public static func resize(_ image: RGBImage, width: Int, height: Int, filter: Filter = .bilinear,
                              limits: ImageLimits = .default) throws -> RGBImage {
        guard width > 0, height > 0, width <= limits.maxSide, height <= limits.maxSide,
              width * height <= limits.maxPixels else {
            throw ImageError.invalidTargetSize(width: width, height: height)
        }
        guard image.width > 0, image.height > 0, image.pixels.count == image.width * image.height * 3 else {
            throw ImageError.invalidPixels(width: image.width, height: image.height, count: image.pixels.count)
        }
        if width == image.width && height == image.height { return image }
        let w = image.width, h = image.height
        if width == w {
            return RGBImage(width: w, height: height, pixels: vertical(image.pixels, width: w, rows: 0,
                            coeffs: coefficients(inSize: h, outSize: height, filter: filter)))
        }
        let horiz = coefficients(inSize: w, outSize: width, filter: filter)
        if height == h {
            return RGBImage(width: width, height: h, pixels: horizontal(image.pixels, width: w, rows: 0..<h, coeffs: horiz))
        }
        let vert = coefficients(inSize: h, outSize: height, filter: filter)
        if height < h && (h - height) > 2 * (w - width) {
            // Pillow 13 (python-pillow#9549): the height is reduced much more than the width, so the vertical
            // pass runs first, over the whole width.
            let temp = vertical(image.pixels, width: w, rows: 0, coeffs: vert)
            return RGBImage(width: width, height: height, pixels: horizontal(temp, width: w, rows: 0..<height, coeffs: horiz))
        }
        // Horizontal pass over the rows the vertical pass reads, then the vertical pass.
        let yFirst = vert.bounds[0]
        let yLast = vert.bounds[2 * (height - 1)] + vert.bounds[2 * (height - 1) + 1]
        let temp = horizontal(image.pixels, width: w, rows: yFirst..<yLast, coeffs: horiz)
        return RGBImage(width: width, height: height, pixels: vertical(temp, width: width, rows: yFirst, coeffs: vert))
    }

    typealias Coefficients = (ksize: Int, bounds: [Int], kk: [Int32])

    /// The horizontal pass over `rows` of an RGB image `width` wide: one output row per input row.
    static func horizontal(_ pixels: [UInt8], width inWidth: Int, rows: Range<Int>, coeffs: Coefficients) -> [UInt8] {
        let outWidth = coeffs.bounds.count / 2
        var out = [UInt8](repeating: 0, count: rows.count * outWidth * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                coeffs.kk.withUnsafeBufferPointer { kk in
                    for (y, row) in rows.enumerated() {
                        let line = row * inWidth * 3
                        for xx in 0..<outWidth {
                            let xmin = coeffs.bounds[2 * xx], xmax = coeffs.bounds[2 * xx + 1]
                            let k = xx * coeffs.ksize
                            var s0 = 1 << (precisionBits - 1), s1 = s0, s2 = s0
                            for x in 0..<xmax {
                                let wgt = Int(kk[k + x]), p = line + (x + xmin) * 3
                                s0 += Int(src[p]) * wgt
                                s1 += Int(src[p + 1]) * wgt
                                s2 += Int(src[p + 2]) * wgt
                            }
                            let o = (y * outWidth + xx) * 3
                            dst[o] = clip8(s0); dst[o + 1] = clip8(s1); dst[o + 2] = clip8(s2)
                        }
                    }
                }
            }
        }
        return out
    }

    /// The vertical pass over an RGB image `width` wide whose first row is input row `rows` (the horizontal
    /// pass may have produced only the rows this pass reads).
    static func vertical(_ pixels: [UInt8], width: Int, rows rowOffset: Int, coeffs: Coefficients) -> [UInt8] {
        let outHeight = coeffs.bounds.count / 2
        var out = [UInt8](repeating: 0, count: width * outHeight * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                coeffs.kk.withUnsafeBufferPointer { kk in
                    for yy in 0..<outHeight {
                        let ymin = coeffs.bounds[2 * yy] - rowOffset, ymax = coeffs.bounds[2 * yy + 1]
                        let k = yy * coeffs.ksize
                        for xx in 0..<width {
                            var s0 = 1 << (precisionBits - 1), s1 = s0, s2 = s0
                            for y in 0..<ymax {
                                let wgt = Int(kk[k + y]), p = ((y + ymin) * width + xx) * 3
                                s0 += Int(src[p]) * wgt
                                s1 += Int(src[p + 1]) * wgt
                                s2 += Int(src[p + 2]) * wgt
                            }
                            let o = (yy * width + xx) * 3
                            dst[o] = clip8(s0); dst[o + 1] = clip8(s1); dst[o + 2] = clip8(s2)
                        }
                    }
                }
            }
        }
        return out
    }

    @inline(__always) static func clip8(_ v: Int) -> UInt8 {
        let s = v >> precisionBits
        return s < 0 ? 0 : s > 255 ? 255 : UInt8(s)
    }

    /// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box (0, inSize): per output sample the first
    /// input index, the count of inputs, and `ksize` fixed-point weights.
    static func coefficients(inSize: Int, outSize: Int, filter: Filter) -> Coefficients {
        let scale = Double(Float(inSize)) / Double(outSize)   // (double)(in1 - in0) / outSize, box in float
        let filterscale = max(scale, 1)
        let support = filter.support * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var bounds = [Int](repeating: 0, count: outSize * 2)
        var kk = [Int32](repeating: 0, count: outSize * ksize)
        var k = [Double](repeating: 0, count: ksize)
        let invFilterscale = 1.0 / filterscale
        let one = Double(1 << precisionBits)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            var ww = 0.0
            var xmin = Int(center - support + 0.5)
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            if xmax > ksize { xmax = ksize }   // cannot happen (support bounds it); keeps the writes in range
            if xmax < 0 { xmax = 0 }
            for x in 0..<ksize { k[x] = 0 }
            for x in 0..<xmax {
                let w = filter.weight((Double(x + xmin) - center + 0.5) * invFilterscale)
                k[x] = w
                ww += w
            }
            if ww != 0 { for x in 0..<xmax { k[x] /= ww } }
            for x in 0..<ksize {
                let v = k[x]
                kk[xx * ksize + x] = Int32(v < 0 ? (-0.5 + v * one).rounded(.towardZero) : (0.5 + v * one).rounded(.towardZero))
            }
            bounds[2 * xx] = xmin
            bounds[2 * xx + 1] = xmax
        }
        return (ksize, bounds, kk)
    }

    /// The image processor's `pixel_values` for one image: each byte rescaled by 1/255 (in double, then f32, as
    /// transformers' `rescale`), then normalized with mean 0.5, std 0.5 (f32). Layout: channels first,
    /// [3, height, width], row-major, as the processor returns it.
    public static func pixelValues(_ image: RGBImage, mean: Float = 0.5, std: Float = 0.5) -> [Float] {
        let hw = image.width * image.height
        var out = [Float](repeating: 0, count: 3 * hw)
        var table = [Float](repeating: 0, count: 256)
        for v in 0..<256 {
            let x = Float(Double(v) * (1.0 / 255.0))
            table[v] = (x - mean) / std
        }
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<hw {
                    dst[i] = table[Int(src[3 * i])]
                    dst[hw + i] = table[Int(src[3 * i + 1])]
                    dst[2 * hw + i] = table[Int(src[3 * i + 2])]
                }
            }
        }
        return out
    }
}

/// MUMU's image size: the longer edge resized to `imageSize` (a multiple of 14), the shorter edge by the same
/// factor, rounded to the nearest multiple of 14 (halves round up), at least 14. One token per 14x14 patch.
public enum MumuImageSize {
    public static let patch = 14
    public static let defaultImageSize = 448

    public enum SizeError: Error, CustomStringConvertible, Equatable {
        case invalidImageSize(Int)
        case invalidImage(width: Int, height: Int)
        public var description: String {
            switch self {
            case let .invalidImageSize(n):
                return "image size \(n) is not a positive multiple of 14 (the encoder's patch size) up to 16384"
            case let .invalidImage(w, h):
                return "cannot size an image of \(w)x\(h)"
            }
        }
    }

    /// The size an image of `width` x `height` is resized to; equal to the input when no resampling is needed.
    public static func target(width: Int, height: Int, imageSize: Int = defaultImageSize) throws -> (width: Int, height: Int) {
        guard imageSize > 0, imageSize % patch == 0, imageSize <= 16384 else { throw SizeError.invalidImageSize(imageSize) }
        guard width > 0, height > 0, width <= 1 << 24, height <= 1 << 24 else {
            throw SizeError.invalidImage(width: width, height: height)
        }
        let long = max(width, height), short = min(width, height)
        // round(short * imageSize / long / 14) in integers, halves up: floor((2 s n + 14 l) / (28 l)).
        let m = max(1, (2 * short * imageSize + patch * long) / (2 * patch * long))
        let s = m * patch
        return width >= height ? (imageSize, s) : (s, imageSize)
    }

    /// Patches (= `<image>` tokens) for an image of that size: (width / 14) * (height / 14) after `target`.
    public static func patchCount(width: Int, height: Int, imageSize: Int = defaultImageSize) throws -> Int {
        let t = try target(width: width, height: height, imageSize: imageSize)
        return (t.width / patch) * (t.height / patch)
    }

    /// The image resized to its MUMU size (returned as is when it is already that size).
    public static func resize(_ image: RGBImage, imageSize: Int = defaultImageSize) throws -> RGBImage {
        let t = try target(width: image.width, height: image.height, imageSize: imageSize)
        return try Resample.resize(image, width: t.width, height: t.height, filter: .bilinear)
    }
}
