import Foundation

/// The namespace of the f32 CPU kernels. Images are channels-last ([N, H, W, C]) and token sequences
/// [B, T, C], so every convolution and linear layer is one product C[M, N] = A[M, K] · Wᵀ (`DenseWeight`)
/// over rows of channels, and GroupNorm, attention and the residual adds all read contiguous channel rows.
/// `nchw` / `nhwc` convert at the models' edges (latents and images are NCHW there, as in PyTorch).
public enum NN {
    /// Largest im2col buffer conv2d builds at once unless told otherwise, in floats (32 MiB): the output is
    /// done in bands of whole output rows that fit, so a 3x3 convolution at VAE resolution never needs the whole
    /// (H·W) x (9·Cin) matrix (a band is at least one output row, so the buffer is at most
    /// max(budget, Wout·9·Cin) floats).
    public static let defaultIm2colBudget = 8 << 20

    /// 2-D convolution (torch `F.conv2d`, dilation 1, groups 1) of channels-last x [N, H, W, Cin] with a
    /// square kernel: `weight` holds [Cout, k·k·Cin] (`DenseWeight.convWeight` order) and the bias.
    /// Same stride and zero padding on both axes. Returns [N, Hout, Wout, Cout],
    /// Hout = (H + 2 padding - k) / stride + 1.
    public static func conv2d(_ x: Tensor, weight: DenseWeight, kernel: Int, stride: Int = 1, padding: Int = 0,
                              im2colBudget: Int = defaultIm2colBudget) -> Tensor {
        precondition(x.rank == 4, "conv2d wants channels-last x [N, H, W, C], got \(x.shape)")
        let (n, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let hout = (h + 2 * padding - kernel) / stride + 1, wout = (w + 2 * padding - kernel) / stride + 1
        precondition(hout > 0 && wout > 0, "conv2d output would be empty for \(x.shape) and kernel \(kernel)")
        var out = Tensor(uninitialized: [n, hout, wout, weight.rows])
        out.data.withUnsafeMutableBufferPointer { ob in
            conv2d(x, weight: weight, kernel: kernel, stride: stride, padding: padding, into: ob.baseAddress!,
                   accumulate: false, im2colBudget: im2colBudget)
        }
        return out
    }

    /// out += conv2d(x): a residual connection in the same pass (out [N, Hout, Wout, Cout]).
    public static func conv2d(_ x: Tensor, weight: DenseWeight, kernel: Int, stride: Int = 1, padding: Int = 0,
                              addingInto out: inout Tensor, im2colBudget: Int = defaultIm2colBudget) {
        let hout = (x.shape[1] + 2 * padding - kernel) / stride + 1, wout = (x.shape[2] + 2 * padding - kernel) / stride + 1
        precondition(out.shape == [x.shape[0], hout, wout, weight.rows], "conv2d residual \(out.shape) does not match the output of \(x.shape)")
        out.data.withUnsafeMutableBufferPointer { ob in
            conv2d(x, weight: weight, kernel: kernel, stride: stride, padding: padding, into: ob.baseAddress!,
                   accumulate: true, im2colBudget: im2colBudget)
        }
    }

    /// diffusers `Upsample2D`: nearest 2x of x [N, H, W, Cin], then a 3x3 convolution with padding 1:
    /// [N, 2H, 2W, Cout]. The 2x image is never built: the im2col reads it through the index map
    /// (source row = upsampled row / 2).
    public static func conv2dUpsampled(_ x: Tensor, weight: DenseWeight, im2colBudget: Int = defaultIm2colBudget) -> Tensor {
        let (n, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        var out = Tensor(uninitialized: [n, 2 * h, 2 * w, weight.rows])
        out.data.withUnsafeMutableBufferPointer { ob in
            conv2d(x, weight: weight, kernel: 3, stride: 1, pad: 1, outH: 2 * h, outW: 2 * w, upsample: true,
                   into: ob.baseAddress!, accumulate: false, im2colBudget: im2colBudget)
        }
        return out
    }

    /// A convolution with `padTopLeft` zero rows / columns before the image and as many after it as an output of
    /// outH x outW needs (diffusers' VAE encoder downsampling pads (0, 1, 0, 1): `padTopLeft` 0, stride 2).
    public static func conv2d(_ x: Tensor, weight: DenseWeight, kernel: Int, stride: Int, padTopLeft: Int, outH: Int, outW: Int,
                              im2colBudget: Int = defaultIm2colBudget) -> Tensor {
        var out = Tensor(uninitialized: [x.shape[0], outH, outW, weight.rows])
        out.data.withUnsafeMutableBufferPointer { ob in
            conv2d(x, weight: weight, kernel: kernel, stride: stride, pad: padTopLeft, outH: outH, outW: outW, upsample: false,
                   into: ob.baseAddress!, accumulate: false, im2colBudget: im2colBudget)
        }
        return out
    }

    static func conv2d(_ x: Tensor, weight: DenseWeight, kernel: Int, stride: Int, padding: Int,
                       into op: UnsafeMutablePointer<Float>, accumulate: Bool, im2colBudget: Int) {
        let hout = (x.shape[1] + 2 * padding - kernel) / stride + 1, wout = (x.shape[2] + 2 * padding - kernel) / stride + 1
        conv2d(x, weight: weight, kernel: kernel, stride: stride, pad: padding, outH: hout, outW: wout, upsample: false,
               into: op, accumulate: accumulate, im2colBudget: im2colBudget)
    }

    /// The one convolution. Input pixel (iy, ix) of output (oy, ox) and tap (ky, kx) is (oy·stride - pad + ky,
    /// ox·stride - pad + kx) of the (virtual, when `upsample`: nearest 2x) input; outside it reads zeros.
    /// A 1x1 kernel with stride 1 and no padding multiplies x's rows directly; otherwise output rows (over all
    /// samples) are done in bands: the im2col of a band (one row per output pixel: for each (ky, kx) the Cin input
    /// channels) is filled in parallel, then one product.
    static func conv2d(_ x: Tensor, weight: DenseWeight, kernel: Int, stride: Int, pad: Int, outH hout: Int, outW wout: Int,
                       upsample: Bool, into op: UnsafeMutablePointer<Float>, accumulate: Bool, im2colBudget: Int) {
        precondition(x.rank == 4, "conv2d wants channels-last x [N, H, W, C], got \(x.shape)")
        let (n, h, w, cin) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        precondition(kernel >= 1 && stride >= 1 && pad >= 0 && hout > 0 && wout > 0,
                     "conv2d kernel \(kernel) stride \(stride) padding \(pad) output \(hout)x\(wout)")
        precondition(weight.cols == kernel * kernel * cin,
                     "conv2d weight takes \(weight.cols) values per output, a \(kernel)x\(kernel) kernel over \(cin) channels needs \(kernel * kernel * cin)")
        let (vh, vw) = upsample ? (2 * h, 2 * w) : (h, w)
        let shift = upsample ? 1 : 0
        let cout = weight.rows
        x.data.withUnsafeBufferPointer { xb in
            let xp = xb.baseAddress!
            if kernel == 1 && stride == 1 && pad == 0 && !upsample && hout == h && wout == w {
                weight.apply(xp, m: n * h * w, lda: cin, into: op, ldc: cout, accumulate: accumulate)
                return
            }
            let kdim = weight.cols
            let totalRows = n * hout
            let bandRows = max(1, min(totalRows, im2colBudget / max(1, kdim * wout)))
            let col = UnsafeMutablePointer<Float>.allocate(capacity: kdim * bandRows * wout)
            defer { col.deallocate() }
            var r0 = 0
            while r0 < totalRows {
                let rows = min(bandRows, totalRows - r0)
                KernelSupport.parallelChunks(rows * wout, minChunk: max(1, (1 << 14) / kdim)) { pixels in
                    for p in pixels {
                        let row = r0 + p / wout, ox = p % wout
                        let s = row / hout, oy = row % hout
                        var dst = col + p * kdim
                        for ky in 0..<kernel {
                            let iy = oy * stride - pad + ky
                            for kx in 0..<kernel {
                                let ix = ox * stride - pad + kx
                                if iy < 0 || iy >= vh || ix < 0 || ix >= vw {
                                    dst.update(repeating: 0, count: cin)
                                } else {
                                    dst.update(from: xp + ((s * h + (iy >> shift)) * w + (ix >> shift)) * cin, count: cin)
                                }
                                dst += cin
                            }
                        }
                    }
                }
                weight.apply(col, m: rows * wout, lda: kdim, into: op + r0 * wout * cout, ldc: cout, accumulate: accumulate)
                r0 += rows
            }
        }
    }

    /// [N, C, H, W] -> [N, H, W, C].
    public static func nhwc(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4, "nhwc wants [N, C, H, W], got \(x.shape)")
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var out = Tensor(zeros: [n, h, w, c])
        for s in 0..<n { for ch in 0..<c { for p in 0..<(h * w) { out.data[(s * h * w + p) * c + ch] = x.data[(s * c + ch) * h * w + p] } } }
        return out
    }

    /// [N, H, W, C] -> [N, C, H, W].
    public static func nchw(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4, "nchw wants [N, H, W, C], got \(x.shape)")
        let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var out = Tensor(zeros: [n, c, h, w])
        for s in 0..<n { for ch in 0..<c { for p in 0..<(h * w) { out.data[(s * c + ch) * h * w + p] = x.data[(s * h * w + p) * c + ch] } } }
        return out
    }
}
