import CBLAS
import Foundation

/// The namespace of the f32 CPU kernels (NCHW / row-major). GEMMs go through OpenBLAS `cblas_sgemm`,
/// which runs its own threads; the other kernels split their work with `concurrentPerform`.
public enum NN {
    /// Largest im2col buffer conv2d builds at once unless told otherwise, in floats (32 MiB): the output rows
    /// are done in bands that fit, so a 3x3 convolution at VAE resolution never needs the whole Cin*9 x H*W matrix
    /// (a band is at least one output row, so the buffer is at most max(budget, Cin*kh*kw*Wout) floats).
    public static let defaultIm2colBudget = 8 << 20

    /// 2-D convolution (torch `F.conv2d`, dilation 1, groups 1) of x [N, Cin, H, W] with weight
    /// [Cout, Cin, kh, kw], optional bias [Cout], the same stride and zero padding on both axes.
    /// Output [N, Cout, Hout, Wout], Hout = (H + 2 padding - kh) / stride + 1.
    /// 1x1 with stride 1 and no padding is one GEMM per sample (W [Cout, Cin] x X [Cin, H*W]); every other case
    /// goes through im2col in bands of output rows (at most `im2colBudget` floats) and one GEMM per band.
    /// The im2col of a band is filled in parallel over input channels; the GEMMs use OpenBLAS's threads.
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0,
                              im2colBudget: Int = defaultIm2colBudget) -> Tensor {
        precondition(x.rank == 4 && weight.rank == 4, "conv2d wants x [N, C, H, W] and weight [O, C, kh, kw], got \(x.shape), \(weight.shape)")
        let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (cout, wcin, kh, kw) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
        precondition(wcin == cin, "conv2d weight takes \(wcin) channels, input has \(cin)")
        precondition(stride >= 1 && padding >= 0, "conv2d stride \(stride) / padding \(padding)")
        if let b = bias { precondition(b.count == cout, "conv2d bias has \(b.count) elements, want \(cout)") }
        let hout = (h + 2 * padding - kh) / stride + 1, wout = (w + 2 * padding - kw) / stride + 1
        precondition(hout > 0 && wout > 0, "conv2d output would be empty for \(x.shape) and kernel \(kh)x\(kw)")
        var out = Tensor(zeros: [n, cout, hout, wout])
        let plane = hout * wout
        let kdim = cin * kh * kw
        x.data.withUnsafeBufferPointer { xb in
        weight.data.withUnsafeBufferPointer { wb in
        out.data.withUnsafeMutableBufferPointer { ob in
            let xp = xb.baseAddress!, wp = wb.baseAddress!, op = ob.baseAddress!
            // Bias first; the GEMMs then accumulate with beta = 1.
            var beta: Float = 0
            if let b = bias {
                beta = 1
                for s in 0..<n { for o in 0..<cout { (op + (s * cout + o) * plane).update(repeating: b.data[o], count: plane) } }
            }
            if kh == 1 && kw == 1 && stride == 1 && padding == 0 {
                for s in 0..<n {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(cout), Int32(plane), Int32(cin), 1,
                                wp, Int32(cin), xp + s * cin * h * w, Int32(plane), beta, op + s * cout * plane, Int32(plane))
                }
                return
            }
            let bandRows = max(1, min(hout, im2colBudget / max(1, kdim * wout)))
            let col = UnsafeMutablePointer<Float>.allocate(capacity: kdim * bandRows * wout)
            defer { col.deallocate() }
            for s in 0..<n {
                let xs = xp + s * cin * h * w
                var y0 = 0
                while y0 < hout {
                    let rows = min(bandRows, hout - y0)
                    let cols = rows * wout
                    // col[(c, ky, kx), (y - y0, x)] = x[c, y*stride - padding + ky, x*stride - padding + kx] or 0.
                    KernelSupport.parallelChunks(cin, minChunk: max(1, (1 << 14) / max(1, kh * kw * cols))) { chans in
                        for c in chans {
                            let xc = xs + c * h * w
                            for ky in 0..<kh {
                                for kx in 0..<kw {
                                    let dst = col + ((c * kh + ky) * kw + kx) * cols
                                    for yy in 0..<rows {
                                        let iy = (y0 + yy) * stride - padding + ky
                                        let drow = dst + yy * wout
                                        if iy < 0 || iy >= h { drow.update(repeating: 0, count: wout); continue }
                                        let srow = xc + iy * w
                                        if stride == 1 {
                                            // Valid x range: 0 <= ox - padding + kx < w.
                                            let lo = min(wout, max(0, padding - kx))
                                            let hi = max(lo, min(wout, w + padding - kx))
                                            if lo > 0 { drow.update(repeating: 0, count: lo) }
                                            if hi > lo { (drow + lo).update(from: srow + (lo - padding + kx), count: hi - lo) }
                                            if hi < wout { (drow + hi).update(repeating: 0, count: wout - hi) }
                                        } else {
                                            for ox in 0..<wout {
                                                let ix = ox * stride - padding + kx
                                                drow[ox] = (ix >= 0 && ix < w) ? srow[ix] : 0
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(cout), Int32(cols), Int32(kdim), 1,
                                wp, Int32(kdim), col, Int32(cols), beta, op + s * cout * plane + y0 * wout, Int32(plane))
                    y0 += rows
                }
            }
        }
        }
        }
        return out
    }
}
