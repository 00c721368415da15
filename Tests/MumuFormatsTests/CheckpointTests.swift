import Foundation
import MumuFormats
import MumuTensor
import MumuTestSupport
import XCTest

/// Facts about the restricted `.ckpt` reader, checked against fixtures written by
/// `scripts/gen_fixtures_ckpt.py` with torch and safetensors.
final class CheckpointTests: XCTestCase {
    // MARK: - Reading real torch.save output

    func testTinyTensorsEqualSafetensorsBitForBit() throws {
        let ckpt = try CheckpointFile(path: try fixture("tiny.ckpt"))
        let expected = try readSafetensors(try fixture("tiny_expected.safetensors"))
        XCTAssertEqual(Set(ckpt.names), Set(expected.keys))
        XCTAssertEqual(ckpt.names.first, "conv.weight", "tensors keep the state dict's order")
        for info in ckpt.tensors {
            let want = try XCTUnwrap(expected[info.name], info.name)
            XCTAssertEqual(info.dtype.rawValue, want.dtype, info.name)
            XCTAssertEqual(info.shape, want.shape, info.name)
            XCTAssertEqual(try bytes(ckpt, info.name), want.bytes, "bytes of \(info.name)")
        }
        XCTAssertEqual(ckpt.tensorRoot, "state_dict")
        XCTAssertEqual(ckpt.skipped, [.init(name: "global_step", summary: "int 7"), .init(name: "epoch", summary: "int 1")])
        XCTAssertEqual(ckpt.skippedEntries, ["global_step", "epoch"])
        XCTAssertTrue(ckpt.metadata.isEmpty)
        XCTAssertEqual(ckpt.archiveName, "tiny")
    }

    func testDtypesShapesAndViews() throws {
        let ckpt = try CheckpointFile(path: try fixture("tiny.ckpt"))
        let info = ckpt.infoByName
        XCTAssertEqual(info["norm.weight"]?.dtype, .f16)
        XCTAssertEqual(info["proj.weight"]?.dtype, .bf16)
        XCTAssertEqual(info["ids"]?.dtype, .i64)
        XCTAssertEqual(info["pixels"]?.dtype, .u8)
        XCTAssertEqual(info["mask"]?.dtype, .bool)
        XCTAssertEqual(info["proj_t.weight"]?.shape, [7, 5])
        XCTAssertEqual(info["perm"]?.shape, [2, 3, 4])
        XCTAssertEqual(info["scalar"]?.shape, [])
        XCTAssertEqual(info["empty"]?.shape, [0, 3])
        XCTAssertEqual(try ckpt.tensor("scalar").floats(), [0.5])
        XCTAssertEqual(try ckpt.tensor("empty").bytes.count, 0)

        // Contiguous tensors point into the mapping; a slice shares its base's storage.
        let full = try ckpt.tensor("base.full"), slice = try ckpt.tensor("base.slice")
        XCTAssertTrue(full.owner is MappedFile)
        XCTAssertTrue(slice.owner is MappedFile)
        withExtendedLifetime((full, slice)) {
            XCTAssertEqual(slice.bytes.baseAddress, full.bytes.baseAddress.map { $0 + 4 * 4 })
            XCTAssertEqual(Array(slice.bytes), Array(full.bytes[16..<48]))
        }
        // Strided views are gathered into owned buffers.
        XCTAssertTrue(try ckpt.tensor("proj_t.weight").owner is OwnedBuffer)
        XCTAssertTrue(try ckpt.tensor("half_strided").owner is OwnedBuffer)
        XCTAssertThrowsError(try ckpt.tensor("nope")) { error in
            XCTAssertEqual(error as? FormatError, .missingTensor(path: ckpt.path, tensor: "nope"))
        }
    }

    func testHandMadeStridedViewWithOffset() throws {
        let ckpt = try CheckpointFile(path: try fixture("strided.ckpt"))
        XCTAssertEqual(ckpt.names, ["w"])
        XCTAssertEqual(try ckpt.tensor("w").floats(), [2, 4, 3, 5])
    }

    func testBareStateDictsInEveryProtocolAndZip64() throws {
        let expected = try readSafetensors(try fixture("plain_expected.safetensors"))
        for name in ["plain.ckpt", "plain_p1.ckpt", "plain_p4.ckpt", "plain_p5.ckpt", "zip64.ckpt"] {
            let ckpt = try CheckpointFile(path: try fixture(name))
            XCTAssertEqual(ckpt.names, ["0.weight", "0.bias", "1.weight", "1.bias"], name)
            XCTAssertEqual(ckpt.tensorRoot, "", name)
            XCTAssertEqual(ckpt.skipped, [], "the OrderedDict's _metadata is an attribute, not an entry (\(name))")
            for info in ckpt.tensors {
                let want = try XCTUnwrap(expected[info.name])
                XCTAssertEqual(info.dtype, .f16, name)
                XCTAssertEqual(info.shape, want.shape, name)
                XCTAssertEqual(try bytes(ckpt, info.name), want.bytes, "\(name): \(info.name)")
            }
        }
    }

