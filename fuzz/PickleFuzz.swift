// libFuzzer target for the restricted unpickler (Unpickler, through its `fuzzUnpickle` entry
// point). Built by fuzz/build.sh into the same module as the library sources.
//
// The input is a raw pickle (what torch.save puts in `archive/data.pkl`). Errors, including
// forbidden globals, are the expected outcome for most inputs; only crashes, sanitizer reports,
// timeouts and excessive memory count as findings.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzUnpickle(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
