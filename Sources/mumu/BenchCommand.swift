import ArgumentParser
import Foundation
import MumuFormats

/// Measures the loaders on a real file: header-only inspect, hashing and conversion throughput.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure inspect, hash and convert speed on a file (see docs/benchmarks.md).")

    @Argument(help: "A .safetensors file (e.g. from `mumu synth --arch sdxl-base`).")
    var path: String
    @Option(help: "Where to write the converted copy (deleted afterwards).")
    var scratch: String?
    @Option(help: "Target dtype of the conversion.")
    var dtype = "bf16"
    @Option(help: "Threads.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    func run() throws {
        try runReportingErrors {
            let size = FileIdentity(path: path)?.size ?? 0
            var t = Date()
            let report = try Inspector.inspect(path, hash: false, cache: nil)
            print(String(format: "inspect (header only): %.3f s  (%@, %d tensors)", Date().timeIntervalSince(t),
                         report.detection.architecture ?? "unknown", report.detection.tensorCount))

            t = Date()
            let mapped = try MappedFile(path: path)
            let header = try SafetensorsHeader.parse(mapped.all, path: path)
            let hashes = Hashing.hashes(of: mapped, dataStart: header.dataStart)
            let hashTime = Date().timeIntervalSince(t)
            print(String(format: "hash (sha256 + data sha256, 2 threads): %.2f s, %.2f GB/s  autov2 %@", hashTime,
                         Double(size) / hashTime / 1e9, hashes.autoV2))

            let out = scratch ?? (path + ".bench-\(getpid()).safetensors")
            var converter = ModelConverter(source: try SafetensorsFile(path: path))
            converter.dtype = try parseDType(dtype, allowKeep: false)
            let items = try converter.plan()
            t = Date()
            let writer = try SafetensorsWriter(path: out, tensors: items.map(\.output), metadata: converter.metadata(changesBytes: true), overwrite: true)
            try StreamExecutor.run(converter.jobs(items), into: writer, threads: threads)
            let convertTime = Date().timeIntervalSince(t)
            print(String(format: "convert to %@: %.2f s, %.2f GB/s read", dtype, convertTime, Double(size) / convertTime / 1e9))
            try? FileManager.default.removeItem(atPath: out)
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            print("peak RSS of this process: \(usage.ru_maxrss / 1024) MiB")
        }
    }
}
