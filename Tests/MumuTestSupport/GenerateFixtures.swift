import Foundation
import MumuFormats
import MumuSampler
import MumuTensor
import XCTest

/// Whole generations against diffusers' StableDiffusionXLPipeline on the tiny random SDXL fixture
/// (scripts/gen_fixtures_generate.py -> MumuSamplerTests/Fixtures/generate), shared by the sampler's and the
/// generation job's tests.
///
/// Tolerances. The bound is 2/255 per channel per pixel on the 8-bit image; we also hold the final latents
/// to 2e-3 relative to their largest magnitude: the networks alone agree with torch to ~3e-6 (UNetTests), and a
/// few sampler steps with guidance 5 amplify that by about the guidance factor per step (the tiny random UNet is
/// far from a denoiser, so the latents grow to |x| ~ 30); a wrong step, schedule or noise draw moves the latents
/// by whole units and the pixels by tens of levels (euler vs euler_a differ by 93 levels).
public enum GenerateFixtures {
    nonisolated(unsafe) static var pipelineCache: SDXLPipeline?
    public static func pipeline() throws -> SDXLPipeline {
        if let p = pipelineCache { return p }
        let p = try SDXLPipeline(checkpoint: DecoderCheckpoint(path: DecoderFixtures.pipeline))
        pipelineCache = p
        return p
    }


    public static func cases() throws -> [[String: Any]] {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: DecoderFixtures.generate.appendingPathComponent("cases.json"))) as! [String: Any]
        return json["cases"] as! [[String: Any]]
    }

    public static func settings(_ c: [String: Any]) -> GenerationSettings {
        var s = GenerationSettings(prompt: c["prompt"] as! String)
        s.negativePrompt = c["negative"] as! String
        s.width = c["width"] as! Int
        s.height = c["height"] as! Int
        s.steps = c["steps"] as! Int
        s.cfg = Float(c["cfg"] as! Double)
        s.seed = UInt64(c["seed"] as! Int)
        s.sampler = SamplerKind(rawValue: c["sampler"] as! String)!
        s.spacing = NoiseSchedule.Spacing(rawValue: c["spacing"] as! String)!
        s.karras = c["karras"] as! Bool
        s.prediction = Prediction(rawValue: c["prediction"] as! String)!
        s.images = c["images"] as! Int
        return s
    }

    /// Final latents within 2e-3 of their largest magnitude and the 8-bit image within 2/255 (see above).
    public static func compare(_ latents: Tensor, _ pipe: SDXLPipeline, _ want: [String: Tensor], _ name: String, images: Int,
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let wantLatents = want["latents"]!
        let scale = wantLatents.data.map(abs).max()!
        checkMaxError(latents, wantLatents, "\(name) latents (max |x| \(scale))", tolerance: 2e-3 * scale, file: file, line: line)
        let pixels = SDXLPipeline.rgbBytes(try pipe.decode(latents))
        let wantPixels = want["pixels"]!
        let per = wantPixels.count / images
        var worst = 0, off = 0
        for (n, image) in pixels.enumerated() {
            XCTAssertEqual(image.count, per, name, file: file, line: line)
            for (i, v) in image.enumerated() {
                let d = abs(Int(v) - Int(wantPixels.data[n * per + i]))
                worst = max(worst, d)
                if d > 0 { off += 1 }
            }
        }
        XCTAssertLessThanOrEqual(worst, 2, "\(name): pixels differ by up to \(worst)/255", file: file, line: line)
        print("\(name): pixels max diff \(worst)/255, \(off) of \(wantPixels.count) values differ")
    }
}
