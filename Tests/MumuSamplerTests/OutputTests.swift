import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuSampler

/// The output layer: PNG files with A1111 text chunks, the infotext format, contact sheets.
final class OutputTests: XCTestCase {
    // MARK: - Helpers

    /// A w x h image whose every byte differs from its neighbours, so a shifted or swapped row shows.
    private func pattern(_ w: Int, _ h: Int, seed: Int = 0) -> RGBImage {
        RGBImage(width: w, height: h, pixels: (0..<(w * h * 3)).map { UInt8(truncatingIfNeeded: $0 * 37 + seed * 101 + ($0 / 3) % 7) })
    }

    private func temporaryDirectory() throws -> URL {
        let url = try makeTemporaryURL("decoder")
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// The chunks of a PNG stream: type, and for text chunks the keyword (bytes before the first NUL).
    private func chunks(_ png: Data) -> [(type: String, keyword: String?)] {
        let bytes = [UInt8](png)
        var out: [(String, String?)] = []
        var at = 8
        while at + 8 <= bytes.count {
            let length = bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) }
            let type = String(decoding: bytes[at + 4..<at + 8], as: UTF8.self)
            let body = bytes[min(at + 8, bytes.count)..<min(at + 8 + length, bytes.count)]
            let keyword = ["tEXt", "iTXt", "zTXt"].contains(type)
                ? String(decoding: body.prefix(while: { $0 != 0 }), as: UTF8.self) : nil
            out.append((type, keyword))
            at += 12 + length
        }
        return out
    }

    private func assertThrowsMessage(_ body: @autoclosure () throws -> Any, contains parts: [String],
                                     file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try body()
            XCTFail("expected an error", file: file, line: line)
        } catch {
            let message = String(describing: error)
            for part in parts {
                XCTAssertTrue(message.contains(part), "'\(message)' does not mention '\(part)'", file: file, line: line)
            }
        }
    }

    // MARK: - PNG

    func testPNGRoundTripWithLatin1TextUsesTEXt() throws {
        let image = pattern(7, 5)
        let text = [(key: "parameters", value: "a café, at night\nSteps: 20, Seed: 1"), (key: "Software", value: "mumu")]
        let data = try PNG.encode(image, text: text)

        // 8-bit RGB, not interlaced; both texts as tEXt before the image data.
        XCTAssertEqual([UInt8](data.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let ihdr = [UInt8](data[16..<29])
        XCTAssertEqual(Array(ihdr[0..<8]), [0, 0, 0, 7, 0, 0, 0, 5])
        XCTAssertEqual(Array(ihdr[8..<13]), [8, 2, 0, 0, 0], "bit depth 8, color type RGB, no interlace")
        let list = chunks(data)
        XCTAssertEqual(list.first?.type, "IHDR")
        XCTAssertEqual(list.last?.type, "IEND")
        let texts = list.filter { $0.keyword != nil }
        XCTAssertEqual(texts.map(\.type), ["tEXt", "tEXt"])
        XCTAssertEqual(texts.map(\.keyword), ["parameters", "Software"])
        XCTAssertLessThan(list.firstIndex { $0.type == "tEXt" }!, list.firstIndex { $0.type == "IDAT" }!)
        // Latin-1 on disk: "é" is the one byte 0xE9, not UTF-8's C3 A9.
        XCTAssertNotNil(data.range(of: Data("caf".utf8) + Data([0xE9])))

        let path = try temporaryDirectory().appendingPathComponent("latin1.png").path
        try data.write(to: URL(fileURLWithPath: path))
        let back = try PNG.read(path)
        XCTAssertEqual(back.image, image)
        XCTAssertEqual(back.text, ["parameters": "a café, at night\nSteps: 20, Seed: 1", "Software": "mumu"])
    }

    func testPNGRoundTripWithNonLatin1TextUsesITXt() throws {
        let image = pattern(4, 9, seed: 3)
        let path = try temporaryDirectory().appendingPathComponent("cat.png").path
        try PNG.write(image, text: [(key: "parameters", value: "猫 in the rain"), (key: "Title", value: "plain")],
                      to: path, overwrite: false)
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let texts = chunks(data).filter { $0.keyword != nil }
        XCTAssertEqual(texts.map(\.type), ["iTXt", "tEXt"], "only the non-Latin-1 value goes to iTXt")
        XCTAssertEqual(texts.first?.keyword, "parameters")
        XCTAssertNotNil(data.range(of: Data("猫 in the rain".utf8)), "iTXt text is stored as UTF-8, uncompressed")

        let back = try PNG.read(path)
        XCTAssertEqual(back.image, image)
        XCTAssertEqual(back.text["parameters"], "猫 in the rain")
        XCTAssertEqual(back.text["Title"], "plain")
    }

    func testInfotextSurvivesAPNGFile() throws {
        let info = InfoText(prompt: "a lighthouse, dusk", negativePrompt: "blurry",
                            parameters: InfoText.a1111Parameters(
                                steps: 30, sampler: "DPM++ 2M", scheduleType: "Karras", cfgScale: 6, seed: 7,
                                width: 8, height: 8, modelHash: "0123456789", model: "mix", loraHashes: [],
                                extra: [], version: "mumu"))
        let path = try temporaryDirectory().appendingPathComponent("info.png").path
        try PNG.write(pattern(8, 8), text: [(key: InfoText.pngKey, value: info.render())], to: path, overwrite: false)
        let text = try PNG.read(path).text
        XCTAssertEqual(text.count, 1)
        XCTAssertEqual(InfoText.parse(try XCTUnwrap(text["parameters"])), info)
    }

    func testWriteRefusesAnExistingFileAndLeavesNoTemporaryFile() throws {
        let dir = try temporaryDirectory()
        let path = dir.appendingPathComponent("out.png").path
        let first = pattern(3, 3, seed: 1), second = pattern(5, 2, seed: 2)
        try PNG.write(first, text: [], to: path, overwrite: false)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))

        assertThrowsMessage(try PNG.write(second, text: [], to: path, overwrite: false), contains: [path, "--force"])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before, "the existing file is untouched")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["out.png"],
                       "no temporary file is left behind")

        // A failed encode (wrong pixel count) leaves nothing either.
        let broken = RGBImage(width: 4, height: 4, pixels: [1, 2, 3])
        assertThrowsMessage(try PNG.write(broken, text: [], to: dir.appendingPathComponent("b.png").path,
                                          overwrite: false), contains: ["4x4", "48"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["out.png"])

        try PNG.write(second, text: [], to: path, overwrite: true)
        XCTAssertEqual(try PNG.read(path).image, second)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["out.png"])
    }

    func testReadErrorsNameTheFile() throws {
        let dir = try temporaryDirectory()
        let notPNG = dir.appendingPathComponent("notes.png").path
        try Data("just some text, not an image".utf8).write(to: URL(fileURLWithPath: notPNG))
        assertThrowsMessage(try PNG.read(notPNG), contains: [notPNG, "not a PNG"])

        let missing = dir.appendingPathComponent("missing.png").path
        assertThrowsMessage(try PNG.read(missing), contains: [missing])

        let truncated = dir.appendingPathComponent("truncated.png").path
        let whole = try PNG.encode(pattern(16, 16), text: [])
        try whole.prefix(whole.count - 30).write(to: URL(fileURLWithPath: truncated))
        assertThrowsMessage(try PNG.read(truncated), contains: [truncated])
    }

    /// PNG.read shares the encoder's PNG decoder: every opaque kind of PNG (RGB, gray, palette, 1-, 4- and
    /// 16-bit) reads as the RGB pixels PIL gives (scripts/gen_fixtures_encoder_images.py; 16-bit gray clips at
    /// 255 as PIL's I;16 conversion does, where the former reader kept the high byte).
    func testReadMatchesPILOnEveryOpaqueKind() throws {
        let dir = testsFolder.appendingPathComponent("MumuEncoderTests/Fixtures/images")
        for name in ["rgb.png", "gray.png", "palette.png", "bilevel.png", "gray4.png", "gray16.png", "rgb16.png"] {
            let image = try PNG.read(dir.appendingPathComponent(name).path).image
            let want = try readFile(dir.appendingPathComponent(name + ".rgb").path)
            XCTAssertEqual(image.pixels, want, name)
        }
    }

    func testEncodeRefusesBadImagesAndKeywords() {
        XCTAssertThrowsError(try PNG.encode(RGBImage(width: 2, height: 2, pixels: [0, 0, 0]), text: [])) {
            XCTAssertEqual($0 as? OutputError,
                           .invalidImage("image is 2x2 but holds 3 bytes of pixels; RGB needs width x height x 3 = 12"))
        }
        XCTAssertThrowsError(try PNG.encode(RGBImage(width: 0, height: 3, pixels: []), text: []))
        assertThrowsMessage(try PNG.encode(pattern(1, 1), text: [(key: "", value: "x")]), contains: ["keyword"])
        assertThrowsMessage(try PNG.encode(pattern(1, 1), text: [(key: "猫", value: "x")]), contains: ["Latin-1"])
        assertThrowsMessage(try PNG.encode(pattern(1, 1), text: [(key: "k", value: "a\u{0}b")]), contains: ["NUL"])
    }

    // MARK: - Infotext

    /// A realistic SDXL infotext: commas and a newline in the prompt, a negative prompt, two LoRAs, a model
    /// name with a colon, an extra parameter; rendered as A1111 writes it and parsed back unchanged.
    func testInfotextRenderAndParseRoundTrip() throws {
        let parameters = InfoText.a1111Parameters(
            steps: 30, sampler: "DPM++ 2M", scheduleType: "Karras", cfgScale: 5.5, seed: 1_234_567_890,
            width: 1024, height: 768, modelHash: "31e35c80fc", model: "juggernautXL: v9 (RunDiffusion)",
            loraHashes: [("add-detail-xl", "0d9bd1b873a7"), ("pixel:art,xl", "4cf1a1b2c3d4")],
            extra: [("Clip skip", "2")], version: "mumu 0.1")
        let info = InfoText(prompt: "masterpiece, a cat sitting on a windowsill, (rain:1.2)\n<lora:add-detail-xl:0.8>, \"soft\" light",
                            negativePrompt: "blurry, lowres,\nbad anatomy", parameters: parameters)
        let text = info.render()
        let lines = text.components(separatedBy: "\n")
        XCTAssertEqual(lines.count, 5)
        XCTAssertEqual(lines[2], "Negative prompt: blurry, lowres,")
        XCTAssertEqual(lines[4], #"Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.5, Seed: 1234567890, "#
                       + #"Size: 1024x768, Model hash: 31e35c80fc, Model: "juggernautXL: v9 (RunDiffusion)", Clip skip: 2, "#
                       + #"Lora hashes: "add-detail-xl: 0d9bd1b873a7, pixelartxl: 4cf1a1b2c3d4", Version: mumu 0.1"#)

        let parsed = InfoText.parse(text)
        XCTAssertEqual(parsed, info)
        XCTAssertEqual(parsed["Model"], "juggernautXL: v9 (RunDiffusion)")
        XCTAssertEqual(parsed["Lora hashes"], "add-detail-xl: 0d9bd1b873a7, pixelartxl: 4cf1a1b2c3d4")
    }

    func testParseRealA1111Infotext() {
        let text = "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.0, "
            + "Seed: 42, Size: 512x512, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Version: v1.10.1"
        let info = InfoText.parse(text)
        XCTAssertEqual(info.prompt, "a cat")
        XCTAssertEqual(info.negativePrompt, "blurry")
        XCTAssertEqual(info.parameters.map(\.0), ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size",
                                                  "Model hash", "Model", "Version"])
        XCTAssertEqual(info.parameters.map(\.1), ["20", "Euler a", "Karras", "7.0", "42", "512x512", "31e35c80fc",
                                                  "sd_xl_base_1.0", "v1.10.1"])
        XCTAssertEqual(info["Sampler"], "Euler a")
        XCTAssertNil(info["Hires upscale"])
        XCTAssertEqual(info.render(), text, "A1111's own text renders back byte for byte")
    }

    func testParseFollowsA1111Rules() {
        // A last line with fewer than 3 `key: value` matches is prompt, not parameters.
        let short = InfoText.parse("a dog\nstyle: oil, mood: calm")
        XCTAssertEqual(short.prompt, "a dog\nstyle: oil, mood: calm")
        XCTAssertTrue(short.parameters.isEmpty)

        // Surrounding whitespace is stripped per line, the negative prompt runs over several lines,
        // quoted values are JSON-decoded, other values kept as written.
        let info = InfoText.parse("  first line  \nsecond\nNegative prompt:   bad,  \n  worse\n"
                                  + #"Steps: 4, Note: "line\nbreak \"q\" \u00e9", Size: 64x64, Odd: "not json \x""#)
        XCTAssertEqual(info.prompt, "first line\nsecond")
        XCTAssertEqual(info.negativePrompt, "bad,\nworse")
        XCTAssertEqual(info["Note"], "line\nbreak \"q\" é")
        XCTAssertEqual(info["Odd"], #""not json \x""#, "invalid JSON stays as written, as A1111's unquote does")
        XCTAssertEqual(info.parameters.count, 4)

        // No negative prompt: the line is left out when rendering.
        let plain = InfoText(prompt: "p", parameters: [("Steps", "1"), ("Seed", "2"), ("Size", "8x8")])
        XCTAssertEqual(plain.render(), "p\nSteps: 1, Seed: 2, Size: 8x8")
        XCTAssertEqual(InfoText.parse(plain.render()), plain)
    }

    func testQuoteIsPythonJSONDumps() {
        XCTAssertEqual(InfoText.quote("Euler a"), "Euler a", "no `,` `:` or newline: unquoted")
        XCTAssertEqual(InfoText.quote("a: b"), #""a: b""#)
        XCTAssertEqual(InfoText.quote("tab\t, \"q\" \\ é 猫\n\u{1}"), #""tab\t, \"q\" \\ é 猫\n\u0001""#)
        XCTAssertEqual(InfoText.unquote(#""tab\t, \"q\" \\ é 猫\n\u0001""#), "tab\t, \"q\" \\ é 猫\n\u{1}")
        XCTAssertEqual(InfoText.unquote(#""\ud83d\ude00 \/""#), "😀 /", "surrogate pairs and \\/ decode as in Python")
        XCTAssertEqual(InfoText.unquote(#""a" "b""#), #""a" "b""#, "extra data after the string: left as is")
    }

    func testA1111ParameterOrderAndFloatFormat() {
        let p = InfoText.a1111Parameters(steps: 20, sampler: "Euler", scheduleType: nil, cfgScale: 7, seed: 3,
                                         width: 832, height: 1216, modelHash: nil, model: nil,
                                         loraHashes: [("l", "abc")], extra: [("Denoising strength", "0.4")],
                                         version: "v")
        XCTAssertEqual(p.map(\.0), ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Denoising strength",
                                    "Lora hashes", "Version"])
        XCTAssertEqual(p.map(\.1), ["20", "Euler", "7.0", "3", "832x1216", "0.4", "l: abc", "v"])

        // Python's repr(float) of the Float's shortest digits.
        XCTAssertEqual(InfoText.formatFloat(Float(7)), "7.0")
        XCTAssertEqual(InfoText.formatFloat(Float(5.5)), "5.5")
        XCTAssertEqual(InfoText.formatFloat(Float(7.3)), "7.3")
        XCTAssertEqual(InfoText.formatFloat(Float(12)), "12.0")
        XCTAssertEqual(InfoText.formatFloat(Float(0.0001)), "0.0001")
        XCTAssertEqual(InfoText.formatFloat(Float(0.00001)), "1e-05")
        XCTAssertEqual(InfoText.formatFloat(Float(1e8)), "100000000.0")
        XCTAssertEqual(InfoText.formatFloat(1e16), "1e+16")
        XCTAssertEqual(InfoText.formatFloat(-2.5e-7), "-2.5e-07")
    }

    // MARK: - Contact sheet

    func testContactSheetLayoutCopiesTilesAndDrawsCaptions() throws {
        // Cells 20x6 (the largest width and height), 2 columns, 2 rows, scale 1: margins 4, strips 11.
        let a = pattern(20, 6, seed: 1), b = pattern(12, 4, seed: 2), c = pattern(16, 6, seed: 3)
        let sheet = try ContactSheet.make([(a, "A1"), (b, ""), (c, "seed 3")])
        XCTAssertEqual(sheet.width, 2 * 20 + 3 * 4)
        XCTAssertEqual(sheet.height, 2 * (6 + 11) + 3 * 4)
        XCTAssertEqual(sheet.pixels.count, sheet.width * sheet.height * 3)

        func region(_ x: Int, _ y: Int, _ w: Int, _ h: Int) -> [UInt8] {
            var out: [UInt8] = []
            for row in y..<y + h {
                let start = (row * sheet.width + x) * 3
                out += sheet.pixels[start..<start + w * 3]
            }
            return out
        }
        // Tiles copied exactly, smaller ones centered in their cell.
        XCTAssertEqual(region(4, 4, 20, 6), a.pixels)                    // cell (0,0) at (4,4)
        XCTAssertEqual(region(28 + 4, 4 + 1, 12, 4), b.pixels)           // cell (1,0) at (28,4), offset (4,1)
        XCTAssertEqual(region(4 + 2, 4 + 17 + 4, 16, 6), c.pixels)       // cell (0,1) at (4,25), offset (2,0)
        XCTAssertEqual(region(28, 4, 4, 1), [UInt8](repeating: 255, count: 12), "around a centered tile is background")

        // Caption strips: black text under A and C, nothing under the empty caption, nothing in cell (1,1).
        let stripA = region(4, 10, 20, 11), stripB = region(28, 10, 20, 11), stripC = region(4, 31, 20, 11)
        XCTAssertTrue(stripA.contains(0), "caption 'A1' is drawn")
        XCTAssertTrue(stripA.allSatisfy { $0 == 0 || $0 == 255 }, "captions are black on the background")
        XCTAssertGreaterThan(stripA.filter { $0 == 0 }.count, 3 * 10, "two glyphs' worth of ink, not a stray dot")
        XCTAssertTrue(stripC.contains(0), "caption 'seed 3' (cut to fit) is drawn")
        XCTAssertTrue(stripB.allSatisfy { $0 == 255 })
        XCTAssertTrue(region(28, 25, 20, 17).allSatisfy { $0 == 255 }, "the unused cell stays background")
        // The text stays inside its strip: the margin rows below the first strips are background.
        XCTAssertTrue(region(0, 21, sheet.width, 4).allSatisfy { $0 == 255 })
    }

    func testContactSheetCutsLongCaptionsAndScalesForWideTiles() throws {
        // Two 300-pixel-wide tiles: scale 2 (margins 8, strips 22) and a caption far wider than the cell.
        let long = String(repeating: "very long caption ", count: 20)
        let tiles = [(image: pattern(300, 20, seed: 1), caption: long), (image: pattern(300, 20, seed: 2), caption: "ok")]
        let sheet = try ContactSheet.make(tiles, columns: 1, background: 200)
        XCTAssertEqual(sheet.width, 300 + 2 * 8)
        XCTAssertEqual(sheet.height, 2 * (20 + 22) + 3 * 8)
        let rowBytes = sheet.width * 3
        let strip = sheet.pixels[28 * rowBytes..<50 * rowBytes]
        XCTAssertTrue(strip.contains(0), "the cut caption is drawn")
        // Nothing is drawn in the side margins: the cut caption fits the cell.
        for y in 28..<50 {
            for x in Array(0..<8) + Array(308..<316) {
                XCTAssertEqual(sheet.pixels[(y * sheet.width + x) * 3], 200, "margin pixel (\(x), \(y))")
            }
        }
        // A dark background gets white captions.
        let dark = try ContactSheet.make([(RGBImage(width: 12, height: 4, fill: 100), "x")], background: 0)
        XCTAssertTrue(dark.pixels.contains(255))
        XCTAssertTrue(dark.pixels.allSatisfy { $0 == 0 || $0 == 100 || $0 == 255 })
    }

    func testContactSheetRefusesBadInput() {
        XCTAssertThrowsError(try ContactSheet.make([])) {
            XCTAssertEqual($0 as? OutputError, .contactSheet("no images to lay out"))
        }
        assertThrowsMessage(try ContactSheet.make([(pattern(2, 2), "ok"), (RGBImage(width: 3, height: 3, pixels: [1]), "bad")]),
                            contains: ["tile 2", "3x3", "27"])
        assertThrowsMessage(try ContactSheet.make([(pattern(2, 2), "ok")], columns: 0), contains: ["columns"])
    }
}
