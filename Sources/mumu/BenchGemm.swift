import ArgumentParser
import CBLAS
import Foundation
import MumuTensor

extension BenchCommand {
    /// OpenBLAS sgemm against the bf16-weight GEMM (BF16Matrix) on the SDXL UNet's GEMM shapes.
    struct Gemm: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gemm",
            abstract: "GFLOP/s of OpenBLAS sgemm and of the bf16-weight GEMM (every path this CPU has) on SDXL's shapes.")
        @Option(help: "Threads for both (default: the active processor count).") var threads: Int?
        @Option(name: .customLong("repeat"), help: "Runs per measurement; the best is reported.") var repeats = 5
        @Option(help: "Only shapes whose M,N,K contain this text, e.g. '512,'.") var only: String?

        /// (M, N, K, what) of the GEMMs of an SDXL UNet step at 1024 px (latent 128), CFG batch 2.
        static let shapes: [(Int, Int, Int, String)] = [
            (8192, 320, 2880, "conv 3x3 level 0, 512 px batch 2"),
            (2048, 640, 640, "attention proj level 1"),
            (2048, 5120, 640, "GEGLU proj level 1"),
            (2048, 640, 2560, "GEGLU out level 1"),
            (512, 1280, 1280, "attention proj level 2"),
            (512, 10240, 1280, "GEGLU proj level 2"),
            (512, 1280, 11520, "conv 3x3 level 2"),
            (154, 2048, 2048, "cross-attention K/V"),
        ]

        func run() throws {
            let threads = max(1, threads ?? ProcessInfo.processInfo.activeProcessorCount)
            openblas_set_num_threads(Int32(threads))
            let isas = BF16Matrix.ISA.allCases.filter { $0.isAvailable && $0.rawValue <= BF16Matrix.defaultISA.rawValue }
            var load = [Double](repeating: 0, count: 3)
            getloadavg(&load, 3)
            print("CPU: \(Self.cpuModel()); 16-bit GEMM paths here: \(isas.map(\.name).joined(separator: ", "))")
            print(String(format: "threads %d, best of %d; OpenBLAS core %@; bf16 default path %@; load average %.2f",
                         threads, repeats, String(cString: openblas_get_corename()), BF16Matrix.isa, load[0]))
            print("GFLOP/s; err = max|C_path - C_sgemm| / max|C_sgemm|")
            var header = "     M     N     K   sgemm"
            for isa in isas { header += String(format: " %11@ (x sgemm)    err", isa.name) }
            print(header)
            var seed: UInt64 = 0x2545_F491_4F6C_DD1D
            func random() -> Float {      // xorshift64*, uniform in [-1, 1)
                seed ^= seed >> 12; seed ^= seed << 25; seed ^= seed >> 27
                return Float(Int64(bitPattern: seed &* 0x2545_F491_4F6C_DD1D) >> 40) / Float(1 << 23)
            }
            for (m, n, k, _) in Self.shapes {
                if let only, !"\(m),\(n),\(k)".contains(only) { continue }
                // 64-byte aligned, as the model's activations will be (see mumu_gemm.h).
                let a = Self.aligned(m * k), c = Self.aligned(m * n), ref = Self.aligned(m * n)
                defer { a.deallocate(); c.deallocate(); ref.deallocate() }
                for i in 0..<(m * k) { a[i] = random() }
                let w = (0..<(n * k)).map { _ in random() * 0.05 }
                let flops = 2 * Double(m) * Double(n) * Double(k)
                let sgemm = best {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k),
                                w, Int32(k), 0, ref, Int32(n))
                }
                let scale = (0..<(m * n)).reduce(Float(0)) { max($0, abs(ref[$1])) }
                var line = String(format: "%6d %5d %5d %7.1f", m, n, k, flops / sgemm / 1e9)
                for isa in isas {
                    let matrix = w.withUnsafeBufferPointer { BF16Matrix(f32: $0.baseAddress!, rows: n, cols: k, isa: isa) }
                    let t = best {
                        matrix.multiply(a, m: m, lda: k, bias: nil, into: c, ldc: n, accumulate: false, threads: threads)
                    }
                    var err: Float = 0
                    for i in 0..<(m * n) { err = max(err, abs(c[i] - ref[i])) }
                    line += String(format: " %11.1f (x%5.2f) %7.1e", flops / t / 1e9, sgemm / t, err / scale)
                }
                print(line)
            }
        }

        /// The first "model name" of /proc/cpuinfo, or "unknown".
        static func cpuModel() -> String {
            guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
                  let line = info.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
                  let colon = line.firstIndex(of: ":") else { return "unknown" }
            return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }

        static func aligned(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutableRawPointer.allocate(byteCount: 4 * count, alignment: 64).bindMemory(to: Float.self, capacity: count)
            p.initialize(repeating: 0, count: count)
            return p
        }

        func best(_ body: () -> Void) -> Double {
            var t = Double.infinity
            for _ in 0..<max(1, repeats) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                body()
                t = min(t, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            }
            return t
        }
    }
}
