import Foundation
import MumuEncoder
import MumuFormats
import MumuSampler
import MumuTensor
import MumuTestSupport
import XCTest

/// `mumu synth --arch idefics2-*` folders as the encoder reads them, and `inspect` of Idefics2 folders.
final class SynthFolderTests: XCTestCase {
    /// A synthesized idefics2-tiny folder is inspected as idefics2-tiny and loads and runs in the encoder.
    func testSynthesizedTinyFolderLoadsInTheEncoder() throws {
        let dir = try makeTemporaryDirectory("synth-folder") + "/idefics2-tiny"
        var synth = Synthesizer(architecture: try XCTUnwrap(Architectures.named("idefics2-tiny")))
        synth.dtype = .bf16
        synth.seed = 3
        try synth.write(toFolder: dir, overwrite: false)

        let report = try Inspector.inspect(dir, hash: false, cache: nil)
        XCTAssertEqual(report.detection.architecture, "idefics2-tiny")
        XCTAssertEqual(report.detection.family, "idefics2")
        XCTAssertEqual(report.layout, "transformers")

        let folder = try Idefics2Folder(path: dir)
        XCTAssertEqual(folder.prefix, "model.")
        XCTAssertEqual(folder.config.vision.hiddenSize, 32)
        XCTAssertEqual(folder.config.vision.imageSize, 28)
        XCTAssertEqual(folder.config.text.vocabulary, 32003)
        XCTAssertEqual(folder.config.text.hiddenSize, 64)
        XCTAssertEqual(folder.config.text.layers, 2)
        XCTAssertEqual(folder.config.imageTokenId, 32001)
        let encoder = try Idefics2Encoder(folder: folder, precision: .f32)
        // One 28x42 image (2x3 patches) inside a short prompt.
        var rng = SeededRNG(seed: 1)
        let pixels = rng.floats(3 * 28 * 42)
        let image = try encoder.encodeImage(pixels: pixels, height: 28, width: 42)
        XCTAssertEqual(image.shape, [6, 64])
        let ids: [Int32] = [1, 330, 32000] + Array(repeating: 32001, count: 6) + [32000, 5465, 2]
        let hidden = try encoder.hiddenStates(ids: ids, imageEmbeddings: [image])
        XCTAssertEqual(hidden.shape, [ids.count, 64])
        XCTAssertTrue(hidden.data.allSatisfy(\.isFinite))
        // Final RMSNorm with gains near 1: rows of RMS near 1.
        let rms = (hidden.data[0..<64].reduce(0) { $0 + $1 * $1 } / 64).squareRoot()
        XCTAssertEqual(rms, 1, accuracy: 0.2)
    }

    /// The encoder fixture (an Idefics2Model: names without `model.`, image size 56) is an Idefics2 of no known
    /// architecture: inspect says family idefics2 and why idefics2-tiny does not fit.
    func testFixtureFolderIsFamilyIdefics2() throws {
        let report = try Inspector.inspect(NetworkFixtures.idefics2, hash: false, cache: nil)
        XCTAssertEqual(report.format, .transformers)
        XCTAssertNil(report.detection.architecture)
        XCTAssertEqual(report.detection.family, "idefics2")
        let notes = report.detection.notes.joined(separator: "\n")
        XCTAssertTrue(notes.contains("closest is idefics2-tiny"), notes)
        XCTAssertTrue(notes.contains("model.vision_model.embeddings.position_embedding.weight"), notes)
        XCTAssertTrue(notes.contains("without the 'model.' prefix"), notes)
        XCTAssertEqual(report.detection.prediction.type, "none")
    }
}
