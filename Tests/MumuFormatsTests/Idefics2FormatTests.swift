import Foundation
import MumuFormats
import MumuTensor
import MumuTestSupport
import XCTest

/// The Idefics2 descriptors (formats/idefics2-*.json), transformers folders in `ModelFile.open` / inspect, and
/// `Synthesizer.write(toFolder:)`.
final class Idefics2FormatTests: XCTestCase {
    func testDescriptorsAreEncoders() throws {
        let big = try XCTUnwrap(Architectures.named("idefics2-8b"))
        XCTAssertEqual(big.kind, .encoder)
        XCTAssertEqual(big.family, "idefics2")
        XCTAssertEqual(big.components.map(\.name), ["vision", "connector", "perceiver", "text", "lm_head"])
        XCTAssertEqual(big.components.filter(\.optional).map(\.name), ["perceiver", "lm_head"])
        XCTAssertEqual(big.parameterCounts["text"], 7_110_672_384)
        let byName = big.tensorsByName
        XCTAssertEqual(byName["model.vision_model.embeddings.position_embedding.weight"]?.shape, [4900, 1152])
        XCTAssertEqual(byName["model.text_model.layers.31.self_attn.k_proj.weight"]?.shape, [1024, 4096])
        XCTAssertEqual(byName["model.connector.modality_projection.gate_proj.weight"]?.shape, [14336, 1152])
        XCTAssertEqual(byName["model.text_model.embed_tokens.weight"]?.shape, [32003, 4096])
        XCTAssertEqual(big.componentOf(key: "model.connector.perceiver_resampler.latents"), "perceiver")
        XCTAssertEqual(big.componentOf(key: "model.connector.modality_projection.up_proj.weight"), "connector")
        XCTAssertEqual(big.folderConfig?["model_type"]?.stringValue, "idefics2")
        XCTAssertEqual(big.folderConfig?["vision_config"]?["num_hidden_layers"]?.intValue, 27)
        // SDXL's descriptors are decoders, and the decoder list leaves the encoders out.
        XCTAssertEqual(Architectures.named("sdxl-base")?.kind, .decoder)
        XCTAssertFalse(Architectures.decoders.contains { $0.family == "idefics2" })
        XCTAssertNil(Architectures.named("sdxl-base")?.folderConfig)
        // A decoder file cannot be written by the folder path, nor an encoder as one file.
        XCTAssertThrowsError(try Synthesizer(architecture: Architectures.named("sdxl-tiny")!).folderFiles(tokenizer: nil))
        let dir = try makeTemporaryDirectory("i2")
        XCTAssertThrowsError(try Synthesizer(architecture: Architectures.named("idefics2-tiny")!).write(toFile: dir + "/x.safetensors", overwrite: false))
    }

