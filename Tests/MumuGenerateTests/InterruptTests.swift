import Foundation
import MumuFormats
import MumuGenerate
import MumuSampler
import MumuTestSupport
import XCTest

/// Ctrl-C has one owner (`Interrupt`): inside a cooperative section a real SIGINT raises the flag the job polls, so
/// a render stops after its finished images; outside one, a SIGINT during a write removes the temporary file and
/// exits 130, also after a generation ran in the same process.
final class InterruptTests: XCTestCase {
    func request(_ dir: URL) -> GenerateRequest {
        var s = GenerationSettings(prompt: "a watercolor fox")
        s.width = 64; s.height = 64; s.steps = 2; s.cfg = 5; s.seed = 7
        var r = GenerateRequest(settings: s, output: dir.appendingPathComponent("fox.png").path)
        r.checkpoint = DecoderFixtures.pipeline
        r.registryHome = dir.appendingPathComponent("registry").path
        return r
    }

    /// SIGINT after the first PNG (the contact sheet is still to come): the job stops, the finished PNG stays, no
    /// grid and no temporary file are left.
    func testSigintDuringRenderAfterFirstPNG() throws {
        let dir = try makeTemporaryURL("interrupt")
        var r = request(dir)
        r.grid = true
        var wrote: [String] = []
        let stopped: Bool = try Interrupt.cooperatively {
            let run = try GenerateJob(r).start()
            while let event = try run.next() {
                if case let .wrote(path) = event {
                    wrote.append(path)
                    if wrote.count == 1 { raise(SIGINT) }
                }
                if Interrupt.requested != nil { run.stop(); return true }
            }
            return false
        }
        XCTAssertTrue(stopped, "the flag was seen")
        XCTAssertNil(Interrupt.requested, "the flag is lowered when the section ends")
        XCTAssertEqual(wrote.count, 1)
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0 != "registry" }.sorted()
        XCTAssertEqual(left, ["fox.png"], "only the finished PNG")
    }

    /// In a child process: a generation (cooperative) and then a plain write that a SIGINT interrupts. The child
    /// exits 130 and its temporary file is gone (before the fix, the generation reset SIGINT to its default and
    /// the temporary file stayed).
    func testSigintDuringLaterWriteInSameProcess() throws {
        let dir = try makeTemporaryURL("interrupt-child")
        let child = Process()
        child.executableURL = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0])
        child.arguments = ["MumuGenerateTests.InterruptTests/testChildGeneratesThenWrites"]
        var env = ProcessInfo.processInfo.environment
        env["MUMU_INTERRUPT_CHILD_DIR"] = dir.path
        env["TMPDIR"] = dir.path   // the child's own scratch folder (it exits by signal, past any atexit) inside ours
        child.environment = env
        let out = Pipe()
        child.standardOutput = out
        child.standardError = FileHandle.nullDevice
        try child.run()
        // Wait for the child to say it is writing (it prints the temporary path), then interrupt it.
        var text = ""
        func line() -> Substring? { text.split(separator: "\n").first { $0.hasPrefix("writing ") && text.contains($0 + "\n") } }
        let deadline = Date().addingTimeInterval(120)
        while line() == nil, Date() < deadline, child.isRunning {
            text += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        }
        let line = line()
        let temporary = try XCTUnwrap(line.map { String($0.dropFirst("writing ".count)) }, "child output: \(text)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: temporary))
        kill(child.processIdentifier, SIGINT)
        child.waitUntilExit()
        XCTAssertEqual(child.terminationStatus, 130)
        XCTAssertFalse(FileManager.default.fileExists(atPath: temporary), "temporary file removed")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("late.bin").path))
    }

    /// The child's side of the test above (does nothing unless the parent started it).
    func testChildGeneratesThenWrites() throws {
        guard let dirPath = ProcessInfo.processInfo.environment["MUMU_INTERRUPT_CHILD_DIR"] else { return }
        let dir = URL(fileURLWithPath: dirPath)
        var r = request(dir)
        r.settings.steps = 1
        try Interrupt.cooperatively { _ = try GenerateJob(r).run() }
        let file = try AtomicFile(path: dir.appendingPathComponent("late.bin").path, overwrite: false)
        try [UInt8](repeating: 1, count: 1024).withUnsafeBytes { try file.write($0, at: 0) }
        print("writing \(file.temporaryPath)")
        fflush(stdout)
        sleep(60)   // interrupted long before
        XCTFail("not interrupted")
    }
}
