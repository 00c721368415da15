import Foundation
import XCTest
import MumuSampler

/// NoiseSchedule against diffusers' EulerDiscreteScheduler.set_timesteps with SDXL's settings
/// (scripts/gen_fixtures_schedules.py -> Fixtures/schedules.json): 3 spacings x Karras or not x 5 step counts.
final class NoiseScheduleTests: XCTestCase {
    /// Relative tolerance: diffusers mixes f32 (torch) and f64 (numpy) arithmetic; we compute the training table
    /// in f32 as torch does and the rest in f64, so values agree to a few f32 ulps.
    static let tolerance = 2e-6

    func testMatchesDiffusers() throws {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("schedules.json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
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
            let wantT = c["timesteps"] as! [Double], wantS = c["sigmas"] as! [Double]
            XCTAssertEqual(got.timesteps.count, wantT.count, label)
            XCTAssertEqual(got.sigmas.count, wantS.count, label)
            for (g, w) in zip(got.timesteps, wantT) {
                XCTAssertEqual(Double(g), w, accuracy: max(1e-3, abs(w) * Self.tolerance), "\(label) timesteps \(got.timesteps) vs \(wantT)")
            }
            for (g, w) in zip(got.sigmas, wantS) {
                let e = abs(Double(g) - w) / max(w, 1e-12)
                worst = max(worst, w == 0 ? Double(g) : e)
                XCTAssertEqual(Double(g), w, accuracy: max(1e-9, w * Self.tolerance), "\(label) sigmas")
            }
            XCTAssertEqual(Double(schedule.initNoiseSigma(got.sigmas, spacing: spacing)), c["init_noise_sigma"] as! Double,
                           accuracy: 1e-5, "\(label) init noise sigma")
        }
        print("schedules: worst relative sigma error \(worst)")
    }

    /// DPMSolverMultistepScheduler's own spacing and full-range Karras sigmas (rounded timesteps), and DDIMScheduler's
    /// per-step sigma pairs (`dpm_cases`, `ddim_cases`), same tolerance.
    func testSolverSchedulesMatchDiffusers() throws {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("schedules.json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let schedule = NoiseSchedule()
        func close(_ got: [Float], _ want: [Double], _ label: String, absolute: Double = 1e-9) {
            XCTAssertEqual(got.count, want.count, label)
            for (g, w) in zip(got, want) {
                XCTAssertEqual(Double(g), w, accuracy: max(absolute, abs(w) * Self.tolerance), "\(label): \(got) vs \(want)")
            }
        }
        var n = 0
        for case let c as [String: Any] in json["dpm_cases"] as! [Any] {
            let spacing = NoiseSchedule.Spacing(rawValue: c["spacing"] as! String)!
            let karras = c["karras"] as! Bool, steps = c["steps"] as! Int
            let label = "dpm \(spacing) karras=\(karras) steps=\(steps)"
            let got = schedule.dpmSolverSteps(steps, spacing: spacing, karras: karras)
            close(got.timesteps, c["timesteps"] as! [Double], label + " timesteps", absolute: 1e-3)
            close(got.sigmas, c["sigmas"] as! [Double], label + " sigmas")
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
            close(got.timesteps, c["timesteps"] as! [Double], label + " timesteps", absolute: 1e-3)
            close(got.sigmas, c["sigmas"] as! [Double], label + " sigmas")
            close(got.next, c["next_sigmas"] as! [Double], label + " next sigmas")
            n += 1
        }
        XCTAssertEqual(n, 45)
    }
}