    func testSynthFolderIsInspectedAsIdefics2Tiny() throws {
        let dir = try makeTemporaryDirectory("i2") + "/tiny"
        var synth = Synthesizer(architecture: try XCTUnwrap(Architectures.named("idefics2-tiny")))
        synth.dtype = .bf16
        let (files, _) = try synth.write(toFolder: dir, overwrite: false)
        XCTAssertEqual(files, ["model.safetensors", "config.json", "preprocessor_config.json"])
        let config = try JSONParser.parse(try String(contentsOfFile: dir + "/config.json", encoding: .utf8))
        XCTAssertEqual(config["dtype"]?.stringValue, "bfloat16")
        XCTAssertEqual(config["architectures"]?.arrayValue?.first?.stringValue, "Idefics2ForConditionalGeneration")
        let pre = try JSONParser.parse(try String(contentsOfFile: dir + "/preprocessor_config.json", encoding: .utf8))
        XCTAssertEqual(pre["mumu_image_size"]?.intValue, 448)
        let file = try SafetensorsFile(path: dir + "/model.safetensors")
        XCTAssertEqual(file.metadata["format"], "pt")
        XCTAssertTrue(file.tensors.allSatisfy { $0.dtype == .bf16 })

        let report = try Inspector.inspect(dir, hash: false, cache: nil)
        XCTAssertEqual(report.format, .transformers)
        XCTAssertEqual(report.layout, "transformers")
        XCTAssertEqual(report.detection.architecture, "idefics2-tiny")
        XCTAssertEqual(report.detection.family, "idefics2")
        XCTAssertEqual(report.detection.components.map(\.name), ["vision", "connector", "text"])
        XCTAssertEqual(report.detection.prediction.type, "none")
        XCTAssertEqual(report.sizeBytes, FileIdentity(path: dir + "/model.safetensors")?.size)
        XCTAssertFalse(report.text(includeKeys: false).contains("prediction"))

        // Overwrite refused without force; nothing left behind on failure.
        XCTAssertThrowsError(try synth.write(toFolder: dir, overwrite: false))
        let parent = (dir as NSString).deletingLastPathComponent
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: parent), ["tiny"])
    }

    func testShardedFolderAndIndexSize() throws {
        let dir = try makeTemporaryDirectory("i2") + "/sharded"
        var synth = Synthesizer(architecture: try XCTUnwrap(Architectures.named("idefics2-tiny")))
        synth.dtype = .f32
        synth.components = ["vision", "connector", "text", "perceiver", "lm_head"]
        let (files, bytes) = try synth.write(toFolder: dir, overwrite: false, maxShardSize: 4_000_000)
        let shards = files.filter { $0.hasPrefix("model-") }
        XCTAssertGreaterThan(shards.count, 1)
        XCTAssertEqual(shards.first, "model-00001-of-0000\(shards.count).safetensors")
        XCTAssertTrue(files.contains("model.safetensors.index.json"))
        for s in shards {
            let f = try SafetensorsFile(path: dir + "/" + s)
            XCTAssertTrue(f.tensors.reduce(0) { $0 + $1.byteCount } <= 4_000_000 || f.tensors.count == 1, s)
        }
        let report = try Inspector.inspect(dir, hash: false, cache: nil)
        XCTAssertEqual(report.detection.architecture, "idefics2-tiny")
        XCTAssertEqual(report.detection.components.map(\.name), ["vision", "connector", "perceiver", "text", "lm_head"])
        // inspect of the index reports the whole set's size on disk (issue 12).
        let index = try Inspector.inspect(dir + "/model.safetensors.index.json", hash: false, cache: nil)
        let onDisk = (shards + ["model.safetensors.index.json"]).reduce(0) { $0 + (FileIdentity(path: dir + "/" + $1)?.size ?? 0) }
        XCTAssertEqual(index.sizeBytes, onDisk)
        XCTAssertGreaterThan(index.sizeBytes, bytes)
        XCTAssertEqual(index.format, .shardedSafetensors)
        XCTAssertEqual(index.detection.architecture, "idefics2-tiny")
    }

    func testBadTransformersFolders() throws {
        let dir = try makeTemporaryDirectory("i2")
        try writeFile(Array("{\"model_type\": \"idefics2\"}".utf8), dir + "/config.json")
        XCTAssertThrowsError(try ModelFile.open(dir)) { e in
            XCTAssertTrue("\(e)".contains("model.safetensors"), "\(e)")
        }
        try writeTensors(dir + "/model.safetensors", [("model.text_model.norm.weight", [2], [1, 1])])
        try writeFile(Array("{\"model_type\": ".utf8), dir + "/config.json")
        XCTAssertThrowsError(try ModelFile.open(dir)) { e in
            XCTAssertTrue("\(e)".contains("config.json"), "\(e)")
        }
        try writeFile(Array("{\"x\": 1}".utf8), dir + "/config.json")
        XCTAssertThrowsError(try ModelFile.open(dir)) { e in
            XCTAssertTrue("\(e)".contains("model_type"), "\(e)")
        }
        var synth = Synthesizer(architecture: try XCTUnwrap(Architectures.named("idefics2-tiny")))
        XCTAssertThrowsError(try synth.write(toFolder: dir + "/out", overwrite: false, tokenizer: dir + "/missing.json")) { e in
            XCTAssertTrue("\(e)".contains("missing.json"), "\(e)")
        }
        try writeFile(Array("[1]".utf8), dir + "/tok.json")
        XCTAssertThrowsError(try synth.write(toFolder: dir + "/out", overwrite: false, tokenizer: dir + "/tok.json")) { e in
            XCTAssertTrue("\(e)".contains("tok.json"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out"))
        // A tokenizer.json is copied as is.
        let tokenizer = "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\"}, \"added_tokens\": []}"
        try writeFile(Array(tokenizer.utf8), dir + "/tokenizer.json")
        let (files, _) = try synth.write(toFolder: dir + "/with-tokenizer", overwrite: false, tokenizer: dir + "/tokenizer.json")
        XCTAssertEqual(files.last, "tokenizer.json")
        XCTAssertEqual(try String(contentsOfFile: dir + "/with-tokenizer/tokenizer.json", encoding: .utf8), tokenizer)
        synth.components = ["vision", "nope"]
        XCTAssertThrowsError(try synth.write(toFolder: dir + "/out", overwrite: false))
    }
}
