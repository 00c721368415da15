import Foundation
import XCTest
import MumuSampler

/// NoiseSchedule against diffusers' EulerDiscreteScheduler.set_timesteps with SDXL's settings
/// (scripts/gen_fixtures_schedules.py -> Fixtures/schedules.json): 3 spacings x Karras or not x 5 step counts.
final class NoiseScheduleTests: XCTestCase {
    /// Relative tolerance: diffusers mixes f32 (torch) and f64 (numpy) arithmetic; we compute the training table
    /// in f32 as torch does and the rest in f64, so values agree to a few f32 ulps.
    static let tolerance = 2e-6

    static func fixture() throws -> [String: Any] {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("schedules.json")
        return try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }

    /// Same count, and each value within the relative tolerance (or `absolute`, for values near 0).
    static func close(_ got: [Float], _ want: [Double], _ label: String, absolute: Double = 1e-9,
                      file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.count, want.count, label, file: file, line: line)
        for (g, w) in zip(got, want) {
            XCTAssertEqual(Double(g), w, accuracy: max(absolute, abs(w) * tolerance), "\(label): \(got) vs \(want)", file: file, line: line)
        }
    }

    func testMatchesDiffusers() throws {
        let json = try Self.fixture()
        let schedule = NoiseSchedule()
        let train = (json["train_sigmas"] as! [Double])
        for (i, s) in schedule.trainSigmas.enumerated() {
            XCTAssertEqual(Double(s), train[i], accuracy: train[i] * Self.tolerance, "training sigma \(i)")
        }
        var worst = 0.0
        for case let c as [String: Any] in json["cases"] as! [Any] {
            let spacing = NoiseSchedule.Spacing(rawValue: c["spacing"] as! String)!
            let karras = c["karras"] as! Bool, steps = c["steps"] as! Int
            let label = "\(spacing) karras=\(karras) steps=\(steps)"
            let got = schedule.steps(steps, spacing: spacing, karras: karras)
            let wantS = c["sigmas"] as! [Double]
            Self.close(got.timesteps, c["timesteps"] as! [Double], label + " timesteps", absolute: 1e-3)
            Self.close(got.sigmas, wantS, label + " sigmas")
            for (g, w) in zip(got.sigmas, wantS) {
                worst = max(worst, w == 0 ? Double(g) : abs(Double(g) - w) / max(w, 1e-12))
            }
            XCTAssertEqual(Double(schedule.initNoiseSigma(got.sigmas, spacing: spacing)), c["init_noise_sigma"] as! Double,
                           accuracy: 1e-5, "\(label) init noise sigma")
        }
        print("schedules: worst relative sigma error \(worst)")
    }

    /// DPMSolverMultistepScheduler's own spacing and full-range Karras sigmas (rounded timesteps), and DDIMScheduler's
    /// per-step sigma pairs (`dpm_cases`, `ddim_cases`), same tolerance.
    func testSolverSchedulesMatchDiffusers() throws {
        let json = try Self.fixture()
        let schedule = NoiseSchedule()
        var n = 0
        for case let c as [String: Any] in json["dpm_cases"] as! [Any] {
            let spacing = NoiseSchedule.Spacing(rawValue: c["spacing"] as! String)!
            let karras = c["karras"] as! Bool, steps = c["steps"] as! Int
            let label = "dpm \(spacing) karras=\(karras) steps=\(steps)"
            let got = schedule.dpmSolverSteps(steps, spacing: spacing, karras: karras)
            Self.close(got.timesteps, c["timesteps"] as! [Double], label + " timesteps", absolute: 1e-3)
            Self.close(got.sigmas, c["sigmas"] as! [Double], label + " sigmas")
            let plan = try SamplingPlan(sampler: .dpmpp2m, steps: steps, spacing: spacing, karras: karras)
            // diffusers' init_noise_sigma is 1 in its variance-preserving scale: sqrt(sigma_0² + 1) in ours.
            XCTAssertEqual(Double(plan.initialScale / (got.sigmas[0] * got.sigmas[0] + 1).squareRoot()), c["init_noise_sigma"] as! Double, accuracy: 1e-6, label)
            n += 1
        }
        for case let c as [String: Any] in json["ddim_cases"] as! [Any] {
            let spacing = NoiseSchedule.Spacing(rawValue: c["spacing"] as! String)!
            let steps = c["steps"] as! Int
            let label = "ddim \(spacing) steps=\(steps)"
            let got = schedule.ddimSteps(steps, spacing: spacing)
            Self.close(got.timesteps, c["timesteps"] as! [Double], label + " timesteps", absolute: 1e-3)
            Self.close(got.sigmas, c["sigmas"] as! [Double], label + " sigmas")
            Self.close(got.next, c["next_sigmas"] as! [Double], label + " next sigmas")
            n += 1
        }
        XCTAssertEqual(n, 45)
    }
}
