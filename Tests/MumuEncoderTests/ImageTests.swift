import Foundation
import MumuEncoder
import MumuSampler
import XCTest

/// ImageLoader against PIL: every fixture image decodes to the bytes PIL.Image.open -> exif_transpose ->
/// transformers' convert_to_rgb gives (scripts/gen_fixtures_encoder_images.py).
final class ImageTests: XCTestCase {
    func testEveryKindDecodesToPILsPixels() throws {
        let manifest = try EncoderFixtures.json(EncoderFixtures.image("manifest.json"))
        let images = try XCTUnwrap(manifest["images"]?.arrayValue)
        XCTAssertGreaterThanOrEqual(images.count, 28)
        var report = [String]()
        for entry in images {
            let file = try XCTUnwrap(entry["file"]?.stringValue)
            let img = try ImageLoader.load(EncoderFixtures.image(file))
            let expected = try EncoderFixtures.bytes(EncoderFixtures.image(try XCTUnwrap(entry["expected"]?.stringValue)))
            XCTAssertEqual(img.width, entry["width"]?.intValue, file)
            XCTAssertEqual(img.height, entry["height"]?.intValue, file)
            guard img.pixels.count == expected.count else { XCTFail("\(file): size"); continue }
            let maxDiff = zip(img.pixels, expected).map { abs(Int($0) - Int($1)) }.max() ?? 0
            report.append("\(file) \(maxDiff)")
            // Tolerance 0: PNG decoding is lossless and the conversions are PIL's integer arithmetic; JPEG goes
            // through libjpeg-turbo's JDCT_ISLOW + fancy upsampling, which are bit-exact across its versions.
            XCTAssertEqual(maxDiff, 0, "\(file): max difference \(maxDiff) from PIL")
        }
        print("ImageTests max |diff| per file: " + report.joined(separator: ", "))
    }

    func testBadFilesGiveTypedErrorsNamingTheFile() throws {
        let manifest = try EncoderFixtures.json(EncoderFixtures.image("manifest.json"))
        for entry in try XCTUnwrap(manifest["bad"]?.arrayValue) {
            let file = try XCTUnwrap(entry["file"]?.stringValue)
            let kind = try XCTUnwrap(entry["error"]?.stringValue)
            let path = EncoderFixtures.image(file)
            XCTAssertThrowsError(try ImageLoader.load(path), file) { error in
                guard let e = error as? ImageError else { return XCTFail("\(file): \(error)") }
                XCTAssertTrue(e.description.contains(path), "\(file): \(e)")
                if case let .corrupt(_, _, reason) = e {  // the decoder's own message, read out of its C buffer
                    XCTAssertFalse(reason.isEmpty || reason.contains("\0"), "\(file): reason \(reason.debugDescription)")
                }
                switch (kind, e) {
                case ("corrupt", .corrupt), ("notAnImage", .notAnImage), ("tooLarge", .tooLarge), ("unreadable", .unreadable):
                    break
                default:
                    XCTFail("\(file): expected \(kind), got \(e)")
                }
            }
        }
    }

    func testHugeHeaderIsRefusedBeforeDecoding() throws {
        for file in ["huge.png", "huge.jpg"] {
            XCTAssertThrowsError(try ImageLoader.load(EncoderFixtures.image(file))) { error in
                guard case let .tooLarge(_, w, h, _)? = error as? ImageError else { return XCTFail("\(error)") }
                XCTAssertEqual(w, 20000)
                XCTAssertEqual(h, 20000)
            }
        }
        // The limits are the caller's: a 23x17 image is refused at 16 a side and at 300 pixels in all.
        for limits in [ImageLimits(maxSide: 16, maxPixels: 1 << 20), ImageLimits(maxSide: 100, maxPixels: 300)] {
            for file in ["rgb.png", "rgb420.jpg"] {
                XCTAssertThrowsError(try ImageLoader.load(EncoderFixtures.image(file), limits: limits)) { error in
                    guard case .tooLarge? = error as? ImageError else { return XCTFail("\(error)") }
                }
            }
        }
    }

