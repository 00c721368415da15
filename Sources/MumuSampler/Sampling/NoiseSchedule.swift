import Foundation

/// SDXL's noise schedule and the step sigmas a sampler walks, as diffusers' `EulerDiscreteScheduler.set_timesteps`
/// computes them (docs/generating.md, "Samplers and schedules"): training betas scaled_linear from 0.00085 to
/// 0.012 over 1000 steps, sigma(t) = sqrt((1 - ᾱ_t) / ᾱ_t), timesteps spaced `leading` (SDXL's default,
/// steps_offset 1), `trailing` or `linspace`, sigmas interpolated linearly in t, optionally replaced by Karras'
/// sigmas (rho 7, between the first and last spaced sigma, timesteps mapped back through the log-sigma table),
/// and a final 0.
public struct NoiseSchedule: Sendable, Equatable {
    public enum Spacing: String, Sendable, CaseIterable { case leading, trailing, linspace }

    public var trainSteps = 1000
    public var betaStart = 0.00085
    public var betaEnd = 0.012
    public var stepsOffset = 1

    public init() {}

    /// The training sigmas, computed as torch does (f32 betas = linspace(sqrt(start), sqrt(end))², cumprod).
    public var trainSigmas: [Float] {
        let a = Float(betaStart.squareRoot()), b = Float(betaEnd.squareRoot())
        // torch's CPU cumprod accumulates f32 in f64 and rounds each output.
        var cumulative = 1.0
        return (0..<trainSteps).map { i in
            // torch.linspace(a, b, n): a + i * step for the first half, b - (n - 1 - i) * step for the second.
            let step = (b - a) / Float(trainSteps - 1)
            let root = i < trainSteps / 2 ? a + Float(i) * step : b - Float(trainSteps - 1 - i) * step
            cumulative *= Double(1 - root * root)
            let acp = Float(cumulative)
            return ((1 - acp) / acp).squareRoot()
        }
    }

    /// Timesteps (model inputs, one per step) and sigmas (one per step plus the final 0) for `steps` steps.
    public func steps(_ steps: Int, spacing: Spacing, karras: Bool = false) -> (timesteps: [Float], sigmas: [Float]) {
        precondition(steps >= 1 && steps <= trainSteps, "steps must be in 1...\(trainSteps), got \(steps)")
        var t: [Double]
        switch spacing {
        case .leading:
            let ratio = trainSteps / steps
            t = (0..<steps).reversed().map { Double($0 * ratio + stepsOffset) }
        case .trailing:
            let ratio = Double(trainSteps) / Double(steps)
            t = (0..<steps).map { (Double(trainSteps) - Double($0) * ratio).rounded(.toNearestOrEven) - 1 }
        case .linspace:
            let last = Double(trainSteps - 1)
            t = (0..<steps).map { steps == 1 ? 0 : last * Double(steps - 1 - $0) / Double(steps - 1) }
        }
        let table = trainSigmas.map(Double.init)
        var sigmas = t.map { Self.interpolate(table, at: $0) }
        if karras {
            // diffusers' Euler takes Karras' end points from the spaced sigmas, not the whole training table.
            sigmas = Self.karras(from: sigmas[steps - 1], to: sigmas[0], steps: steps)
            let logTable = table.map { Foundation.log($0) }
            t = sigmas.map { Self.timestep(ofSigma: $0, logSigmas: logTable) }
        }
        return (t.map { Float($0) }, sigmas.map { Float($0) } + [0])
    }

