import Foundation
import MumuTensor

extension VAE {
    /// Tiled decoding (`--vae-tile`): the latents are decoded in overlapping square tiles and the seams blended,
    /// so the decoder's activations are those of one tile whatever the image size (SDXL's hold 0.5 GB per
    /// 128-channel tensor at 1024x1024, four times that at 2048x2048).
    ///
    /// The semantics are diffusers' `AutoencoderKL.tiled_decode` (docs/generating.md): tiles of `tile` pixels
    /// start every `tile - overlap` pixels (the last ones in a row or column are smaller), each decoded alone; in
    /// row-major order each tile is blended in place with the already blended tile above it (linearly over its
    /// first `overlap` rows) and then with the one to its left (its first `overlap` columns), and keeps its first
    /// `tile - overlap` rows and columns. diffusers' default overlap factor 0.25 is `overlap = tile / 4`; for tiles
    /// whose quarter is a multiple of the VAE's scale (8 for SDXL) the result equals diffusers' to float rounding.
    /// GroupNorm's statistics are then per tile, so a tiled image differs slightly from an untiled one, as in
    /// diffusers. ComfyUI's "VAE Decode (Tiled)" blends with feathered masks instead and gives other pixels.
    public struct Tiling: Equatable, Sendable, CustomStringConvertible {
        /// Side of a tile in pixels.
        public let tile: Int
        /// Pixels each tile shares with the one before it, blended linearly.
        public let overlap: Int

        /// Checks what a CLI or request can check without the VAE: positive multiples of 8, an overlap
        /// (default `tile / 4` rounded down to a multiple of 8) smaller than the tile.
        public init(tile: Int, overlap: Int? = nil) throws {
            guard tile > 0, tile % 8 == 0 else {
                throw DecoderError.input("--vae-tile \(tile): a tile must be a positive multiple of 8 pixels (e.g. 512)")
            }
            let overlap = overlap ?? tile / 4 / 8 * 8
            guard overlap >= 0, overlap % 8 == 0 else {
                throw DecoderError.input("--vae-tile-overlap \(overlap): the overlap must be a multiple of 8 pixels (0 or more)")
            }
            guard overlap < tile else {
                throw DecoderError.input("--vae-tile \(tile) is not larger than its overlap of \(overlap) pixels: tiles would never advance")
            }
            self.tile = tile
            self.overlap = overlap
        }

        public var description: String { "\(tile) px tiles, \(overlap) px overlap" }
    }

    /// Pixels per latent pixel: 2 per upsampling level (8 for SDXL's four levels).
    public var scale: Int { 1 << (config.blockOutChannels.count - 1) }

    /// `decode(latents:)` in tiles; the whole latent at once when it fits one tile (as diffusers). Memory: one
    /// tile's decode, the output image, and one row of decoded tiles for the blending.
    public func decode(latents: Tensor, tiling: Tiling?) throws -> Tensor {
        guard let tiling else { return try decode(latents: latents) }
        let f = scale
        guard tiling.tile % f == 0, tiling.overlap % f == 0 else {
            throw DecoderError.input("--vae-tile \(tiling.tile) / overlap \(tiling.overlap): this VAE (\(path)) decodes \(f) pixels per latent, so both must be multiples of \(f)")
        }
        try checkLatents(latents)
        let (b, h, w) = (latents.shape[0], latents.shape[2], latents.shape[3])
        let tileLatent = tiling.tile / f, stride = (tiling.tile - tiling.overlap) / f, keep = tiling.tile - tiling.overlap
        if h <= tileLatent && w <= tileLatent { return try decode(latents: latents) }

        let oc = config.outChannels
        let (outH, outW) = (h * f, w * f)
        var out = Tensor(zeros: [b, oc, outH, outW])
        var above: [Tensor] = []  // the previous row's tiles, blended
        for i in Swift.stride(from: 0, to: h, by: stride) {
            var row: [Tensor] = []
            for (col, j) in Swift.stride(from: 0, to: w, by: stride).enumerated() {
                var tile = try decode(latents: Self.crop(latents, y: i, x: j, h: min(tileLatent, h - i), w: min(tileLatent, w - j)))
                if i > 0 { Self.blendVertical(from: above[col], into: &tile, extent: tiling.overlap) }
                if let left = row.last { Self.blendHorizontal(from: left, into: &tile, extent: tiling.overlap) }
                Self.paste(tile, into: &out, y: i * f, x: j * f, h: min(keep, tile.shape[2]), w: min(keep, tile.shape[3]))
                row.append(tile)
            }
            above = row
        }
        return out
    }

