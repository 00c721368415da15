import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuTensor

/// `ModelConverter` + `StreamExecutor` (what `mumu convert` runs) on a synthesized sdxl-tiny: dtypes,
/// component subsets, shards, sgm <-> diffusers folders, and failures that must leave nothing behind.
final class ConvertTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTemporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    private var tiny: ArchitectureDescriptor { Architectures.named("sdxl-tiny")! }

    /// sdxl-tiny, f16, seed 7, with hash metadata that a byte-changing conversion must drop.
    private func synthesizeTiny(_ name: String = "tiny.safetensors") throws -> String {
        var synth = Synthesizer(architecture: tiny)
        synth.seed = 7
        synth.dtype = .f16
        var metadata = synth.metadata()
        metadata["modelspec.hash_sha256"] = "0x00"
        metadata["sshs_model_hash"] = "00"
        metadata["sshs_legacy_hash"] = "00"
        let path = dir + "/" + name
        try synth.write(to: try SafetensorsWriter(path: path, tensors: try synth.outputInfos(), metadata: metadata))
        return path
    }

    /// Runs a converter into a single safetensors file, as `mumu convert` does.
    private func convert(_ converter: ModelConverter, to path: String) throws {
        let items = try converter.plan()
        let changes = items.contains { $0.output.dtype != converter.source.infoByName[$0.sourceName]?.dtype }
        let sink = try SafetensorsWriter(path: path, tensors: items.map(\.output), metadata: converter.metadata(changesBytes: changes))
        try StreamExecutor.run(converter.jobs(items), into: sink, threads: 2)
    }

    private func assertSameTensors(_ a: TensorSource, _ b: TensorSource, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(a.tensors.sorted { $0.name < $1.name }, b.tensors.sorted { $0.name < $1.name }, file: file, line: line)
        for t in a.tensors {
            let x = try a.tensor(t.name)
            guard let y = try? b.tensor(t.name) else { XCTFail("\(t.name) missing", file: file, line: line); continue }
            withExtendedLifetime((x, y)) {
                XCTAssertTrue(x.bytes.elementsEqual(y.bytes), "\(t.name): bytes differ", file: file, line: line)
            }
        }
    }

    /// Files in the temporary folder other than `keep`: leftovers of a failed write.
    private func leftovers(besides keep: Set<String>) -> [String] {
        listDirectory(dir).filter { !keep.contains($0) }
    }

    // MARK: - dtypes

    func testConvertingToBF16AndF32EqualsConvertingEachTensor() throws {
        let input = try synthesizeTiny()
        let source = try SafetensorsFile(path: input)
        XCTAssertTrue(source.tensors.allSatisfy { $0.dtype == .f16 })
        for dtype in [DType.bf16, .f32] {
            var converter = ModelConverter(source: source)
            converter.dtype = dtype
            let out = dir + "/tiny.\(dtype.rawValue).safetensors"
            try convert(converter, to: out)
            let result = try SafetensorsFile(path: out)
            XCTAssertEqual(result.tensors.count, source.tensors.count)
            for t in source.tensors {
                let got = try XCTUnwrap(result.infoByName[t.name], t.name)
                XCTAssertEqual(got.shape, t.shape, t.name)
                XCTAssertEqual(got.dtype, dtype, t.name)
                let direct = try source.tensor(t.name).converted(to: dtype)
                let streamed = try result.tensor(t.name)
                withExtendedLifetime((direct, streamed)) {
                    XCTAssertTrue(direct.bytes.elementsEqual(streamed.bytes), "\(dtype.rawValue) \(t.name)")
                }
            }
            // f32 holds every f16 value exactly.
            if dtype == .f32 {
                let name = "model.diffusion_model.out.2.weight"
                XCTAssertEqual(try result.tensor(name).floats(), try source.tensor(name).floats())
            }
            // The hashes no longer describe the bytes; the rest of the metadata is kept.
            XCTAssertNil(result.metadata["modelspec.hash_sha256"])
            XCTAssertNil(result.metadata["sshs_model_hash"])
            XCTAssertNil(result.metadata["sshs_legacy_hash"])
            XCTAssertEqual(result.metadata["modelspec.architecture"], "mumu-sdxl-tiny")
            XCTAssertEqual(result.metadata["mumu.synth"], source.metadata["mumu.synth"])
            XCTAssertEqual(ModelDetector.detect(result.tensors, metadata: result.metadata).architecture, "sdxl-tiny")
        }

        // Keeping the dtype copies bytes and keeps the hashes.
        let same = dir + "/same.safetensors"
        try convert(ModelConverter(source: source), to: same)
        try assertSameTensors(try SafetensorsFile(path: same), source)
        XCTAssertEqual(try SafetensorsFile(path: same).metadata, source.metadata)
        XCTAssertEqual(try readFile(same), try readFile(input), "an identity conversion rewrites the same file")
    }

    func testIntegerTensorsKeepTheirDtype() throws {
        let path = dir + "/mixed.safetensors"
        let w = try SafetensorsWriter(path: path, tensors: [TensorInfo(name: "model.diffusion_model.out.2.bias", dtype: .f16, shape: [2]),
                                                              TensorInfo(name: "conditioner.embedders.0.transformer.text_model.embeddings.position_ids", dtype: .i64, shape: [1, 3])])
        try w.write(.owned(TensorInfo(name: "model.diffusion_model.out.2.bias", dtype: .f16, shape: [2]), bytes: try Convert.fromF32Array([1.5, -2], .f16)))
        let ids: [Int64] = [0, 1, 2]
        try ids.withUnsafeBytes { try w.write("conditioner.embedders.0.transformer.text_model.embeddings.position_ids", $0) }
        try w.finish()
        var converter = ModelConverter(source: try SafetensorsFile(path: path))
        converter.dtype = .f32
        let out = dir + "/mixed32.safetensors"
        try convert(converter, to: out)
        let result = try SafetensorsFile(path: out)
        XCTAssertEqual(result.infoByName["model.diffusion_model.out.2.bias"]?.dtype, .f32)
        XCTAssertEqual(try result.tensor("model.diffusion_model.out.2.bias").floats(), [1.5, -2])
        let kept = try result.tensor("conditioner.embedders.0.transformer.text_model.embeddings.position_ids")
        XCTAssertEqual(kept.info.dtype, .i64)
        XCTAssertEqual(withExtendedLifetime(kept) { Array(kept.bytes) }, ids.withUnsafeBytes { Array($0) })
    }

    // MARK: - components

    func testComponentSubsetKeepsOnlyThatComponent() throws {
        let source = try SafetensorsFile(path: try synthesizeTiny())
        var converter = ModelConverter(source: source)
        converter.components = ["unet"]
        let out = dir + "/unet.safetensors"
        try convert(converter, to: out)
        let result = try SafetensorsFile(path: out)
        let unetRows = tiny.tensors.filter { $0.component == "unet" && !$0.optional }
        XCTAssertEqual(Set(result.names), Set(unetRows.map(\.name)))
        XCTAssertTrue(result.names.allSatisfy { $0.hasPrefix("model.diffusion_model.") })
        for t in result.tensors {
            let x = try result.tensor(t.name), y = try source.tensor(t.name)
            withExtendedLifetime((x, y)) { XCTAssertTrue(x.bytes.elementsEqual(y.bytes), t.name) }
        }
        XCTAssertEqual(result.metadata["modelspec.hash_sha256"], "0x00", "bytes unchanged: the metadata is kept as it is")
        let d = ModelDetector.detect(result.tensors, metadata: result.metadata)
        XCTAssertEqual(d.architecture, "sdxl-tiny")
        XCTAssertEqual(d.components.map(\.name), ["unet"])

        converter.components = ["te1", "te2"]
        let te = dir + "/te.safetensors"
        try convert(converter, to: te)
        XCTAssertEqual(try SafetensorsFile(path: te).tensors.count, tiny.tensors.filter { ["te1", "te2"].contains($0.component) && !$0.optional }.count)

        converter.components = ["unet", "textencoder"]
        XCTAssertThrowsError(try converter.plan()) { XCTAssertTrue("\($0)".contains("unknown component 'textencoder'"), "\($0)") }
        converter.components = ["connector"]
        XCTAssertThrowsError(try converter.plan()) { XCTAssertTrue("\($0)".contains("none of the components"), "\($0)") }
    }

    // MARK: - shards

    func testShardedOutputReadsBackIdentical() throws {
        let input = try synthesizeTiny()
        let source = try SafetensorsFile(path: input)
        let converter = ModelConverter(source: source)
        let items = try converter.plan()
        let maxShard = 4_000_000
        let outDir = dir + "/sharded"
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: false)
        let sink = try ShardedSafetensorsWriter(path: outDir + "/tiny.safetensors", tensors: items.map(\.output),
                                                metadata: converter.metadata(changesBytes: false), maxShardSize: maxShard)
        try StreamExecutor.run(converter.jobs(items), into: sink, threads: 2)

        let files = listDirectory(outDir).sorted()
        let shards = files.filter { $0.hasSuffix(".safetensors") }
        XCTAssertTrue(files.contains("tiny.safetensors.index.json"))
        let total = source.tensors.reduce(0) { $0 + $1.byteCount }
        XCTAssertGreaterThanOrEqual(shards.count, total / maxShard, "about total / max shards: \(shards)")
        XCTAssertEqual(files.count, shards.count + 1, "shards and the index, no temporary files: \(files)")
        for (i, shard) in shards.enumerated() {
            XCTAssertEqual(shard, String(format: "tiny-%05d-of-%05d.safetensors", i + 1, shards.count))
            let f = try SafetensorsFile(path: outDir + "/" + shard)
            let size = f.tensors.reduce(0) { $0 + $1.byteCount }
            XCTAssertTrue(size <= maxShard || f.tensors.count == 1, "\(shard): \(size) bytes in \(f.tensors.count) tensors")
            XCTAssertEqual(f.metadata, source.metadata)
        }

        for path in [outDir + "/tiny.safetensors.index.json", outDir + "/" + shards[shards.count / 2]] {
            let (set, format) = try ModelFile.open(path)
            XCTAssertEqual(format, .shardedSafetensors)
            XCTAssertEqual(set.metadata, source.metadata)
            try assertSameTensors(set, source)
        }
        let index = try JSONParser.parse(String(decoding: try readFile(outDir + "/tiny.safetensors.index.json"), as: UTF8.self))
        XCTAssertEqual(index["metadata"]?["total_size"]?.intValue, total)
        XCTAssertEqual(index["weight_map"]?.objectValue?.count, source.tensors.count)
    }

    // MARK: - sgm <-> diffusers folder

    private func configs(_ d: ArchitectureDescriptor) -> [ModelComponent: JSONValue] {
        var out: [ModelComponent: JSONValue] = [:]
        for c in ModelComponent.allCases { if let cfg = d.component(c.rawValue)?.config, cfg != .null { out[c] = cfg } }
        return out
    }

    func testSGMToDiffusersFolderAndBackIsBitIdentical() throws {
        let input = try synthesizeTiny()
        let sgm = try SafetensorsFile(path: input)

        // sgm -> diffusers folder, wired as ConvertCommand wires it.
        XCTAssertEqual(StoredLayout.detect(sgm.names), .sgm)
        let asDiffusers = try LayoutConverter().convert(source: sgm, from: .sgm, to: .diffusers)
        XCTAssertEqual(asDiffusers.unmapped, [], "every sdxl-tiny tensor has a diffusers name")
        let converter = ModelConverter(source: asDiffusers)
        let items = try converter.plan()
        let folderPath = dir + "/tiny_diffusers"
        let sink = try DiffusersFolderWriter(path: folderPath, tensors: items.map(\.output), metadata: converter.metadata(changesBytes: false),
                                             configs: configs(tiny), overwrite: false)
        try StreamExecutor.run(converter.jobs(items), into: sink, threads: 2)

        XCTAssertEqual(Set(listDirectory(folderPath)), ["model_index.json", "unet", "vae", "text_encoder", "text_encoder_2"])
        XCTAssertEqual(Set(listDirectory(dir)), ["tiny.safetensors", "tiny_diffusers"], "no temporary folder left")
        XCTAssertTrue(fileExists(folderPath + "/unet/diffusion_pytorch_model.safetensors"))
        XCTAssertTrue(fileExists(folderPath + "/vae/diffusion_pytorch_model.safetensors"))
        XCTAssertTrue(fileExists(folderPath + "/text_encoder/model.safetensors"))
        XCTAssertTrue(fileExists(folderPath + "/text_encoder_2/model.safetensors"))

        // config.json files are the descriptor's configs.
        for (component, config) in configs(tiny) {
            let path = folderPath + "/" + component.diffusersFolder + "/config.json"
            let written = try JSONParser.parse(String(decoding: try readFile(path), as: UTF8.self))
            XCTAssertEqual(written, config, component.rawValue)
        }
        XCTAssertEqual(configs(tiny).count, 4)
        let index = try JSONParser.parse(String(decoding: try readFile(folderPath + "/model_index.json"), as: UTF8.self))
        XCTAssertEqual(index["_class_name"]?.stringValue, "StableDiffusionXLPipeline")
        XCTAssertEqual(index["unet"], .array([.string("diffusers"), .string("UNet2DConditionModel")]))
        XCTAssertEqual(index["vae"], .array([.string("diffusers"), .string("AutoencoderKL")]))
        XCTAssertEqual(index["text_encoder"], .array([.string("transformers"), .string("CLIPTextModel")]))
        XCTAssertEqual(index["text_encoder_2"], .array([.string("transformers"), .string("CLIPTextModelWithProjection")]))

        // The folder reads back, is recognised, and converts back to the same bytes.
        let folder = try DiffusersFolder(path: folderPath)
        XCTAssertEqual(folder.components, [.unet, .vae, .te1, .te2])
        XCTAssertEqual(folder.config(for: .unet), tiny.component("unet")?.config)
        let report = try Inspector.inspect(folderPath, hash: false)
        XCTAssertEqual(report.layout, "diffusers")
        XCTAssertEqual(report.detection.architecture, "sdxl-tiny")
        XCTAssertEqual(report.detection.components.map(\.status), ["complete", "complete", "complete", "complete"])

        let back = try LayoutConverter().convert(source: folder, to: .sgm)
        XCTAssertEqual(back.unmapped, [])
        var toSGM = ModelConverter(source: back)
        toSGM.threads = 2
        let backItems = try toSGM.plan()
        let roundTrip = dir + "/round_trip.safetensors"
        let writer = try SafetensorsWriter(path: roundTrip, tensors: backItems.map(\.output), metadata: sgm.metadata)
        try StreamExecutor.run(toSGM.jobs(backItems), into: writer, threads: 2)
        try assertSameTensors(try SafetensorsFile(path: roundTrip), sgm)
        XCTAssertTrue(try readFile(roundTrip) == readFile(input), "sgm -> diffusers -> sgm gives back the same file")
    }

    // MARK: - failures leave nothing behind

    /// The converter's jobs with the one at `index` replaced by a failing one.
    private func jobsFailing(at index: Int, _ converter: ModelConverter, _ items: [ModelConverter.Item]) -> [StreamJob] {
        var jobs = converter.jobs(items)
        let output = jobs[index].output
        jobs[index] = StreamJob(output: output) { emit in
            // Half the tensor, then an error: a part of it is already in the output.
            let half = [UInt8](repeating: 0, count: output.byteCount / 2)
            try half.withUnsafeBytes { try emit($0) }
            throw FormatError.unsupported("injected failure in \(output.name)")
        }
        return jobs
    }

    func testAFailingJobLeavesNoOutputAndNoTemporaryFiles() throws {
        let input = try synthesizeTiny()
        let source = try SafetensorsFile(path: input)
        var converter = ModelConverter(source: source)
        converter.dtype = .bf16
        let items = try converter.plan()
        let failing = items.count / 2

        // One file.
        let single = dir + "/out.safetensors"
        let w = try SafetensorsWriter(path: single, tensors: items.map(\.output), metadata: [:])
        // While writing, the output lives in a hidden temporary file beside the destination.
        XCTAssertEqual(leftovers(besides: ["tiny.safetensors"]).count, 1)
        XCTAssertTrue(leftovers(besides: ["tiny.safetensors"]).allSatisfy { $0.hasPrefix(".out.safetensors.mumu-partial-") })
        XCTAssertThrowsError(try StreamExecutor.run(jobsFailing(at: failing, converter, items), into: w, threads: 2)) {
            XCTAssertTrue("\($0)".contains("injected failure"), "\($0)")
        }
        XCTAssertFalse(fileExists(single))
        XCTAssertEqual(leftovers(besides: ["tiny.safetensors"]), [])

        // Shards.
        let shards = try ShardedSafetensorsWriter(path: dir + "/set.safetensors", tensors: items.map(\.output), metadata: [:], maxShardSize: 2_000_000)
        XCTAssertGreaterThan(shards.writers.count, 3)
        XCTAssertThrowsError(try StreamExecutor.run(jobsFailing(at: failing, converter, items), into: shards, threads: 2))
        XCTAssertEqual(leftovers(besides: ["tiny.safetensors"]), [], "no shard, no index, no temporary file")

        // A diffusers folder.
        let asDiffusers = try LayoutConverter().convert(source: source, from: .sgm, to: .diffusers)
        let dconv = ModelConverter(source: asDiffusers)
        let ditems = try dconv.plan()
        let folder = try DiffusersFolderWriter(path: dir + "/folder", tensors: ditems.map(\.output), metadata: [:],
                                               configs: configs(tiny), overwrite: false)
        XCTAssertTrue(leftovers(besides: ["tiny.safetensors"]).contains { $0.hasPrefix(".folder.mumu-partial-") })
        XCTAssertThrowsError(try StreamExecutor.run(jobsFailing(at: ditems.count / 2, dconv, ditems), into: folder, threads: 2))
        XCTAssertEqual(leftovers(besides: ["tiny.safetensors"]), [], "no folder, no hidden partial folder")

        // A job that produces fewer bytes than it declared is a failure too.
        var jobs = converter.jobs(items)
        let short = jobs[0].output
        jobs[0] = StreamJob(output: short) { emit in try [UInt8](repeating: 0, count: 2).withUnsafeBytes { try emit($0) } }
        let w2 = try SafetensorsWriter(path: single, tensors: items.map(\.output), metadata: [:])
        XCTAssertThrowsError(try StreamExecutor.run(jobs, into: w2, threads: 2)) { error in
            XCTAssertTrue("\(error)".contains("produced 2 bytes"), "\(error)")
            XCTAssertTrue("\(error)".contains(short.name), "\(error)")
        }
        XCTAssertEqual(leftovers(besides: ["tiny.safetensors"]), [])

        // And a job that writes past its tensor is refused by the writer.
        var overlong = converter.jobs(items)
        let last = overlong[1].output
        overlong[1] = StreamJob(output: last) { emit in
            try [UInt8](repeating: 0, count: last.byteCount + 2).withUnsafeBytes { try emit($0) }
        }
        let w3 = try SafetensorsWriter(path: single, tensors: items.map(\.output), metadata: [:])
        XCTAssertThrowsError(try StreamExecutor.run(overlong, into: w3, threads: 2)) { XCTAssertTrue("\($0)".contains("outside"), "\($0)") }
        XCTAssertEqual(leftovers(besides: ["tiny.safetensors"]), [])

        // The input is untouched, and the same conversion without the failure succeeds.
        XCTAssertEqual(try SafetensorsFile(path: input).tensors, source.tensors)
        try convert(converter, to: single)
        XCTAssertEqual(try SafetensorsFile(path: single).tensors.count, items.count)
        XCTAssertEqual(leftovers(besides: ["tiny.safetensors", "out.safetensors"]), [])
    }
}
