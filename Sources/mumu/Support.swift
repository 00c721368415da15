import ArgumentParser
import Foundation
import MumuFormats
import MumuMerge
import MumuStyles
import MumuTensor

/// Options shared by commands that write files.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Overwrite an existing output.")
    var force = false
    @Option(name: .long, help: "Worker threads (default: the number of cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(name: .long, help: "No progress bar.")
    var quiet = false
}

/// Turns a library error into a clean exit with the message on stderr.
func runReportingErrors(_ body: () throws -> Void) throws {
    do { try body() } catch let e as FormatError {
        FileHandle.standardError.write(Data("mumu: error: \(e)\n".utf8))
        throw ExitCode(1)
    } catch let e as ConversionError {
        FileHandle.standardError.write(Data("mumu: error: \(e)\n".utf8))
        throw ExitCode(1)
    } catch let e as MergeError {
        FileHandle.standardError.write(Data("mumu: error: \(e)\n".utf8))
        throw ExitCode(1)
    } catch let e as ValidationError {
        throw e   // ArgumentParser prints it with the usage
    } catch let e as ExitCode {
        throw e
    } catch let e as CustomStringConvertible {
        // StyleError, LoraError, LoraExtractError, ...: every library error says what and where.
        FileHandle.standardError.write(Data("mumu: error: \(e)\n".utf8))
        throw ExitCode(1)
    }
}

func warn(_ message: String) {
    FileHandle.standardError.write(Data("mumu: note: \(message)\n".utf8))
}

extension Layout: ExpressibleByArgument {}

/// `--dtype`: a float dtype to write, or `keep` (each tensor's own).
enum OutputDType: String, ExpressibleByArgument, CaseIterable {
    case keep, f16, bf16, f32
    case f8e4m3 = "f8_e4m3", f8e5m2 = "f8_e5m2"

    var dtype: DType? {
        switch self {
        case .keep: return nil
        case .f16: return .f16
        case .bf16: return .bf16
        case .f32: return .f32
        case .f8e4m3: return .f8e4m3
        case .f8e5m2: return .f8e5m2
        }
    }
}

/// "2GB", "500MB", "5GiB", "1000000" -> bytes.
struct ByteSize: ExpressibleByArgument {
    var bytes: Int

    init?(argument text: String) {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Double)] = [("GIB", 1_073_741_824), ("MIB", 1_048_576), ("KIB", 1024), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1)]
        for (suffix, factor) in units where t.hasSuffix(suffix) {
            if let v = Double(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), v > 0 { bytes = Int(v * factor); return }
        }
        if let v = Int(t), v > 0 { bytes = v; return }
        return nil
    }

    static var defaultCompletionKind: CompletionKind { .default }
}

/// Options of commands that report progress or print a summary: `--quiet` silences both (errors and warnings
/// still print on stderr).
struct QuietOption: ParsableArguments {
    @Flag(name: .long, help: "No progress bar and no summary lines (errors and warnings still print).")
    var quiet = false
}

/// The one progress bar: a line on stderr when it is a terminal, for every long job (merge, convert, synth,
/// LoRA extraction, style copies, deltas, materialization, imports) and the sampler steps of a render. Fed by the
/// libraries' progress values.
final class ProgressBar: @unchecked Sendable {
    private let label: String
    private let enabled: Bool
    private let start = Date()
    private let lock = NSLock()
    private var last = Date.distantPast
    private var shown = false
    private var stepLabel = ""
    private var stepStart: Date?

    init(_ label: String, quiet: Bool) {
        self.label = label
        enabled = !quiet && isatty(2) != 0
    }

    /// The merge executor's progress (merge, convert, synth).
    func update(_ p: StreamProgress) { update(WorkProgress(p)) }

    func update(_ p: WorkProgress) {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        let now = Date()
        guard now.timeIntervalSince(last) > 0.1 || p.isFinished else { return }
        last = now
        let elapsed = now.timeIntervalSince(start)
        let fraction = p.total > 0 ? min(1, Double(p.done) / Double(p.total)) : 1
        let eta = fraction > 0 ? elapsed * (1 - fraction) / fraction : 0
        let width = 24
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        var counts: String
        if p.unit == .bytes {
            counts = "\(formatBytes(p.done))/\(formatBytes(p.total))  \(formatBytes(Int(elapsed > 0 ? Double(p.done) / elapsed : 0)))/s"
        } else {
            counts = "\(p.done)/\(p.total) \(p.unit.rawValue)"
            if p.bytesTotal > 0 {
                counts += "  \(formatBytes(p.bytesDone))/\(formatBytes(p.bytesTotal))  \(formatBytes(Int(elapsed > 0 ? Double(p.bytesDone) / elapsed : 0)))/s"
            }
        }
        let line = String(format: "\r%@ [%@] %@  ETA %.0fs ", label, bar, counts, eta)
        FileHandle.standardError.write(Data(line.utf8))
        shown = true
    }

    /// Sampler steps of a render (generate): s/it and ETA; a new render label restarts the clock.
    func step(_ render: String, _ step: Int, _ total: Int) {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        if render != stepLabel || stepStart == nil { stepLabel = render; stepStart = Date() }
        let perStep = Date().timeIntervalSince(stepStart!) / Double(max(step, 1))
        let width = 24, filled = step * width / max(total, 1)
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = String(format: "\r%@ [%@] %d/%d  %.2f s/it  ETA %.0fs ", render, bar, step, total, perStep, perStep * Double(total - step))
        FileHandle.standardError.write(Data(line.utf8))
        shown = true
        if step == total { stepStart = nil }
    }

    /// Erases the bar's line (before a message is printed under it).
    func clear() {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        if shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        shown = false
    }

    /// Ends the bar's line (when one was drawn).
    func finish() {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        if shown { FileHandle.standardError.write(Data("\n".utf8)) }
        shown = false
    }
}
