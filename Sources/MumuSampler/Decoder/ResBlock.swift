import MumuFormats
import MumuTensor

/// The residual block of the UNet (sgm ResBlock / diffusers ResnetBlock2D) and of the VAE (ResnetBlock):
/// GroupNorm + SiLU, conv 3x3, (+ the time embedding, UNet only), GroupNorm + SiLU, conv 3x3, + the input
/// (through a 1x1 conv when the width changes). Channels-last; the output replaces the input in place (the second
/// conv accumulates into the shortcut), so a block holds one extra activation, not two.
final class ResBlock: @unchecked Sendable {
    let norm1: Norm, conv1: DenseWeight, norm2: Norm, conv2: DenseWeight
    let embProj: DenseWeight?
    let skip: DenseWeight?
    let groups: Int, eps: Float

    init(norm1: Norm, conv1: DenseWeight, embProj: DenseWeight?, norm2: Norm, conv2: DenseWeight, skip: DenseWeight?, groups: Int, eps: Float) {
        self.norm1 = norm1; self.conv1 = conv1; self.embProj = embProj; self.norm2 = norm2; self.conv2 = conv2
        self.skip = skip; self.groups = groups; self.eps = eps
    }

    /// The UNet's, under sgm names (`in_layers`, `emb_layers`, `out_layers`, `skip_connection`).
    convenience init(unet r: WeightReader, _ p: String, inputs: Int, outputs: Int, temb: Int, groups: Int, eps: Float) throws {
        self.init(norm1: try r.norm("\(p).in_layers.0", channels: inputs),
                  conv1: try r.conv("\(p).in_layers.2", inputs: inputs, outputs: outputs, kernel: 3),
                  embProj: try r.linear("\(p).emb_layers.1", inputs: temb, outputs: outputs),
                  norm2: try r.norm("\(p).out_layers.0", channels: outputs),
                  conv2: try r.conv("\(p).out_layers.3", inputs: outputs, outputs: outputs, kernel: 3),
                  skip: inputs == outputs ? nil : try r.conv("\(p).skip_connection", inputs: inputs, outputs: outputs, kernel: 1),
                  groups: groups, eps: eps)
    }

    /// The VAE's, under sgm names (`norm1`, `conv1`, `norm2`, `conv2`, `nin_shortcut`); no time embedding.
    convenience init(vae r: WeightReader, _ p: String, inputs: Int, outputs: Int, groups: Int, eps: Float) throws {
        self.init(norm1: try r.norm(p + ".norm1", channels: inputs),
                  conv1: try r.conv(p + ".conv1", inputs: inputs, outputs: outputs, kernel: 3),
                  embProj: nil,
                  norm2: try r.norm(p + ".norm2", channels: outputs),
                  conv2: try r.conv(p + ".conv2", inputs: outputs, outputs: outputs, kernel: 3),
                  skip: inputs == outputs ? nil : try r.conv(p + ".nin_shortcut", inputs: inputs, outputs: outputs, kernel: 1),
                  groups: groups, eps: eps)
    }

    /// x [B, H, W, in] becomes [B, H, W, out]; `emb` [B, temb] (SiLU already applied) for the UNet's blocks.
    func callAsFunction(_ x: inout Tensor, emb: Tensor? = nil) {
        var h = NN.conv2d(norm1.group(x, groups: groups, eps: eps, silu: true), weight: conv1, kernel: 3, padding: 1)
        if let embProj, let emb { NN.addPerSample(&h, embProj(emb)) }
        h = norm2.group(h, groups: groups, eps: eps, silu: true)
        if let skip { x = NN.conv2d(x, weight: skip, kernel: 1) }
        NN.conv2d(h, weight: conv2, kernel: 3, padding: 1, addingInto: &x)
    }

    var byteCount: Int { conv1.byteCount + conv2.byteCount + (embProj?.byteCount ?? 0) + (skip?.byteCount ?? 0) }
}
