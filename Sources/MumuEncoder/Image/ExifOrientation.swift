import MumuSampler

/// The EXIF orientation tag (0x0112) read from a TIFF-structured EXIF block (JPEG APP1 "Exif\0\0" payload,
/// PNG eXIf chunk), and the transposition PIL's `ImageOps.exif_transpose` applies for it.
///
/// The parser is written for hostile input: only IFD0 is read (no IFD chains, no sub-IFDs, so no recursion
/// and no loops), every offset and count is checked against the block's length before use, and anything
/// malformed means "no orientation" (as PIL, an image with a broken EXIF block still loads, untransposed).
public enum ExifOrientation {
    /// The orientation value 1...8 in `exif` (a TIFF header first; a leading "Exif\0\0" is skipped), or nil
    /// when there is none or the block is malformed. Values outside 1...8 are nil (PIL ignores them too).
    public static func parse(_ exif: [UInt8]) -> Int? {
        var base = 0
        if exif.count >= 6, exif[0] == 0x45, exif[1] == 0x78, exif[2] == 0x69, exif[3] == 0x66, exif[4] == 0, exif[5] == 0 {
            base = 6
        }
        let n = exif.count - base
        guard n >= 8 else { return nil }
        let little: Bool
        if exif[base] == 0x49, exif[base + 1] == 0x49 { little = true }        // "II"
        else if exif[base] == 0x4D, exif[base + 1] == 0x4D { little = false }  // "MM"
        else { return nil }
        func u16(_ o: Int) -> Int? {
            guard o >= 0, o <= n - 2 else { return nil }
            let a = Int(exif[base + o]), b = Int(exif[base + o + 1])
            return little ? a | b << 8 : a << 8 | b
        }
        func u32(_ o: Int) -> Int? {
            guard o >= 0, o <= n - 4 else { return nil }
            let b0 = Int(exif[base + o]), b1 = Int(exif[base + o + 1]), b2 = Int(exif[base + o + 2]), b3 = Int(exif[base + o + 3])
            return little ? b0 | b1 << 8 | b2 << 16 | b3 << 24 : b0 << 24 | b1 << 16 | b2 << 8 | b3
        }
        guard u16(2) == 42, let ifd = u32(4), ifd >= 8, let count = u16(ifd) else { return nil }
        // Entries must lie inside the block; a count that runs past the end is cut to what fits.
        let fits = max(0, (n - ifd - 2) / 12)
        for i in 0..<min(count, fits) {
            let e = ifd + 2 + 12 * i
            guard let tag = u16(e), tag == 0x0112, let type = u16(e + 2), let cnt = u32(e + 4), cnt == 1 else { continue }
            let value: Int?
            switch type {
            case 3: value = u16(e + 8)   // SHORT, the standard type
            case 4: value = u32(e + 8)   // LONG
            default: value = nil
            }
            if let v = value, (1...8).contains(v) { return v }
            return nil
        }
        return nil
    }

    /// `image` transposed as `ImageOps.exif_transpose` does for `orientation` (2: mirror left-right,
    /// 3: rotate 180, 4: mirror top-bottom, 5: transpose, 6: rotate 90 clockwise, 7: transverse,
    /// 8: rotate 90 counter-clockwise); 1 or anything else returns the image unchanged.
    public static func apply(_ orientation: Int, to image: RGBImage) -> RGBImage {
        let w = image.width, h = image.height
        guard (2...8).contains(orientation), w > 0, h > 0 else { return image }
        let swaps = orientation >= 5
        let ow = swaps ? h : w, oh = swaps ? w : h
        var out = [UInt8](repeating: 0, count: ow * oh * 3)
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<oh {
                    for x in 0..<ow {
                        let sx: Int, sy: Int
                        switch orientation {
                        case 2: (sx, sy) = (w - 1 - x, y)
                        case 3: (sx, sy) = (w - 1 - x, h - 1 - y)
                        case 4: (sx, sy) = (x, h - 1 - y)
                        case 5: (sx, sy) = (y, x)
                        case 6: (sx, sy) = (y, h - 1 - x)
                        case 7: (sx, sy) = (w - 1 - y, h - 1 - x)
                        default: (sx, sy) = (w - 1 - y, x)   // 8
                        }
                        let s = (sy * w + sx) * 3, d = (y * ow + x) * 3
                        dst[d] = src[s]; dst[d + 1] = src[s + 1]; dst[d + 2] = src[s + 2]
                    }
                }
            }
        }
        return RGBImage(width: ow, height: oh, pixels: out)
    }
}
