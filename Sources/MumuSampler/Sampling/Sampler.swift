import Foundation

/// The samplers of `mumu generate`, each as the diffusers scheduler a user would reproduce it with:
/// euler = EulerDiscreteScheduler, euler_a = EulerAncestralDiscreteScheduler, dpmpp_2m = DPMSolverMultistepScheduler
/// (dpmsolver++, second order, final step first order), ddim = DDIMScheduler (eta 0).
public enum SamplerKind: String, Sendable, CaseIterable {
    case euler
    case eulerAncestral = "euler_a"
    case dpmpp2m = "dpmpp_2m"
    case ddim

    /// A1111's name (the infotext's `Sampler`).
    public var a1111Name: String {
        switch self {
        case .euler: return "Euler"
        case .eulerAncestral: return "Euler a"
        case .dpmpp2m: return "DPM++ 2M"
        case .ddim: return "DDIM"
        }
    }

    /// The diffusers scheduler class that gives the same steps.
    public var diffusersScheduler: String {
        switch self {
        case .euler: return "EulerDiscreteScheduler"
        case .eulerAncestral: return "EulerAncestralDiscreteScheduler"
        case .dpmpp2m: return "DPMSolverMultistepScheduler"
        case .ddim: return "DDIMScheduler"
        }
    }
}

/// What the UNet predicts (the checkpoint's `prediction_type`).
public enum Prediction: String, Sendable, CaseIterable {
    case epsilon
    case v = "v_prediction"
}

/// The walk of one generation: per step the timestep given to the UNet, the sigma it starts from and the sigma it
/// goes to, in the variance-exploding form of k-diffusion (x = x0 + sigma·noise). Every sampler is written there;
/// the variance-preserving schedulers of diffusers (DDIM, DPM-Solver) are the same steps once their latents are
/// scaled by sqrt(sigma² + 1), which `initialScale` and `finalScale` do at the two ends.
public struct SamplingPlan: Sendable, Equatable {
    public struct Step: Sendable, Equatable {
        public var timestep: Float
        public var sigma: Float
        public var next: Float
    }
    public let sampler: SamplerKind
    public let steps: [Step]
    /// Initial latents = standard normal noise · initialScale (diffusers' init_noise_sigma, in this form).
    public let initialScale: Float
    /// Latents handed to the VAE = x · finalScale (1 unless the last sigma is not 0: DDIM ends at sigma(t = 0)).
    public let finalScale: Float

    public init(sampler: SamplerKind, steps count: Int, spacing: NoiseSchedule.Spacing, karras: Bool,
                schedule: NoiseSchedule = NoiseSchedule()) throws {
        guard count >= 1 && count <= schedule.trainSteps else {
            throw SamplerError.invalid("steps must be in 1...\(schedule.trainSteps), got \(count)")
        }
        self.sampler = sampler
        func walk(_ t: [Float], _ sigmas: [Float]) -> [Step] {
            t.indices.map { Step(timestep: t[$0], sigma: sigmas[$0], next: sigmas[$0 + 1]) }
        }
        switch sampler {
        case .euler, .eulerAncestral:
            let (t, sigmas) = schedule.steps(count, spacing: spacing, karras: karras)
            steps = walk(t, sigmas)
            initialScale = schedule.initNoiseSigma(sigmas, spacing: spacing)
        case .dpmpp2m:
            let (t, sigmas) = schedule.dpmSolverSteps(count, spacing: spacing, karras: karras)
            steps = walk(t, sigmas)
            initialScale = (sigmas[0] * sigmas[0] + 1).squareRoot()
        case .ddim:
            guard !karras else { throw SamplerError.invalid("ddim walks its own timesteps; Karras sigmas are for euler, euler_a and dpmpp_2m") }
            let (t, sigmas, next) = schedule.ddimSteps(count, spacing: spacing)
            steps = t.indices.map { Step(timestep: t[$0], sigma: sigmas[$0], next: next[$0]) }
            initialScale = (sigmas[0] * sigmas[0] + 1).squareRoot()
        }
        let last = steps[steps.count - 1].next
        finalScale = 1 / (last * last + 1).squareRoot()
    }

    /// What the UNet is given at step `i`: x / sqrt(sigma² + 1).
    public func inputScale(_ i: Int) -> Float { 1 / (steps[i].sigma * steps[i].sigma + 1).squareRoot() }
}

public enum SamplerError: Error, CustomStringConvertible {
    case invalid(String)
    public var description: String {
        switch self { case let .invalid(m): return m }
    }
}

/// Runs the steps of a plan on latents x (f32, any shape), given the model's output at each step.
public struct Sampler {
    public let plan: SamplingPlan
    public let prediction: Prediction
    /// DPM++ 2M's previous denoised estimate.
    private var previousDenoised: [Float]?

    public init(plan: SamplingPlan, prediction: Prediction) {
        self.plan = plan
        self.prediction = prediction
    }

    /// Advances x by step `i` given the model output (epsilon or v, already guided). `generator` gives euler_a's
    /// noise: one draw of x's size per step, every step, as diffusers draws it.
    public mutating func step(_ i: Int, x: inout [Float], output: [Float], generator: inout TorchGenerator) {
        precondition(x.count == output.count, "sampler: latents \(x.count) and model output \(output.count) differ")
        let s = plan.steps[i]
        let sigma = s.sigma, next = s.next
        let denoised = self.denoised(x, output, sigma: sigma)
        switch plan.sampler {
        case .euler, .ddim:
            // d = (x - D) / sigma; x += d (next - sigma). DDIM (eta 0) is this step on its own sigmas.
            let ratio = (next - sigma) / sigma
            for j in x.indices { x[j] += (x[j] - denoised[j]) * ratio }
        case .eulerAncestral:
            let up = next == 0 ? 0 : min(next, (next * next * (sigma * sigma - next * next) / (sigma * sigma)).squareRoot())
            let down = (next * next - up * up).squareRoot()
            let noise = generator.randn(x.count)
            let ratio = (down - sigma) / sigma
            for j in x.indices { x[j] += (x[j] - denoised[j]) * ratio + noise[j] * up }
        case .dpmpp2m:
            // x = (next / sigma) x - (e^-h - 1) D', h = ln(sigma / next); D' = D on the first step and the last
            // (to sigma 0), else (1 + 1/(2r)) D - 1/(2r) D_prev with r = h_prev / h.
            if next == 0 {
                x = denoised
            } else {
                let h = log(sigma / next)
                let ratio = next / sigma, c = -expm1(-h)
                if let prev = previousDenoised, i > 0 {
                    let hPrev = log(plan.steps[i - 1].sigma / sigma)
                    let k = 1 / (2 * (hPrev / h))
                    for j in x.indices { x[j] = ratio * x[j] + c * ((1 + k) * denoised[j] - k * prev[j]) }
                } else {
                    for j in x.indices { x[j] = ratio * x[j] + c * denoised[j] }
                }
            }
            previousDenoised = denoised
        }
    }

    /// The model's estimate of the clean latents: x - sigma·eps, or for v-prediction
    /// x / (sigma² + 1) - sigma / sqrt(sigma² + 1) · v.
    func denoised(_ x: [Float], _ output: [Float], sigma: Float) -> [Float] {
        switch prediction {
        case .epsilon:
            return zip(x, output).map { $0 - sigma * $1 }
        case .v:
            let a = 1 / (sigma * sigma + 1), b = sigma / (sigma * sigma + 1).squareRoot()
            return zip(x, output).map { a * $0 - b * $1 }
        }
    }
}