    /// DPMSolverMultistepScheduler's steps (dpmsolver++, final sigma 0): its own spacing rules (leading and
    /// linspace place `steps + 1` points and drop the last), sigmas interpolated at the integer timesteps, or
    /// Karras sigmas over the whole training range (sigma_max 14.61 .. sigma_min 0.029) with the timesteps mapped
    /// back through the log-sigma table and rounded. The model sees x / sqrt(sigma² + 1) as with Euler; the initial
    /// noise is unit variance in that variance-preserving scale, i.e. scaled by sqrt(sigma_0² + 1) here.
    public func dpmSolverSteps(_ steps: Int, spacing: Spacing, karras: Bool = false) -> (timesteps: [Float], sigmas: [Float]) {
        precondition(steps >= 1 && steps <= trainSteps, "steps must be in 1...\(trainSteps), got \(steps)")
        var t: [Double]
        switch spacing {
        case .leading:
            let ratio = trainSteps / (steps + 1)
            t = (1...steps).reversed().map { Double($0 * ratio + stepsOffset) }
        case .trailing:
            let ratio = Double(trainSteps) / Double(steps)
            t = (0..<steps).map { (Double(trainSteps) - Double($0) * ratio).rounded(.toNearestOrEven) - 1 }
        case .linspace:
            let last = Double(trainSteps - 1)
            // numpy's linspace: i · (stop / div), then round half to even.
            t = (1...steps).reversed().map { (Double($0) * (last / Double(steps))).rounded(.toNearestOrEven) }
        }
        let table = trainSigmas.map(Double.init)
        var sigmas = t.map { Self.interpolate(table, at: $0) }
        if karras {
            sigmas = Self.karras(from: table[0], to: table[table.count - 1], steps: steps)
            let logTable = table.map { Foundation.log($0) }
            t = sigmas.map { Self.timestep(ofSigma: $0, logSigmas: logTable).rounded(.toNearestOrEven) }
        }
        return (t.map { Float($0) }, sigmas.map { Float($0) } + [0])
    }

    /// DDIMScheduler's steps (eta 0, SDXL's set_alpha_to_one false): integer timesteps as Euler spaces them, the
    /// sigma of each timestep exactly (no interpolation), and for each step the sigma it goes to: that of
    /// t - trainSteps / steps (whatever the spacing, as diffusers does), or of timestep 0 past the start.
    public func ddimSteps(_ steps: Int, spacing: Spacing) -> (timesteps: [Float], sigmas: [Float], next: [Float]) {
        precondition(steps >= 1 && steps <= trainSteps, "steps must be in 1...\(trainSteps), got \(steps)")
        var t: [Int]
        switch spacing {
        case .leading:
            let ratio = trainSteps / steps
            t = (0..<steps).reversed().map { $0 * ratio + stepsOffset }
        case .trailing:
            let ratio = Double(trainSteps) / Double(steps)
            t = (0..<steps).map { Int((Double(trainSteps) - Double($0) * ratio).rounded(.toNearestOrEven)) - 1 }
        case .linspace:
            let last = Double(trainSteps - 1)
            t = (0..<steps).map { steps == 1 ? 0 : Int((Double(steps - 1 - $0) * (last / Double(steps - 1))).rounded(.toNearestOrEven)) }
        }
        let table = trainSigmas
        let sigma = { (i: Int) in table[min(max(i, 0), trainSteps - 1)] }
        let stride = trainSteps / steps
        return (t.map(Float.init), t.map(sigma), t.map { sigma($0 - stride) })
    }

    /// Karras et al.'s sigmas (rho 7) from `high` down to `low` in `steps` steps.
    static func karras(from low: Double, to high: Double, steps: Int) -> [Double] {
        let rho = 7.0
        let maxInv = pow(high, 1 / rho), minInv = pow(low, 1 / rho)
        return (0..<steps).map { i in
            let ramp = steps == 1 ? 0 : Double(i) / Double(steps - 1)
            return pow(maxInv + ramp * (minInv - maxInv), rho)
        }
    }

    /// The scale of the initial noise: the largest sigma, or sqrt(sigma² + 1) for leading spacing (diffusers).
    public func initNoiseSigma(_ sigmas: [Float], spacing: Spacing) -> Float {
        let top = sigmas.max() ?? 0
        return spacing == .leading ? (top * top + 1).squareRoot() : top
    }

    /// np.interp(t, arange(n), table).
    static func interpolate(_ table: [Double], at t: Double) -> Double {
        if t <= 0 { return table[0] }
        if t >= Double(table.count - 1) { return table[table.count - 1] }
        let i = Int(t.rounded(.down)), w = t - Double(i)
        return table[i] + w * (table[i + 1] - table[i])
    }

    /// diffusers' `_sigma_to_t`: the fractional timestep whose log-sigma interpolates to log(sigma).
    static func timestep(ofSigma sigma: Double, logSigmas: [Double]) -> Double {
        let ls = Foundation.log(max(sigma, 1e-10))
        // Last index whose log-sigma is <= log(sigma) (the table increases), clipped to n - 2.
        var low = 0
        for (i, v) in logSigmas.enumerated() where ls - v >= 0 { low = i }
        low = min(low, logSigmas.count - 2)
        let high = low + 1
        var w = (logSigmas[low] - ls) / (logSigmas[low] - logSigmas[high])
        w = min(max(w, 0), 1)
        return (1 - w) * Double(low) + w * Double(high)
    }
}
