#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory mapping of a whole file. Tensors read from it point into the mapping, so
/// nothing is copied and pages are read from disk only when touched.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: Int
    /// Start of the mapping (nil for an empty file).
    public let base: UnsafeRawPointer?
    /// Kept open for `read(_:into:)`, which streaming uses instead of touching the mapping.
    private let fd: Int32

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FormatError.io(path: path, reason: "cannot open: \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw FormatError.io(path: path, reason: "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { close(fd); throw FormatError.io(path: path, reason: "not a regular file") }
        self.fd = fd
        size = Int(st.st_size)
        if size == 0 { base = nil; return }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            close(fd)
            throw FormatError.io(path: path, reason: "cannot map \(size) bytes: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
        close(fd)
    }

    /// Copies the bytes of `range` into `buffer` with pread. Streaming passes over large files use this
    /// rather than the mapping: it costs one copy from the page cache and no page-table work, whatever
    /// state the page cache is in.
    public func read(_ range: Range<Int>, into buffer: UnsafeMutableRawPointer) throws {
        precondition(range.lowerBound >= 0 && range.upperBound <= size, "range outside file")
        var done = 0
        while done < range.count {
            let n = pread(fd, buffer + done, range.count - done, off_t(range.lowerBound + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw FormatError.io(path: path, reason: "read failed at byte \(range.lowerBound + done): \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw FormatError.io(path: path, reason: "file shrank while reading (at byte \(range.lowerBound + done))") }
            done += n
        }
    }

    /// The file offset of bytes inside the mapping, or nil when they are not in it.
    public func offset(of pointer: UnsafeRawPointer?) -> Int? {
        guard let base, let pointer, pointer >= base, pointer < base + size else { return nil }
        return pointer - base
    }

    /// The bytes in `range` (which the caller has checked lies inside the file).
    public func bytes(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        precondition(range.lowerBound >= 0 && range.upperBound <= size, "range outside mapped file")
        guard let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }

    /// The whole file.
    public var all: UnsafeRawBufferPointer { bytes(0..<size) }
}
