import ArgumentParser
import Foundation
import MumuFormats
import MumuStyles

/// Measurements the benchmark scripts drive (scripts/bench_styles.sh); never part of the tests.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measurements for scripts/bench_*.sh.", subcommands: [StyleApply.self, BenchUNet.self, BenchVAE.self, BenchText.self, Gemm.self, BenchAttention.self])

    struct StyleApply: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "style-apply",
            abstract: "Time loading a checkpoint cold (evicted from the page cache) against resolving and applying a style to it once resident.")
        @Option(help: "The base checkpoint.") var base: String
        @Option(help: "The style to apply.") var style: String
        @Option(help: "Strength (default: the style's).") var strength: Double?
        @OptionGroup var registry: RegistryOptions

        func run() throws {
            try runReportingErrors {
                let evicted = evict(base)
                var t0 = Date()
                let weights = try InMemoryWeights(loading: try ModelFile.open(base).source)
                let load = Date().timeIntervalSince(t0)
                let sha = try HashCache.shared.hashes(of: base).sha256
                // Unmerged first, so its resolve pays for verifying the style's blob (hashed once, then cached).
                t0 = Date()
                let lowRank = try (registry.registry().plugin(style, baseSHA256: sha) as? LowRankStyle)?.lowRankTerms(base: weights)
                let attach = Date().timeIntervalSince(t0)
                t0 = Date()
                let plugin = try registry.registry().plugin(style, baseSHA256: sha)
                let patch = try plugin.apply(to: weights, strength: strength.map(Float.init))
                let apply = Date().timeIntervalSince(t0)
                let patched = patch.originals.count
                t0 = Date()
                try patch.restore(weights)
                let restore = Date().timeIntervalSince(t0)
                if let lowRank {
                    let bytes = lowRank.values.joined().reduce(0) { $0 + 4 * ($1.up.count + $1.down.count) }
                    print(String(format: "resolve + load '%@' as unmerged low-rank terms (applied in the layers, as diffusers/PEFT do): %.3f s (%.1f%% of the load, %d tensors, %@ of f32 factors)",
                                 style, attach, 100 * attach / load, lowRank.count, formatBytes(bytes)))
                }
                print(String(format: "load cold %.2f s (page cache evicted: %@); resolve + merge '%@' into the weights %.3f s (%.1f%% of the load, %d tensors); restore %.3f s",
                             load, evicted ? "yes" : "no", style, apply, 100 * apply / load, patched, restore))
            }
        }

        /// Drops the file's pages from the page cache (POSIX_FADV_DONTNEED), so the next read is cold.
        func evict(_ path: String) -> Bool {
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            fdatasync(fd)
            return posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED)) == 0
        }
    }
}
