import Foundation
import MumuTestSupport
import XCTest

/// The `mumu` binary as a user runs it: one error style (`mumu: error:`, exit 1 at run time, 64 for usage with the
/// subcommand's usage), negative numbers reaching their checks, A1111's random seed.
final class CLITests: XCTestCase {
    /// The mumu executable built beside this test bundle.
    static var binary: String {
        let bundle = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0])
        let dir = bundle.pathExtension == "xctest" ? bundle.deletingLastPathComponent() : bundle.deletingLastPathComponent()
        return dir.appendingPathComponent("mumu").path
    }

    struct Result { var status: Int32; var out: String; var err: String }

    func mumu(_ args: [String], cwd: String? = nil) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = args
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, out: String(decoding: o, as: UTF8.self), err: String(decoding: e, as: UTF8.self))
    }

    override func setUpWithError() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: Self.binary), "mumu not built at \(Self.binary)")
    }

    func testUsageErrorsShowTheSubcommandsUsage() throws {
        let r = try mumu(["generate", "fox", "--seed", "-2"])
        XCTAssertEqual(r.status, 64)
        XCTAssertTrue(r.err.hasPrefix("mumu: error: --seed -2: a seed is a number >= 0"), r.err)
        XCTAssertTrue(r.err.contains("Usage: mumu generate"), r.err)
        let typo = try mumu(["generate", "--widht", "64"])
        XCTAssertEqual(typo.status, 64)
        XCTAssertTrue(typo.err.hasPrefix("mumu: error: Unknown option '--widht'"), typo.err)
    }

    /// `-dash` was read as `-d -a -s -h` and printed the help with exit 0.
    func testJoinedDashWordIsAnError() throws {
        let r = try mumu(["styles", "add", "-dash", "--from", "x.safetensors"])
        XCTAssertEqual(r.status, 64)
        XCTAssertTrue(r.err.contains("unknown option '-dash'"), r.err)
        XCTAssertEqual(r.out, "")
    }

    /// Negative numbers reach the checks instead of "Missing value".
    func testNegativeNumbersReachTheirChecks() throws {
        let dir = try makeTemporaryDirectory("cli")
        for (flag, value, message) in [("--cfg", "-3", "cfg -3.0"), ("--width", "-64", "size -64x")] {
            let r = try mumu(["generate", "fox", "--checkpoint", DecoderFixtures.pipeline, flag, value, "-o", dir + "/x.png"])
            XCTAssertEqual(r.status, 1, r.err)
            XCTAssertTrue(r.err.hasPrefix("mumu: error: ") && r.err.contains(message), r.err)
            XCTAssertFalse(r.err.contains("Missing value"), r.err)
        }
    }

    /// A runtime error: exit 1, one line in the one style (merge used another format and exit code for "exists").
    func testRuntimeErrorsExitOne() throws {
        let dir = try makeTemporaryDirectory("cli")
        FileManager.default.createFile(atPath: dir + "/out.safetensors", contents: Data())
        let r = try mumu(["merge", "--method", "weighted_sum", "--a", DecoderFixtures.pipeline, "--b", DecoderFixtures.pipeline,
                          "-o", dir + "/out.safetensors"])
        XCTAssertEqual(r.status, 1, r.err)
        XCTAssertTrue(r.err.hasPrefix("mumu: error: ") && r.err.contains("already exists (use --force"), r.err)
        let missing = try mumu(["inspect", dir + "/nope.safetensors"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.err.hasPrefix("mumu: error: "), missing.err)
    }

    /// `--seed -1` is A1111's "random": a seed is drawn, reported, and written into the image's infotext; without
    /// -o the image gets a numbered name in ./outputs.
    func testRandomSeedAndNumberedOutput() throws {
        let dir = try makeTemporaryDirectory("cli")
        let r = try mumu(["generate", "fox", "--checkpoint", DecoderFixtures.pipeline, "--seed", "-1", "--width", "8", "--height", "8",
                          "--steps", "1", "--json"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.err)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let seed = try XCTUnwrap(json["seed"] as? Int)
        XCTAssertTrue((0..<(1 << 32)).contains(seed))
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/outputs")
        XCTAssertEqual(files, ["00000-\(seed).png"])
    }
}
