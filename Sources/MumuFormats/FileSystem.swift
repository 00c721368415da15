import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Small file-system helpers without Foundation.
public func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

public func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}

/// Names in a folder (not recursive, no `.` / `..`), sorted.
public func listDirectory(_ path: String) -> [String] {
    guard let d = opendir(path) else { return [] }
    defer { closedir(d) }
    var names: [String] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
            String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

/// The first bytes of a file (for sniffing its format).
public func readPrefix(_ path: String, count: Int) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: count)
    let n = read(fd, &buf, count)
    return n > 0 ? Array(buf[..<n]) : []
}

/// Size and modification time, for caches keyed by file identity.
public struct FileIdentity: Hashable, Sendable, Codable {
    public var size: Int
    public var mtimeNanoseconds: Int
    public var inode: UInt64
    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        size = Int(st.st_size)
        mtimeNanoseconds = Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec)
        inode = UInt64(st.st_ino)
    }
}

/// The checks every command makes on an output path before any work, so a bad path is reported at once and not
/// after a render, merge or conversion of minutes.
public enum OutputPath {
    /// What the output is: one file (`folder` false), or a folder written whole (a diffusers folder).
    /// Throws when the path exists and `overwrite` is off, when a file output names an existing folder (or a folder
    /// output an existing file) even with `overwrite`, and when the parent folder is missing or not writable.
    public static func check(_ path: String, overwrite: Bool, folder: Bool = false) throws {
        guard !path.isEmpty else { throw FormatError.io(path: path, reason: "the output path is empty") }
        if fileExists(path) {
            if isDirectory(path) != folder {
                throw FormatError.io(path: path, reason: isDirectory(path)
                    ? "is a folder; give a file name for the output"
                    : "is a file; the output is a folder")
            }
            if !overwrite { throw FormatError.io(path: path, reason: "already exists (use --force to overwrite)") }
        }
        let slash = path.lastIndex(of: "/")
        let parent = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        guard isDirectory(parent) else { throw FormatError.io(path: path, reason: "folder '\(parent)' does not exist") }
        guard access(parent, W_OK) == 0 else { throw FormatError.io(path: path, reason: "folder '\(parent)' is not writable") }
    }

    /// Renames a folder built under a temporary name into place (an existing one at `path` is replaced only with
    /// `overwrite`, after the new one is complete).
    public static func moveFolder(_ temporary: String, into path: String, overwrite: Bool) throws {
        if fileExists(path) {
            guard overwrite else { throw FormatError.io(path: path, reason: "appeared while writing; not overwritten (use --force)") }
            let old = temporary + "-old"
            try FileManager.default.moveItem(atPath: path, toPath: old)
            try FileManager.default.moveItem(atPath: temporary, toPath: path)
            try? FileManager.default.removeItem(atPath: old)
        } else {
            try FileManager.default.moveItem(atPath: temporary, toPath: path)
        }
    }
}

extension String {
    /// The message a C function wrote into an error buffer: the bytes before the first NUL (all of them when the
    /// function filled the buffer), as UTF-8 (invalid sequences replaced).
    public init(cMessage buffer: [CChar]) {
        self = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
