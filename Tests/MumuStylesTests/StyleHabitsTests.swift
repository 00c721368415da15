import Foundation
import MumuFormats
import MumuMerge
import MumuStyles
import MumuTestSupport
import XCTest

/// What a newcomer tripped on (issue 12, part B 8, 10, 11, 12): progress from every long registry job, names of
/// any script, a delta style that finds its base again, options checked against the kind, a registry that is
/// only read is never created, bases and their dependents, broken manifests named to the field.
final class StyleHabitsTests: XCTestCase {
    var models: [String: String] { StyleRegistryTests.models }
    var cache: HashCache { StyleRegistryTests.cache }

    func freshRegistry(_ name: String = #function) throws -> StyleRegistry {
        let home = try makeTemporaryDirectory("habits") + "/home-" + name.filter { $0.isLetter || $0.isNumber }
        return try StyleRegistry(home: home)
    }

    /// Events a job reported: some, and the last one says the job is done.
    func assertFinished(_ events: [WorkProgress], _ unit: WorkProgress.Unit, _ label: String,
                        file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(events.isEmpty, "\(label): no progress reported", file: file, line: line)
        guard let last = events.last else { return }
        XCTAssertEqual(last.unit, unit, label, file: file, line: line)
        XCTAssertEqual(last.done, last.total, "\(label): the last event is the total", file: file, line: line)
        XCTAssertGreaterThan(last.total, 0, label, file: file, line: line)
    }

