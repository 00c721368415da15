// libFuzzer target for MumuEncoder's tokenizer.json reader (SentencePieceBPETokenizer over JSONParser): the
// input is a whole tokenizer.json. A tokenizer that loads then encodes a few strings (ASCII, spaces, an added
// token, characters needing byte fallback), so fuzzed vocabularies and merges reach the BPE loop too.
// Built by fuzz/build.sh into one module with the library sources.

@inline(never)
func blackHole<T>(_ x: T) { withExtendedLifetime(x) {} }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    do {
        let tok = try SentencePieceBPETokenizer(json: bytes, path: "<fuzz>")
        for text in ["", "a b  ab", " a<image>b<fake_token_around_image>", "日本 😀\n\tc", "abababababab"] {
            do {
                let ids = try tok.encode(text)
                precondition(ids.allSatisfy { $0 >= 0 && $0 < 1 << 24 }, "id out of range")
            } catch let e as TokenizerError {
                blackHole(e.description)
            }
        }
    } catch let e as TokenizerError {
        blackHole(e.description)
    } catch {
        preconditionFailure("unexpected error type: \(error)")
    }
    return 0
}