    func testLightningCheckpointWithNumpyAndCallbacks() throws {
        let ckpt = try CheckpointFile(path: try fixture("lightning.ckpt"))
        let expected = try readSafetensors(try fixture("lightning_expected.safetensors"))
        XCTAssertEqual(ckpt.names, ["model.diffusion_model.out.2.weight", "model.diffusion_model.out.2.bias",
                                    "first_stage_model.decoder.conv_out.bias"])
        for info in ckpt.tensors {
            XCTAssertEqual(try bytes(ckpt, info.name), expected[info.name]?.bytes, info.name)
        }
        XCTAssertEqual(ckpt.tensorRoot, "state_dict")
        XCTAssertEqual(ckpt.skipped, [
            .init(name: "epoch", summary: "int 3"),
            .init(name: "global_step", summary: "int 1234"), // a numpy.int64, decoded from its bytes
            .init(name: "pytorch-lightning_version", summary: "str '1.9.4'"),
            .init(name: "callbacks", summary: "dict of 1 entries"),
            .init(name: "optimizer_states", summary: "list of 1"),
            .init(name: "lr_schedulers", summary: "list of 0"),
            .init(name: "hparams_name", summary: "str 'kwargs'"),
            .init(name: "hyper_parameters", summary: "dict of 2 entries"),
        ])
    }

    // MARK: - Refusing what is not data

    func testMaliciousPicklesAreRefusedAndNothingRuns() throws {
        let marker = "/tmp/mumu_pwned"
        try? FileManager.default.removeItem(atPath: marker)
        let cases = [("malicious.ckpt", "os.system"), ("malicious_eval.ckpt", "builtins.eval"), ("malicious_inst.ckpt", "posix.system")]
        for (name, global) in cases {
            let path = try fixture(name)
            XCTAssertThrowsError(try CheckpointFile(path: path), name) { error in
                XCTAssertEqual(error as? FormatError, .forbiddenGlobal(path: path, global: global))
                XCTAssertTrue("\(error)".contains("never executes"))
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: marker))
    }

