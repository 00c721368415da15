import Foundation
import MumuSampler
import MumuTensor

/// Idefics2's modality projection (`connector.modality_projection`, transformers `Idefics2MLP`): vision width ->
/// text width through the text model's MLP width, no biases, the text config's `hidden_act` (SiLU):
///
///     out = down_proj(act(gate_proj(x)) * up_proj(x))        [n, vision D] -> [n, text hidden]
///
/// MUMU keeps one projected token per patch: the perceiver resampler that follows it in Idefics2 is not used.
public final class ModalityProjection: @unchecked Sendable {
    public let inputs: Int
    public let intermediate: Int
    public let outputs: Int
    let activation: EncoderActivation
    private let gate: DenseWeight
    private let up: DenseWeight
    private let down: DenseWeight

    /// Reads `gate_proj`, `up_proj`, `down_proj` under the reader's prefix (`connector.modality_projection.`).
    public init(reader: WeightReader, inputs: Int, intermediate: Int, outputs: Int, activation: EncoderActivation) throws {
        self.inputs = inputs
        self.intermediate = intermediate
        self.outputs = outputs
        self.activation = activation
        gate = try reader.linear("gate_proj", inputs: inputs, outputs: intermediate, bias: false)
        up = try reader.linear("up_proj", inputs: inputs, outputs: intermediate, bias: false)
        down = try reader.linear("down_proj", inputs: intermediate, outputs: outputs, bias: false)
    }

    /// x [n, inputs] -> [n, outputs].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        var g = gate(x)
        EncoderKernels.gated(&g, up(x), activation)
        return down(g)
    }
}
