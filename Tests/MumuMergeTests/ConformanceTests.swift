import Foundation
import MumuFormats
import MumuMerge
import MumuTensor
import MumuTestSupport
import XCTest

/// Every case of Fixtures/merge/cases.json (scripts/gen_fixtures_merge.py: sd-mecha 1.1.8 where it has
/// the method, torch references of docs/merging.md otherwise) run through the real recipe reader, planner
/// and executor, written to a file and read back.
/// Tolerances: f16 outputs within 1 ulp of f16 (the references round the same f32 formula; a one-ulp flip
/// happens where our f32 result differs from torch's in the last f32 bit, e.g. fused vs unfused products
/// or f64 vs f32 norm accumulation); f32 outputs within the case's `f32_abs` (1e-6 for most; 2e-6 for
/// sd-mecha's slerp, whose norms torch accumulates in f32; 1e-5 for filter-wise model stock, whose t
/// per 3-element row is ill-conditioned, -359 at worst in the fixture).
final class ConformanceTests: XCTestCase {
    static let dir = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/merge").path

    struct Case {
        var name: String
        var recipe: String
        var f32: String
        var f16: String
        var f32Tolerance: Double
    }

    static func cases() throws -> [Case] {
        let text = try String(contentsOfFile: dir + "/cases.json", encoding: .utf8)
        guard case .array(let items) = try JSONParser.parse(text) else { throw XCTSkip("cases.json is not a list") }
        return items.map { item in
            let expected = item["expected"]
            var tol = 1e-6
            switch item["tolerance"]?["f32_abs"] {
            case .double(let d)?: tol = d
            case .int(let i)?: tol = Double(i)
            default: break
            }
            return Case(name: item["name"]?.stringValue ?? "?", recipe: item["recipe"]?.stringValue ?? "",
                        f32: expected?["f32"]?.stringValue ?? "", f16: expected?["f16"]?.stringValue ?? "", f32Tolerance: tol)
        }
    }

    func merge(_ c: Case, dtype: String, threads: Int = 2) throws -> SafetensorsFile {
        let recipe = try Recipe.parse(c.recipe, origin: "cases.json:\(c.name)", directory: Self.dir)
        var options = MergeOptions()
        options.dtype = dtype
        options.threads = threads
        let plan = try MergePlan(recipe: recipe, options: options)
        let out = testScratchRoot + "/conformance-\(c.name)-\(dtype)-\(threads).safetensors"
        defer { try? FileManager.default.removeItem(atPath: out) }
        _ = try MergeRunner.run(plan, to: out, overwrite: true, hashes: [:])
        let file = try SafetensorsFile(path: out)
        return file
    }

    func testCasesMatchReferences() throws {
        let cases = try Self.cases()
        XCTAssertGreaterThanOrEqual(cases.count, 17)
        for c in cases {
            let expected32 = try SafetensorsFile(path: Self.dir + "/" + c.f32)
            let expected16 = try SafetensorsFile(path: Self.dir + "/" + c.f16)
            let got32 = try merge(c, dtype: "f32")
            let got16 = try merge(c, dtype: "f16")
            XCTAssertEqual(Set(got32.names), Set(expected32.names), c.name)
            var worst32 = 0.0, worstUlp = 0
            for name in expected32.names {
                let e = try expected32.tensor(name).floats(), g = try got32.tensor(name).floats()
                XCTAssertEqual(try got32.tensor(name).info.shape, try expected32.tensor(name).info.shape, "\(c.name) \(name)")
                XCTAssertEqual(e.count, g.count)
                for (x, y) in zip(e, g) { worst32 = max(worst32, Double(abs(x - y))) }
                let e16 = try expected16.tensor(name), g16 = try got16.tensor(name)
                XCTAssertEqual(g16.info.dtype, .f16)
                let eb = e16.bytes.bindMemory(to: UInt16.self), gb = g16.bytes.bindMemory(to: UInt16.self)
                for i in 0..<eb.count {
                    worstUlp = max(worstUlp, ulpDistance(eb[i], gb[i]))
                }
            }
            print("conformance \(c.name): f32 max abs error \(worst32), f16 max \(worstUlp) ulp")
            XCTAssertLessThanOrEqual(worst32, c.f32Tolerance, "\(c.name): f32 max abs error \(worst32)")
            XCTAssertLessThanOrEqual(worstUlp, 1, "\(c.name): f16 off by \(worstUlp) ulp")
        }
    }

    /// Distance in units of the last place between two f16 bit patterns (ordered as integers).
    func ulpDistance(_ a: UInt16, _ b: UInt16) -> Int {
        func ordered(_ x: UInt16) -> Int { x & 0x8000 != 0 ? -Int(x & 0x7FFF) : Int(x) }
        return abs(ordered(a) - ordered(b))
    }

    /// Threads and chunking do not change a single bit, for every method (TIES radix select, DARE masks,
    /// SLERP and model stock statistics included).
    func testOutputIndependentOfThreadsAndChunking() throws {
        for c in try Self.cases() {
            let recipe = try Recipe.parse(c.recipe, origin: c.name, directory: Self.dir)
            var results: [[String: [UInt8]]] = []
            for (threads, chunk) in [(1, 4 << 20), (3, 4 << 20), (2, 96), (1, 7)] {
                var options = MergeOptions()
                options.threads = threads
                let plan = try MergePlan(recipe: recipe, options: options)
                let sink = MemorySink()
                let executor = MergeExecutor(plan: plan)
                executor.chunkElements = chunk
                try StreamExecutor.run(executor.jobs(), into: sink, threads: threads)
                results.append(sink.tensors)
            }
            for r in results.dropFirst() { XCTAssertEqual(r, results[0], "\(c.name): output depends on threads or chunking") }
        }
    }

    /// The DARE generator alone, against the values the fixture script printed.
    func testDareGeneratorMatchesProbe() throws {
        let text = try String(contentsOfFile: Self.dir + "/cases.json", encoding: .utf8)
        guard case .array(let items) = try JSONParser.parse(text),
              let probe = items.first(where: { $0["name"]?.stringValue == "dare" })?["dare_rng_probe"] else {
            return XCTFail("no dare_rng_probe in cases.json")
        }
        guard case .array(let us)? = probe["u"], let key = probe["key"]?.stringValue else { return XCTFail("probe incomplete") }
        let values = DareProbe.uniforms(seed: 7, key: key, model: 0, count: us.count)
        for (i, u) in us.enumerated() {
            guard case .double(let expected) = u else { continue }
            XCTAssertEqual(Double(values[i]), expected, "u[\(i)]")
        }
    }
}

/// Collects streamed tensors in memory (tests only).
final class MemorySink: ModelSink, @unchecked Sendable {
    var tensors: [String: [UInt8]] = [:]
    let lock = NSLock()
    func writePart(_ name: String, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        lock.lock(); defer { lock.unlock() }
        var t = tensors[name] ?? []
        if t.count < offset + bytes.count { t += Array(repeating: 0, count: offset + bytes.count - t.count) }
        t.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        tensors[name] = t
    }
    func finish() throws {}
    func abort() {}
}
