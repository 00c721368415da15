// libFuzzer target for MumuEncoder's image loader: ImageLoader.decode (format sniffing, the CPNG / CJPEG shims
// over libpng and libjpeg, conversion to RGB, alpha compositing, EXIF orientation from APP1 / eXIf) and, on the
// same bytes taken as a TIFF block, ExifOrientation.parse. A decoded image is also resized (Resample, PIL's
// bilinear) to a small size. Built by fuzz/build.sh into one module with the library sources.
//
// Limits are lowered (512 a side, 2^18 pixels) so one input cannot take seconds or hundreds of MB; the real
// limits are the same code with larger numbers.

@inline(never)
func blackHole<T>(_ x: T) { withExtendedLifetime(x) {} }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let buffer = UnsafeRawBufferPointer(start: data, count: size)
    let limits = ImageLimits(maxSide: 512, maxPixels: 1 << 18)
    if let o = ExifOrientation.parse(Array(buffer)) {
        precondition((1...8).contains(o), "orientation out of range")
    }
    do {
        let img = try ImageLoader.decode(buffer, path: "<fuzz>", limits: limits)
        precondition(img.width > 0 && img.height > 0 && img.pixels.count == img.width * img.height * 3, "bad image")
        let small = try Resample.resize(img, width: 1 + img.width % 7, height: 1 + img.height % 5)
        precondition(small.pixels.count == small.width * small.height * 3, "bad resize")
        blackHole(Resample.pixelValues(small))
    } catch let e as ImageError {
        blackHole(e.description)
    } catch {
        preconditionFailure("unexpected error type: \(error)")
    }
    return 0
}
