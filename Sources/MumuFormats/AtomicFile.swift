import CMumuSystem
import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An output file written under a temporary name in the destination's folder and renamed into
/// place only when complete, so an interrupted or failed run never leaves a half file at the
/// output path. An existing file is refused unless `overwrite` is set. Temporary files are removed
/// on failure, on deinit, and on SIGINT/SIGTERM.
///
/// The data is made durable by one fsync at `commit`. So that this fsync does not wait for gigabytes the page cache
/// held back, the kernel is asked to start writing the file out every `Writeback.stride` bytes written
/// (`Writeback`), while the work goes on.
public final class AtomicFile: @unchecked Sendable {
    public let path: String
    public let temporaryPath: String
    public let fd: Int32
    private let overwrite: Bool
    private var done = false
    private let writeback: Writeback?

    public init(path: String, overwrite: Bool) throws {
        self.path = path
        self.overwrite = overwrite
        try OutputPath.check(path, overwrite: overwrite)
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { $0 == path.startIndex ? "" : String(path[..<$0]) } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let tmp = "\(dir)/.\(base).mumu-partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw FormatError.io(path: path, reason: "cannot create a file in '\(dir)': \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        temporaryPath = tmp
        writeback = Writeback.enabled ? Writeback(fd: fd) : nil
        TemporaryFiles.register(tmp)
    }

    deinit { abort() }

    /// Makes sure `bytes` more fit on the destination's file system and sets the file's final size.
    public func reserve(_ bytes: Int) throws {
        var fs = statvfs()
        if fstatvfs(fd, &fs) == 0 {
            let free = Int(fs.f_bavail) &* Int(fs.f_frsize)
            if free < bytes {
                throw FormatError.io(path: path, reason: "not enough disk space: needs \(formatBytes(bytes)), \(formatBytes(free)) free")
            }
        }
        guard ftruncate(fd, off_t(bytes)) == 0 else {
            throw FormatError.io(path: path, reason: "cannot size the output to \(bytes) bytes: \(String(cString: strerror(errno)))")
        }
    }

    /// Writes all of `bytes` at `offset` (safe to call from several threads for disjoint ranges).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw FormatError.io(path: path, reason: "write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
        writeback?.wrote(bytes.count)
    }

    /// Flushes and renames the file into place.
    public func commit() throws {
        guard !done else { return }
        writeback?.drain()
        if fsync(fd) != 0 {
            throw FormatError.io(path: path, reason: "fsync failed: \(String(cString: strerror(errno)))")
        }
        close(fd)
        done = true
        if !overwrite, access(path, F_OK) == 0 {
            unlink(temporaryPath)
            TemporaryFiles.unregister(temporaryPath)
            throw FormatError.io(path: path, reason: "appeared while writing; not overwritten (use --force)")
        }
        guard rename(temporaryPath, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporaryPath)
            TemporaryFiles.unregister(temporaryPath)
            throw FormatError.io(path: path, reason: "cannot move the finished file into place: \(reason)")
        }
        TemporaryFiles.unregister(temporaryPath)
    }

    /// Removes the temporary file (nothing happens at the output path).
    public func abort() {
        guard !done else { return }
        done = true
        writeback?.drain()
        close(fd)
        unlink(temporaryPath)
        TemporaryFiles.unregister(temporaryPath)
    }
}

/// Starts the kernel's writeback of a file being written every `stride` bytes, on a serial queue of its own (the
/// call can block while the device's queue is full; the writing threads never wait for it). Without it Linux
/// starts writing only when dirty pages pass `dirty_background_ratio` of memory or turn 30 s old, and the final
/// fsync of a multi-gigabyte output then waits for all of them at once (issue 13: `convert` took 26.2 s where the
/// same bytes unsynced took 16.6 s). `MUMU_WRITEBACK=0` turns it off, for comparisons (docs/benchmarks.md).
final class Writeback: @unchecked Sendable {
    static let stride = 64 << 20
    static let enabled = getenv("MUMU_WRITEBACK").map { String(cString: $0) != "0" } ?? true
    private let fd: Int32
    private let queue = DispatchQueue(label: "mumu.writeback")
    private let lock = Mutex()
    private var unrequested = 0
    private var pending = false

    init(fd: Int32) { self.fd = fd }

    /// Counts written bytes; past a stride, asks the kernel (once at a time) to write out what is dirty.
    func wrote(_ bytes: Int) {
        let start: Bool = lock.locked {
            unrequested += bytes
            guard unrequested >= Self.stride, !pending else { return false }
            unrequested = 0
            pending = true
            return true
        }
        guard start else { return }
        queue.async { [self] in
            _ = mumu_start_writeback(fd, 0, 0)  // a hint: failure (ENOSYS, a file system without it) changes nothing
            lock.locked { pending = false }
        }
    }

    /// Waits for a request in flight (before the descriptor is synced or closed).
    func drain() { queue.sync {} }
}

/// Paths of temporary outputs, removed if the process is interrupted (`Interrupt` owns the signals).
enum TemporaryFiles {
    static func register(_ path: String) { _ = mumu_interrupt_register_temporary(path) }
    static func unregister(_ path: String) { mumu_interrupt_unregister_temporary(path) }
}

/// The one owner of SIGINT, SIGTERM and SIGHUP (C: `mumu_interrupt.h`). By default a signal removes the temporary
/// files of outputs being written and exits with 128 + signal. Long work that can stop cleanly runs inside
/// `cooperatively`: there the first signal only raises `requested`, which the work polls between steps (the
/// second signal still exits at once).
public enum Interrupt {
    /// Installs the handlers (done by the first `AtomicFile` or cooperative section anyway).
    public static func install() { mumu_interrupt_install() }

    /// The signal that asked to stop, or nil.
    public static var requested: Int32? {
        let s = mumu_interrupt_requested()
        return s == 0 ? nil : s
    }

    /// Runs `body` with signals turned into the `requested` flag; the flag is lowered again afterwards.
    public static func cooperatively<T>(_ body: () throws -> T) rethrows -> T {
        mumu_interrupt_enter_cooperative()
        defer {
            mumu_interrupt_leave_cooperative()
            mumu_interrupt_clear()
        }
        return try body()
    }
}

/// A plain pthread mutex (Foundation-free, usable from any thread).
public final class Mutex: @unchecked Sendable {
    private var m = pthread_mutex_t()
    public init() { pthread_mutex_init(&m, nil) }
    deinit { pthread_mutex_destroy(&m) }
    public func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&m)
        defer { pthread_mutex_unlock(&m) }
        return try body()
    }
}

/// "6.94 GB" style sizes for messages (decimal units, as file managers show).
public func formatBytes(_ n: Int) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var v = Double(n)
    var u = 0
    while v >= 1000, u < units.count - 1 { v /= 1000; u += 1 }
    if u == 0 { return "\(n) B" }
    let hundredths = Int((v * 100).rounded())
    let frac = hundredths % 100
    return "\(hundredths / 100).\(frac < 10 ? "0" : "")\(frac) \(units[u])"
}