    func testDirectoryAndMissingFile() {
        XCTAssertThrowsError(try ImageLoader.load(EncoderFixtures.root.path)) { error in
            guard case .unreadable? = error as? ImageError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try ImageLoader.load("/nonexistent/dir/x.png")) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/dir/x.png"))
            XCTAssertTrue("\(error)".contains("No such file"))
        }
    }

    func testExifOrientationParser() {
        func block(_ little: Bool, _ entries: [(tag: Int, type: Int, count: Int, value: Int)], ifd: Int = 8) -> [UInt8] {
            func u16(_ v: Int) -> [UInt8] { little ? [UInt8(v & 255), UInt8(v >> 8 & 255)] : [UInt8(v >> 8 & 255), UInt8(v & 255)] }
            func u32(_ v: Int) -> [UInt8] {
                let b = [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)]
                return little ? b.reversed() : b
            }
            var b: [UInt8] = little ? [0x49, 0x49] : [0x4D, 0x4D]
            b += u16(42) + u32(ifd)
            while b.count < ifd { b.append(0) }
            b += u16(entries.count)
            for e in entries {
                b += u16(e.tag) + u16(e.type) + u32(e.count)
                b += e.type == 3 ? u16(e.value) + [0, 0] : u32(e.value)
            }
            return b + u32(0)
        }
        for little in [true, false] {
            for o in 1...8 {
                XCTAssertEqual(ExifOrientation.parse(block(little, [(0x0110, 2, 4, 0), (0x0112, 3, 1, o)])), o)
                XCTAssertEqual(ExifOrientation.parse(Array("Exif\0\0".utf8) + block(little, [(0x0112, 3, 1, o)])), o)
            }
            XCTAssertEqual(ExifOrientation.parse(block(little, [(0x0112, 4, 1, 6)])), 6)
            XCTAssertNil(ExifOrientation.parse(block(little, [(0x0112, 3, 1, 9)])))
            XCTAssertNil(ExifOrientation.parse(block(little, [(0x0112, 3, 2, 6)])))
            XCTAssertNil(ExifOrientation.parse(block(little, [(0x0100, 3, 1, 6)])))
            // An IFD offset past the end, a count running past the end, truncations at every length: nil, no crash.
            var farIFD = block(little, [(0x0112, 3, 1, 6)])
            farIFD[little ? 7 : 4] = 0xF0                      // IFD offset 0xF0000008 / 0xF0000008
            XCTAssertNil(ExifOrientation.parse(farIFD))
            var manyEntries = block(little, [(0x0100, 3, 1, 6)])
            manyEntries[little ? 8 : 9] = 0xFF
            manyEntries[little ? 9 : 8] = 0xFF
            XCTAssertNil(ExifOrientation.parse(manyEntries))
            let good = block(little, [(0x0112, 3, 1, 3)])
            for n in 0..<good.count - 4 { _ = ExifOrientation.parse(Array(good[0..<n])) }
        }
        XCTAssertNil(ExifOrientation.parse([]))
        XCTAssertNil(ExifOrientation.parse(Array("Exif\0\0".utf8)))
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var b = (0..<Int.random(in: 0..<64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if b.count > 4, Bool.random(using: &rng) { b[0] = 0x49; b[1] = 0x49; b[2] = 42; b[3] = 0 }
            if let v = ExifOrientation.parse(b) { XCTAssertTrue((1...8).contains(v)) }
        }
    }

    func testTranspositionsMatchPILsOnAnAsymmetricImage() throws {
        // exif1.jpg is the untransposed image; exifN.jpg holds the same pixels with orientation N. Compared
        // against PIL in testEveryKindDecodesToPILsPixels; here: dimensions swap exactly for 5...8.
        let base = try ImageLoader.load(EncoderFixtures.image("exif1.jpg"))
        for o in 2...8 {
            let img = try ImageLoader.load(EncoderFixtures.image("exif\(o).jpg"))
            XCTAssertEqual(o >= 5 ? [img.height, img.width] : [img.width, img.height], [base.width, base.height], "orientation \(o)")
            XCTAssertEqual(ExifOrientation.apply(o, to: base), img, "orientation \(o)")
        }
    }

    func testDecodeFromMemoryAndRandomCorruptionNeverCrashes() throws {
        for file in ["rgb.png", "rgb420.jpg", "palette_trns.png", "progressive.jpg"] {
            let good = try EncoderFixtures.bytes(EncoderFixtures.image(file))
            var rng = SystemRandomNumberGenerator()
            for trial in 0..<60 {
                var b = good
                if trial % 2 == 0 {
                    b = Array(b[0..<Int.random(in: 0..<b.count, using: &rng)])
                } else {
                    for _ in 0..<4 { b[Int.random(in: 8..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
                }
                // Either an image or an ImageError: never a crash, never another error type.
                do {
                    let img = try b.withUnsafeBytes { try ImageLoader.decode($0, path: "mem:\(file)") }
                    XCTAssertEqual(img.pixels.count, img.width * img.height * 3)
                } catch let e as ImageError {
                    XCTAssertTrue(e.description.contains("mem:\(file)"))
                }
            }
        }
    }
}