    /// latents[:, :, y..<y+h, x..<x+w] (NCHW).
    static func crop(_ t: Tensor, y: Int, x: Int, h: Int, w: Int) -> Tensor {
        let (b, c, th, tw) = (t.shape[0], t.shape[1], t.shape[2], t.shape[3])
        var out = Tensor(zeros: [b, c, h, w])
        for plane in 0..<(b * c) {
            for r in 0..<h {
                let src = (plane * th + y + r) * tw + x, dst = (plane * h + r) * w
                for k in 0..<w { out.data[dst + k] = t.data[src + k] }
            }
        }
        return out
    }

    /// diffusers' `blend_v`: the first `extent` rows of `b` move linearly from `a`'s last rows (weight 1 - y/e)
    /// to their own (y/e), e = min(extent, both heights). The weights are rounded to f32 once and the two
    /// products added unfused, as torch's `a * (1 - y / e) + b * (y / e)`.
    static func blendVertical(from a: Tensor, into b: inout Tensor, extent: Int) {
        let (ah, bh, w) = (a.shape[2], b.shape[2], b.shape[3])
        let e = min(ah, bh, extent)
        for plane in 0..<(b.shape[0] * b.shape[1]) {
            for y in 0..<e {
                let (wa, wb) = (Float(1 - Double(y) / Double(e)), Float(Double(y) / Double(e)))
                let src = (plane * ah + ah - e + y) * w, dst = (plane * bh + y) * w
                for x in 0..<w { b.data[dst + x] = Self.mix(a.data[src + x], wa, b.data[dst + x], wb) }
            }
        }
    }

    /// diffusers' `blend_h`: `blendVertical` over the first `extent` columns.
    static func blendHorizontal(from a: Tensor, into b: inout Tensor, extent: Int) {
        let (h, aw, bw) = (b.shape[2], a.shape[3], b.shape[3])
        let e = min(aw, bw, extent)
        for plane in 0..<(b.shape[0] * b.shape[1]) {
            for y in 0..<h {
                let src = (plane * h + y) * aw + aw - e, dst = (plane * h + y) * bw
                for x in 0..<e {
                    let (wa, wb) = (Float(1 - Double(x) / Double(e)), Float(Double(x) / Double(e)))
                    b.data[dst + x] = Self.mix(a.data[src + x], wa, b.data[dst + x], wb)
                }
            }
        }
    }

    @inline(__always)
    private static func mix(_ a: Float, _ wa: Float, _ b: Float, _ wb: Float) -> Float {
        let pa = a * wa, pb = b * wb
        return pa + pb
    }

    /// out[:, :, y..<y+h, x..<x+w] = tile[:, :, 0..<h, 0..<w].
    static func paste(_ tile: Tensor, into out: inout Tensor, y: Int, x: Int, h: Int, w: Int) {
        let (th, tw, oh, ow) = (tile.shape[2], tile.shape[3], out.shape[2], out.shape[3])
        for plane in 0..<(out.shape[0] * out.shape[1]) {
            for r in 0..<h {
                let src = (plane * th + r) * tw, dst = (plane * oh + y + r) * ow + x
                for k in 0..<w { out.data[dst + k] = tile.data[src + k] }
            }
        }
    }
}
