/// Another source's tensors with `prefix` put before every name, zero-copy. Gives a file holding one
/// bare component a place in a flat key space, so `LayoutConverter` can convert it: a standalone sgm
/// VAE (`encoder.down.0.…`) as `first_stage_model.…`, a diffusers UNet file (`down_blocks.0.…`) as
/// `unet.…`, a transformers CLIP file as `text_encoder.…`.
public final class PrefixedSource: TensorSource, @unchecked Sendable {
    public let source: TensorSource
    public let prefix: String
    public let tensors: [TensorInfo]
    public var path: String { source.path }
    public var metadata: [String: String] { source.metadata }

    public init(_ source: TensorSource, prefix: String) {
        self.source = source
        self.prefix = prefix
        tensors = source.tensors.map { TensorInfo(name: prefix + $0.name, dtype: $0.dtype, shape: $0.shape) }
    }

    /// A bare sgm component file (names without `model.diffusion_model.` and the like).
    public convenience init(_ source: TensorSource, sgm component: ModelComponent) {
        let prefix: SGMPrefix
        switch component {
        case .unet: prefix = .unet
        case .vae: prefix = .vae
        case .te1: prefix = .te1
        case .te2: prefix = .te2
        }
        self.init(source, prefix: prefix.rawValue)
    }

    /// A bare diffusers / transformers component file (`diffusion_pytorch_model.safetensors`, `model.safetensors`).
    public convenience init(_ source: TensorSource, diffusers component: ModelComponent) {
        self.init(source, prefix: component.diffusersPrefix)
    }

    public func tensor(_ name: String) throws -> TensorData {
        guard name.hasPrefix(prefix) else { throw FormatError.missingTensor(path: path, tensor: name) }
        return try source.tensor(String(name.dropFirst(prefix.count))).renamed(name)
    }
}