    func testCorruptCompressedLegacyAndBadViewsGiveFormatErrors() throws {
        try assertMalformed("corrupt.ckpt", mentioning: "end-of-central-directory")
        try assertMalformed("compressed.ckpt", mentioning: "'compressed/data.pkl' is compressed (deflate)")
        try assertMalformed("legacy.ckpt", mentioning: "legacy non-zip torch format")
        try assertMalformed("bomb.ckpt", mentioning: "shared references")
        let oob = try fixture("oob.ckpt")
        XCTAssertThrowsError(try CheckpointFile(path: oob)) { error in
            guard case .badTensor(_, "w", let reason)? = error as? FormatError else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("reaches past the 16 bytes"), reason)
        }
        let notZip = try temporaryFile(Array("not a checkpoint at all, just some text".utf8))
        XCTAssertThrowsError(try CheckpointFile(path: notZip)) { XCTAssertNotNil($0 as? FormatError) }
        let empty = try temporaryFile([])
        XCTAssertThrowsError(try CheckpointFile(path: empty)) { XCTAssertNotNil($0 as? FormatError) }
    }

    func testEveryTruncationOfTinyIsAFormatError() throws {
        let bytes = try readFile(try fixture("tiny.ckpt"))
        var cuts = Array(stride(from: 0, to: bytes.count, by: 41))
        cuts += Array(max(0, bytes.count - 200)..<bytes.count) // every cut inside the end records
        for cut in cuts {
            let path = try temporaryFile(Array(bytes[..<cut]))
            XCTAssertThrowsError(try CheckpointFile(path: path), "cut at \(cut)") { error in
                XCTAssertNotNil(error as? FormatError, "cut at \(cut): \(error)")
            }
        }
    }

    func testRandomFilesAndMutatedZipsNeverCrash() throws {
        var rng = SeededRNG(seed: 0x6D75_6D75)
        for size in [1, 4, 21, 22, 100, 4096, 70_000] {
            var bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if size >= 22 { bytes.replaceSubrange((size - 22)..<(size - 18), with: [0x50, 0x4B, 0x05, 0x06]) }
            XCTAssertThrowsError(try CheckpointFile(path: try temporaryFile(bytes))) { XCTAssertNotNil($0 as? FormatError) }
        }
        let tiny = try readFile(try fixture("tiny.ckpt"))
        // Half the mutations anywhere, half in the zip structures at the end.
        let structure = tiny.count - 1300
        var opened = 0
        // MUMU_CKPT_MUTATIONS=20000 runs a longer campaign (e.g. under --sanitize=address).
        let rounds = ProcessInfo.processInfo.environment["MUMU_CKPT_MUTATIONS"].flatMap { Int($0) } ?? 300
        for i in 0..<rounds {
            var bytes = tiny
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let at = i % 2 == 0 ? Int.random(in: 0..<bytes.count, using: &rng) : Int.random(in: structure..<bytes.count, using: &rng)
                bytes[at] = UInt8.random(in: 0...255, using: &rng)
            }
            do {
                let ckpt = try CheckpointFile(path: try temporaryFile(bytes))
                for name in ckpt.names { _ = try? ckpt.tensor(name) }
                opened += 1
            } catch {
                XCTAssertNotNil(error as? FormatError, "mutation \(i): \(error)")
            }
        }
        XCTAssertGreaterThan(opened, 0, "some mutations only touch tensor data")
    }

    /// `MUMU_CKPT_FILE=/path/model.ckpt swift test -c release --filter CheckpointTests/testExternalCheckpoint`
    /// opens a real checkpoint and reads every tensor.
    func testExternalCheckpoint() throws {
        guard let path = ProcessInfo.processInfo.environment["MUMU_CKPT_FILE"] else {
            throw XCTSkip("set MUMU_CKPT_FILE to a .ckpt to read")
        }
        let start = Date()
        let ckpt = try CheckpointFile(path: path)
        let opened = Date().timeIntervalSince(start)
        var bytes = 0, copied = 0
        for info in ckpt.tensors {
            let data = try ckpt.tensor(info.name)
            XCTAssertEqual(data.bytes.count, info.byteCount, info.name)
            bytes += data.bytes.count
            if data.owner is OwnedBuffer { copied += 1 }
        }
        // MUMU_CKPT_EXPECTED=/path/same.safetensors also compares every tensor bit for bit.
        if let expectedPath = ProcessInfo.processInfo.environment["MUMU_CKPT_EXPECTED"] {
            let expected = try SafetensorsFile(path: expectedPath)
            XCTAssertEqual(Set(expected.names), Set(ckpt.names))
            for info in expected.tensors {
                let a = try ckpt.tensor(info.name), b = try expected.tensor(info.name)
                XCTAssertEqual(a.info, b.info)
                withExtendedLifetime((a, b)) { XCTAssertTrue(a.bytes.elementsEqual(b.bytes), info.name) }
            }
        }
        print("\(path): \(ckpt.tensors.count) tensors, \(bytes) bytes, \(copied) gathered, opened in \(String(format: "%.3f", opened)) s; root '\(ckpt.tensorRoot)'; skipped: \(ckpt.skipped.map { "\($0.name) (\($0.summary))" })")
    }

    // MARK: - The unpickler alone

    func testUnpicklerReadsProtocolZeroText() throws {
        let bytes = try readFile(try fixture("proto0.pkl"))
        let p = try Unpickler.unpickle(bytes, path: "proto0.pkl")
        let root = try XCTUnwrap(p.dict(p.root))
        XCTAssertEqual(root["a"], .int(1))
        XCTAssertEqual(p.items(try XCTUnwrap(root["b"])), [.float(1.5), .string("x\u{e9}\n"), .none, .bool(true), .bool(false)])
        let c = try XCTUnwrap(p.items(try XCTUnwrap(root["c"])))
        XCTAssertEqual(c.count, 2)
        guard case .bigInt = c[0] else { return XCTFail("2**70 is a big int: \(c[0])") }
        XCTAssertEqual(c[1], .int(-3))
        XCTAssertEqual(root["d"], .bytes([0, 255]))
    }

    func testUnpicklerSurvivesPrefixesAndMutationsOfARealPickle() throws {
        let archive = try ZipArchive(path: try fixture("tiny.ckpt"))
        let pickle = Array(try archive.data(of: try XCTUnwrap(archive.entry(named: "tiny/data.pkl"))))
        XCTAssertNoThrow(try Unpickler.unpickle(pickle, path: "tiny.ckpt"))
        var failures = 0
        for n in 0..<pickle.count {
            do { _ = try Unpickler.unpickle(Array(pickle[..<n]), path: "prefix") } catch { failures += 1 }
        }
        XCTAssertEqual(failures, pickle.count, "every strict prefix lacks its STOP")
        var rng = SeededRNG(seed: 42)
        for _ in 0..<500 {
            var bytes = pickle
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: at)
                default: if bytes.count > 1 { bytes.remove(at: at) }
                }
            }
            bytes.withUnsafeBytes { fuzzUnpickle($0) }
            do { _ = try Unpickler.unpickle(bytes, path: "mutant") } catch {
                XCTAssertNotNil(error as? FormatError, "\(error)")
            }
        }
    }

    func testHostilePicklesAreBounded() throws {
        // 200,000 nested lists: built and released without deep recursion.
        let depth = 200_000
        let nested = [UInt8](repeating: 0x5D, count: depth) + [UInt8](repeating: 0x61, count: depth - 1) + [0x2E]
        XCTAssertNoThrow(try Unpickler.unpickle(nested, path: "nested"))
        // A list that contains itself.
        XCTAssertNoThrow(try Unpickler.unpickle([0x5D, 0x32, 0x61, 0x2E], path: "cycle"))
        // _codecs.encode of a memoized 1000-character string, 20,000 times: a bomb.
        var bomb: [UInt8] = [0x80, 0x02] + Array("c_codecs\nencode\n".utf8) + [0x71, 0x01]
        bomb += [0x58, 0xE8, 0x03, 0, 0] + [UInt8](repeating: 0x41, count: 1000) + [0x71, 0x00, 0x30, 0x30]
        for _ in 0..<20_000 { bomb += [0x68, 0x01, 0x68, 0x00, 0x85, 0x52, 0x30] }
        bomb += [0x4E, 0x2E]
        XCTAssertThrowsError(try Unpickler.unpickle(bomb, path: "bomb")) { error in
            XCTAssertTrue("\(error)".contains("decompression bomb"), "\(error)")
        }
        // Lengths larger than the data.
        for hostile: [UInt8] in [[0x8D] + [UInt8](repeating: 0xFF, count: 8), [0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x41],
                                  [0x8B, 0xFF, 0xFF, 0xFF, 0x7F], [0x95, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x2E]] {
            XCTAssertThrowsError(try Unpickler.unpickle(hostile, path: "hostile")) { XCTAssertNotNil($0 as? FormatError) }
        }
        // A GLOBAL outside the allow-list is refused even with no call after it.
        XCTAssertThrowsError(try Unpickler.unpickle(Array("csubprocess\nPopen\n.".utf8), path: "p")) { error in
            XCTAssertEqual(error as? FormatError, .forbiddenGlobal(path: "p", global: "subprocess.Popen"))
        }
    }

    // MARK: - Helpers

    /// A copy of a tensor's bytes, taken while the tensor (and so its owner) is alive.
    private func bytes(_ source: TensorSource, _ name: String) throws -> [UInt8] {
        let data = try source.tensor(name)
        return withExtendedLifetime(data) { Array(data.bytes) }
    }

    private func fixture(_ name: String) throws -> String { fixturePath("ckpt/" + name) }

    private func assertMalformed(_ name: String, mentioning text: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let path = try fixture(name)
        XCTAssertThrowsError(try CheckpointFile(path: path), name, file: file, line: line) { error in
            guard case .malformed(let p, let reason)? = error as? FormatError else {
                return XCTFail("\(name): \(error)", file: file, line: line)
            }
            XCTAssertEqual(p, path, file: file, line: line)
            XCTAssertTrue(reason.contains(text), "\(name): \(reason)", file: file, line: line)
        }
    }

    private var scratch: String?
    private var scratchCount = 0

    /// Writes `bytes` to a new file in this test's temporary folder.
    private func temporaryFile(_ bytes: [UInt8]) throws -> String {
        if scratch == nil { scratch = try makeTemporaryDirectory() }
        scratchCount += 1
        let path = (scratch ?? "") + "/f\(scratchCount).ckpt"
        try writeFile(bytes, path)
        return path
    }

    override func tearDown() {
        if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
        super.tearDown()
    }

    struct ExpectedTensor {
        var dtype: String
        var shape: [Int]
        var bytes: [UInt8]
    }

    /// The tensors of a safetensors file (read with mumu's reader), by name.
    private func readSafetensors(_ path: String) throws -> [String: ExpectedTensor] {
        let file = try SafetensorsFile(path: path)
        var out: [String: ExpectedTensor] = [:]
        for info in file.tensors {
            out[info.name] = ExpectedTensor(dtype: info.dtype.rawValue, shape: info.shape, bytes: try bytes(file, info.name))
        }
        return out
    }
}
