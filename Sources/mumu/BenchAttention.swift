import ArgumentParser
import Foundation
import MumuTensor

/// `mumu bench attention`: SDXL's attention shapes at 1024x1024 through the blocked-sgemm attention mumu had
/// before (f32, OpenBLAS-threaded) and through the fused kernel (f32, bf16 and, where the CPU has AVX-512 FP16,
/// f16; jobs over (sample, head, row block)); best of --repeat runs each, GFLOP/s counted as 4·B·Tq·Tk·C. The
/// 16-bit form a bf16 model runs by default is named on the first line.
struct BenchAttention: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Time SDXL's attention shapes (UNet self / cross at 1024x1024, VAE mid-block): old blocked sgemm vs the fused kernel, f32, bf16 and f16.")
    @Option(name: .customLong("repeat"), help: "Runs per variant (the best is reported).") var repeats = 3
    @Option(help: "Only shapes whose name contains this.") var only: String?

    struct Shape { var name: String; var b: Int; var tq: Int; var tk: Int; var c: Int; var heads: Int }
    static let shapes = [
        Shape(name: "unet-self-4096x640", b: 2, tq: 4096, tk: 4096, c: 640, heads: 10),
        Shape(name: "unet-self-1024x1280", b: 2, tq: 1024, tk: 1024, c: 1280, heads: 20),
        Shape(name: "unet-cross-4096x640", b: 2, tq: 4096, tk: 77, c: 640, heads: 10),
        Shape(name: "unet-cross-1024x1280", b: 2, tq: 1024, tk: 77, c: 1280, heads: 20),
        Shape(name: "vae-mid-16384x512", b: 1, tq: 16384, tk: 16384, c: 512, heads: 1),
    ]

    func run() throws {
        let f16 = NN.AttentionPath.defaultPath(.f16)
        print("fused attention paths: f32 \(NN.AttentionPath.defaultPath(.f32).name), bf16 \(NN.AttentionPath.defaultPath(.bf16).name), "
              + "f16 \(f16 != .portable ? f16.name : NN.AttentionPath.avx512.isAvailable(.f16) ? "off (MUMU_GEMM_ISA below avx512fp16)" : "none (no AVX-512 FP16)"); a bf16 model's attention runs \(NN.sixteenBitFormat(keys: 77)) over 77 keys, \(NN.sixteenBitFormat(keys: 4096)) over 4,096; "
              + "\(ProcessInfo.processInfo.activeProcessorCount) threads; best of \(max(1, repeats)) runs")
        for s in Self.shapes where only.map({ s.name.contains($0) }) ?? true {
            let q = BenchUNet.noise([s.b, s.tq, s.c], seed: 1), k = BenchUNet.noise([s.b, s.tk, s.c], seed: 2)
            let v = BenchUNet.noise([s.b, s.tk, s.c], seed: 3)
            let flops = 4.0 * Double(s.b * s.tq * s.tk * s.c)
            func best(_ body: () -> Tensor) -> (Double, Tensor) {
                var t = Double.infinity, out = Tensor(zeros: [0])
                for _ in 0..<max(1, repeats) {
                    let t0 = Date()
                    out = body()
                    t = min(t, Date().timeIntervalSince(t0))
                }
                return (t, out)
            }
            let (old, ref) = best { NN.attentionBlockedSGEMM(q: q, k: k, v: v, heads: s.heads) }
            let (f32, a) = best { NN.attention(q: q, k: k, v: v, heads: s.heads) }
            let (bf16, b) = best { NN.attention(q: q, k: k, v: v, heads: s.heads, precision: .bf16, path: .defaultPath(.bf16)) }
            func diff(_ x: Tensor) -> Double {
                var m: Float = 0, r: Float = 0
                for i in 0..<x.count { m = max(m, abs(x.data[i] - ref.data[i])); r = max(r, abs(ref.data[i])) }
                return Double(m / max(r, .leastNormalMagnitude))
            }
            var line = String(format: "%@ (B %d, Tq %d, Tk %d, %d heads of %d): old sgemm f32 %.1f ms (%.1f GFLOP/s) | fused f32 %.1f ms (%.1f GFLOP/s, %.2fx, max|diff|/max|old| %.1e) | fused bf16 %.1f ms (%.1f GFLOP/s, %.2fx, %.1e)",
                              s.name, s.b, s.tq, s.tk, s.heads, s.c / s.heads, old * 1e3, flops / old / 1e9, f32 * 1e3, flops / f32 / 1e9,
                              old / f32, diff(a), bf16 * 1e3, flops / bf16 / 1e9, old / bf16, diff(b))
            if f16 != .portable {   // the f16 kernel where the CPU runs it (its fallback is scalar)
                let (t, c) = best { NN.attention(q: q, k: k, v: v, heads: s.heads, precision: .f16) }
                line += String(format: " | fused f16 %.1f ms (%.1f GFLOP/s, %.2fx, %.1e)", t * 1e3, flops / t / 1e9, old / t, diff(c))
            }
            print(line)
        }
    }
}
