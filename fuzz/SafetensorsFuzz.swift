// libFuzzer target for the safetensors header parser (SafetensorsHeader.parse + JSONParser).
// Built by fuzz/build.sh into the same module as the library sources, so no imports are needed.
//
// The input is a whole safetensors file. Errors are the expected outcome for most inputs; on
// success every entry is touched and the parser's promises are checked: each tensor's byte range
// lies inside the file (its first and last byte are read, so AddressSanitizer catches a range
// past the end of libFuzzer's exactly-sized buffer) and matches its dtype and shape.

@inline(never)
func blackHole<T>(_ x: T) { withExtendedLifetime(x) {} }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let file = UnsafeRawBufferPointer(start: data, count: size)
    guard let header = try? SafetensorsHeader.parse(file, path: "<fuzz>") else { return 0 }
    var checksum = 0
    var end = 0
    for entry in header.entries {
        let info = entry.info
        checksum &+= info.name.utf8.count &+ info.shape.count &+ info.dtype.bits
        for d in info.shape { checksum &+= d }
        precondition(entry.range.lowerBound == end, "entries must be contiguous and sorted")
        end = entry.range.upperBound
        precondition(elementCount(info.shape).flatMap { info.dtype.byteCount(elements: $0) } == entry.range.count,
                     "byte range does not match dtype and shape")
        let start = header.dataStart + entry.range.lowerBound
        precondition(start >= 8 && header.dataStart + entry.range.upperBound <= size, "range outside the file")
        if !entry.range.isEmpty {
            checksum &+= Int(file[start]) &+ Int(file[header.dataStart + entry.range.upperBound - 1])
        }
    }
    precondition(header.dataStart + end == size, "data must end at the end of the file")
    for (k, v) in header.metadata { checksum &+= k.utf8.count &+ v.utf8.count }
    blackHole(checksum)
    return 0
}