    func testLongJobsReportProgress() throws {
        let r = try freshRegistry()
        var events: [WorkProgress] = []
        // A copy into the store (bytes).
        _ = try r.add(StyleAddRequest(name: "full", from: models["ft"]!), cache: cache) { events.append($0) }
        assertFinished(events, .bytes, "styles add (copy)")
        // A lossless delta (tensors).
        events = []
        var delta = StyleAddRequest(name: "delta", from: models["ft"]!)
        delta.base = models["base"]!
        _ = try r.add(delta, cache: cache) { events.append($0) }
        assertFinished(events, .tensors, "styles add (lossless delta)")
        // A rank-limited delta: the SVD extraction (modules).
        events = []
        var lossy = StyleAddRequest(name: "lossy", from: models["ft"]!)
        lossy.base = models["base"]!
        lossy.rank = 2
        _ = try r.add(lossy, cache: cache) { events.append($0) }
        assertFinished(events, .modules, "styles add --rank")
        // Materialize (tensors written).
        for name in ["delta", "lossy", "full"] {
            events = []
            try r.materialize(name, base: nil, to: try makeTemporaryDirectory("habits") + "/\(name).safetensors", overwrite: false,
                              threads: 2, cache: cache) { events.append($0) }
            assertFinished(events, name == "full" ? .bytes : .tensors, "styles materialize \(name)")
        }
        // Import with copies (bytes of all the files).
        let folder = try makeTemporaryDirectory("habits-import") + "/checkpoints"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: models["other"]!, toPath: folder + "/other.safetensors")
        events = []
        let imported = try r.importFolder(folder, base: nil, byReference: false, replace: false, cache: cache) { events.append($0) }
        XCTAssertEqual(imported.added.map(\.name), ["other"])
        assertFinished(events, .bytes, "styles import --copy")
        XCTAssertEqual(events.last?.total, try FileManager.default.attributesOfItem(atPath: models["other"]!)[.size] as? Int)
        // lora extract's library call, on its own.
        var extract: [(Int, Int)] = []
        _ = try LoraExtractor.extract(base: try SafetensorsFile(path: models["base"]!), tuned: try SafetensorsFile(path: models["ft"]!),
                                      rank: 2, convRank: 0, to: try makeTemporaryDirectory("habits") + "/l.safetensors", threads: 2,
                                      overwrite: false) { extract.append(($0, $1)) }
        XCTAssertGreaterThan(extract.count, 1)
        XCTAssertEqual(extract.last?.0, extract.last?.1)
    }

    /// `ünïcode lora` became `n-code-lora`; now letters of any script stay, spaces become '-', and what import makes
    /// is what `styles add` accepts (one rule).
    func testNamesKeepEveryScript() throws {
        XCTAssertEqual(StyleManifest.name(from: "ünïcode lora"), "ünïcode-lora")
        XCTAssertEqual(StyleManifest.name(from: "アニメ スタイル v2"), "アニメ-スタイル-v2")
        XCTAssertEqual(StyleManifest.name(from: "a/b\\c:d*e?\u{7}  f"), "abcde-f")
        XCTAssertEqual(StyleManifest.name(from: "..-hidden"), "hidden")
        XCTAssertNil(StyleManifest.name(from: "///"))
        for good in ["ünïcode-lora", "アニメ", "Детализация_1.5", "détail(v2)", "My-Anime-XL-v2"] {
            XCTAssertTrue(StyleManifest.validName(good), good)
        }
        for bad in ["a b", "a/b", "a:b", "-x", ".x", "a\tb", "a\u{0}b"] { XCTAssertFalse(StyleManifest.validName(bad), bad) }

        let r = try freshRegistry()
        let folder = try makeTemporaryDirectory("habits-unicode") + "/Lora"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: try StyleRegistryTests.loraFixture(), toPath: folder + "/ünïcode lora.safetensors")
        let imported = try r.importFolder(folder, base: nil, byReference: true, replace: false, cache: cache)
        XCTAssertEqual(imported.added.map(\.name), ["ünïcode-lora"], "\(imported.skipped)")
        // The same name given to add (and typed decomposed, as macOS file names are): the same style.
        var req = StyleAddRequest(name: "ünïcode-lora", from: folder + "/ünïcode lora.safetensors")
        req.replace = true
        XCTAssertEqual(try r.add(req, cache: cache).name, "ünïcode-lora")
        XCTAssertEqual(try r.manifest("ünïcode-lora".decomposedStringWithCanonicalMapping).name, "ünïcode-lora")
    }

    func testImportOfMissingOrEmptyFolderIsAnError() throws {
        let r = try freshRegistry()
        let missing = try makeTemporaryDirectory("habits") + "/nowhere"
        XCTAssertThrowsError(try r.importFolder(missing, base: nil, byReference: true, replace: false, cache: cache)) {
            XCTAssertEqual($0 as? StyleError, .nothingToImport(missing, reason: "no such folder"))
        }
        let empty = try makeTemporaryDirectory("habits-empty")
        XCTAssertThrowsError(try r.importFolder(empty, base: nil, byReference: true, replace: false, cache: cache)) {
            XCTAssertTrue("\($0)".contains("\(empty): nothing to import"), "\($0)")
        }
    }

    /// A folder in the working directory hid a style of the same name; a bare name now takes the style and says so.
    func testBareNameTakesTheStyleOverAFolderOfThatName() throws {
        let r = try freshRegistry()
        _ = try r.add(StyleAddRequest(name: "anime", from: models["ft"]!), cache: cache)
        let cwd = try makeTemporaryDirectory("habits-cwd")
        try FileManager.default.createDirectory(atPath: cwd + "/anime", withIntermediateDirectories: true)
        let previous = FileManager.default.currentDirectoryPath
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(cwd))
        defer { FileManager.default.changeCurrentDirectoryPath(previous) }
        var notes: [String] = []
        let b = try r.resolveBaseChoice("anime", cache: cache) { notes.append($0) }
        XCTAssertFalse(b.isFile)
        XCTAssertEqual(b.name, "anime")
        XCTAssertEqual(notes.count, 1)
        XCTAssertTrue(notes[0].contains("took the style") && notes[0].contains("./anime"), notes[0])
        // A path is a path.
        XCTAssertThrowsError(try r.resolveBaseChoice("./anime", cache: cache)) { XCTAssertTrue("\($0)".contains("is a folder"), "\($0)") }
    }

    /// `styles add NAME --from FT --base /path/base` then `styles materialize NAME` with no base: found where it was.
    func testDeltaStyleFindsItsRecordedBase() throws {
        let r = try freshRegistry()
        let dir = try makeTemporaryDirectory("habits-base")
        let basePath = dir + "/my base.safetensors"
        try FileManager.default.copyItem(atPath: models["base"]!, toPath: basePath)
        var req = StyleAddRequest(name: "ft", from: models["ft"]!)
        req.base = basePath
        let m = try r.add(req, cache: cache)
        XCTAssertEqual(m.base?.path, basePath)
        XCTAssertEqual(m.base?.name, "my base.safetensors")
        let out = dir + "/out.safetensors"
        try r.materialize("ft", base: nil, to: out, overwrite: false, threads: 2, cache: cache)
        let a = try SafetensorsFile(path: out), b = try SafetensorsFile(path: models["ft"]!)
        for n in b.names.prefix(20) { XCTAssertEqual(Array(try a.tensor(n).bytes), Array(try b.tensor(n).bytes), n) }
        // Changed bytes at the same path.
        try FileManager.default.removeItem(atPath: basePath)
        try FileManager.default.copyItem(atPath: models["other"]!, toPath: basePath)
        XCTAssertThrowsError(try r.materialize("ft", base: nil, to: dir + "/x.safetensors", overwrite: false, threads: 2, cache: cache)) {
            XCTAssertTrue("\($0)".contains("base my base.safetensors was at \(basePath), now changed"), "\($0)")
        }
        // Moved away.
        try FileManager.default.removeItem(atPath: basePath)
        XCTAssertThrowsError(try r.materialize("ft", base: nil, to: dir + "/x.safetensors", overwrite: false, threads: 2, cache: cache)) { e in
            guard case .baseUnavailable(let style, _, let path, let reason)? = e as? StyleError else { return XCTFail("\(e)") }
            XCTAssertEqual(style, "ft"); XCTAssertEqual(path, basePath); XCTAssertEqual(reason, "missing")
        }
        // Given again, wherever it is now.
        try r.materialize("ft", base: models["base"]!, to: dir + "/y.safetensors", overwrite: false, threads: 2, cache: cache)
    }

    /// Manifests written before the base's path was recorded still read.
    func testOldManifestWithoutBasePathReads() throws {
        let json = #"{"schema":1,"name":"old","title":"old","kind":"delta","base":{"sha256":"ab","name":"base.safetensors"},"strength":1,"tags":[],"created":"2026-01-01T00:00:00Z","sources":[],"blobs":[]}"#
        let m = try StyleManifest.decode(Data(json.utf8), path: "/r/styles/old.json")
        XCTAssertEqual(m.base, .init(sha256: "ab", name: "base.safetensors"))
        XCTAssertNil(m.base?.path)
    }

    func testBrokenManifestNamesTheFileAndTheField() throws {
        let noKind = #"{"schema":1,"name":"x","title":"x","strength":1,"tags":[],"created":"c","sources":[],"blobs":[]}"#
        XCTAssertThrowsError(try StyleManifest.decode(Data(noKind.utf8), path: "/r/styles/x.json")) {
            XCTAssertEqual("\($0)", "/r/styles/x.json: field 'kind': missing")
        }
        let badHash = #"{"schema":1,"name":"x","title":"x","kind":"lora","strength":1,"tags":[],"created":"c","sources":[],"blobs":[{"role":"lora","sha256":7,"size":1,"format":"safetensors"}]}"#
        XCTAssertThrowsError(try StyleManifest.decode(Data(badHash.utf8), path: "/r/styles/x.json")) {
            XCTAssertEqual("\($0)", "/r/styles/x.json: field 'blobs[0].sha256': not a string")
        }
    }

    func testOptionsThatDoNothingForTheKindAreErrors() throws {
        let r = try freshRegistry()
        let lora = try StyleRegistryTests.loraFixture()
        var req = StyleAddRequest(name: "x", from: lora)
        req.rank = 4
        XCTAssertThrowsError(try r.add(req, cache: cache)) {
            guard case .optionNotForKind("a rank", .lora, _)? = $0 as? StyleError else { return XCTFail("\($0)") }
        }
        req = StyleAddRequest(name: "x", from: models["ft"]!)
        req.kind = .full; req.base = models["base"]!
        XCTAssertThrowsError(try r.add(req, cache: cache)) {
            guard case .optionNotForKind("a base", .full, _)? = $0 as? StyleError else { return XCTFail("\($0)") }
        }
        req = StyleAddRequest(name: "x", from: models["ft"]!)
        req.base = models["base"]!; req.byReference = true
        XCTAssertThrowsError(try r.add(req, cache: cache)) {
            guard case .optionNotForKind(_, .delta, _)? = $0 as? StyleError else { return XCTFail("\($0)") }
        }
        req = StyleAddRequest(name: "x", from: models["ft"]!)
        req.base = models["base"]!; req.convRank = 2
        XCTAssertThrowsError(try r.add(req, cache: cache)) {
            guard case .optionNotForKind(_, .delta, _)? = $0 as? StyleError else { return XCTFail("\($0)") }
        }
        XCTAssertEqual(r.list().styles, [])
    }

    /// `styles list --json` made the registry's folders; a registry that is only read is never created.
    func testReadingAMissingRegistryCreatesNothing() throws {
        let home = try makeTemporaryDirectory("habits") + "/no-registry"
        let r = try StyleRegistry(home: home, create: false)
        XCTAssertEqual(r.list().styles, [])
        XCTAssertThrowsError(try r.manifest("x"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: home))
    }

    func testRemovingABaseNamesTheStylesThatNeedIt() throws {
        let r = try freshRegistry()
        _ = try r.add(StyleAddRequest(name: "sdxl", from: models["base"]!), cache: cache)
        var req = StyleAddRequest(name: "ft-delta", from: models["ft"]!)
        req.base = "sdxl"
        _ = try r.add(req, cache: cache)
        XCTAssertNil(try r.manifest("ft-delta").base?.path, "a base given as a style records no file")
        XCTAssertEqual(try r.withLock { try r.remove("sdxl") }, ["ft-delta"])
        XCTAssertEqual(try r.withLock { try r.remove("ft-delta") }, [])
    }

    /// Errors about a style's bytes name the style and its blob's role, not the blob's path in the store.
    func testMessagesNameTheStyleNotItsBlobPath() throws {
        let r = try freshRegistry()
        let m = try r.add(StyleAddRequest(name: "full", from: models["ft"]!), cache: cache)
        let blob = r.blobPath(m.blob("weights")!.sha256)
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: blob))
        XCTAssertThrowsError(try r.plugin("full", baseSHA256: nil, cache: HashCache(directory: try makeTemporaryDirectory("hc")))) {
            XCTAssertTrue("\($0)".hasPrefix("style 'full': its weights blob is corrupted"), "\($0)")
            XCTAssertFalse("\($0)".contains(blob), "\($0)")
        }
    }

    /// An SD1 file can be registered and merged, but generate renders SDXL only: a note says so (not an error).
    func testSD1StyleSaysItCannotBeRendered() throws {
        let r = try freshRegistry()
        let lora = try makeTemporaryDirectory("habits-sd1") + "/sd1-lora.safetensors"
        // One kohya module that only SD1's UNet has (input_blocks.1.1 is a transformer there, a ResBlock in SDXL).
        let module = "lora_unet_input_blocks_1_1_proj_in"
        try writeTensors(lora, [(module + ".lora_down.weight", [1, 320, 1, 1], [Float](repeating: 0.01, count: 320)),
                                (module + ".lora_up.weight", [320, 1, 1, 1], [Float](repeating: 0.01, count: 320)),
                                (module + ".alpha", [], [1])])
        var notes: [String] = []
        let m = try r.add(StyleAddRequest(name: "sd1-detail", from: lora), cache: cache, notes: { notes.append($0) })
        XCTAssertEqual(m.architecture, "sd1")
        XCTAssertEqual(notes.count, 1, "\(notes)")
        XCTAssertTrue(notes.first?.contains("style 'sd1-detail' is sd1") == true && notes.first?.contains("cannot be rendered") == true, "\(notes)")
    }
}
