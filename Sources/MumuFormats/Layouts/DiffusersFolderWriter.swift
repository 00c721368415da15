import Foundation
import MumuTensor

/// Writes a diffusers pipeline folder (`unet/diffusion_pytorch_model.safetensors`, `vae/...`,
/// `text_encoder/model.safetensors`, `text_encoder_2/model.safetensors`, each with its `config.json`,
/// plus `model_index.json`) from tensors named in the flat diffusers key space (`unet.…`, `vae.…`).
/// Everything is written into a hidden folder beside the destination and renamed into place at the
/// end, so an interrupted run leaves nothing at the destination.
public final class DiffusersFolderWriter: ModelSink, @unchecked Sendable {
    public let path: String
    private let temporary: String
    private let overwrite: Bool
    private var writers: [ModelComponent: SafetensorsWriter] = [:]
    private let configs: [ModelComponent: JSONValue]
    private var done = false

    /// `configs`: each component's diffusers / transformers config (from the architecture descriptor).
    public init(path: String, tensors: [TensorInfo], metadata: [String: String],
                configs: [ModelComponent: JSONValue], overwrite: Bool) throws {
        self.path = path
        self.overwrite = overwrite
        self.configs = configs
        try OutputPath.check(path, overwrite: overwrite, folder: true)
        let url = URL(fileURLWithPath: path)
        let parent = url.deletingLastPathComponent().path
        temporary = parent + "/." + url.lastPathComponent + ".mumu-partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var groups: [ModelComponent: [TensorInfo]] = [:]
        for t in tensors {
            guard let (component, local) = ModelComponent.splitDiffusers(t.name) else {
                throw FormatError.unsupported("'\(t.name)' has no diffusers component prefix (unet., vae., text_encoder., text_encoder_2.)")
            }
            groups[component, default: []].append(TensorInfo(name: local, dtype: t.dtype, shape: t.shape))
        }
        do {
            for (component, infos) in groups {
                let dir = temporary + "/" + component.diffusersFolder
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                let file = component == .unet || component == .vae ? "diffusion_pytorch_model.safetensors" : "model.safetensors"
                writers[component] = try SafetensorsWriter(path: dir + "/" + file, tensors: infos, metadata: metadata, overwrite: true)
            }
        } catch {
            abort()
            throw error
        }
    }

    public func writePart(_ name: String, offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        guard let (component, local) = ModelComponent.splitDiffusers(name), let w = writers[component] else {
            throw FormatError.unsupported("\(path): tensor '\(name)' was not declared")
        }
        try w.writePart(local, offset: offset, bytes)
    }

    public func finish() throws {
        do {
            for w in writers.values { try w.finish() }
            for (component, _) in writers {
                if let config = configs[component] {
                    try Data((JSONWriter.write(config) + "\n").utf8).write(to: URL(fileURLWithPath: temporary + "/" + component.diffusersFolder + "/config.json"))
                }
            }
            try Data((JSONWriter.write(modelIndex()) + "\n").utf8).write(to: URL(fileURLWithPath: temporary + "/model_index.json"))
            try OutputPath.moveFolder(temporary, into: path, overwrite: overwrite)
            done = true
        } catch {
            abort()
            throw error
        }
    }

    public func abort() {
        guard !done else { return }
        done = true
        writers.values.forEach { $0.abort() }
        try? FileManager.default.removeItem(atPath: temporary)
    }

    deinit { abort() }

    /// `model_index.json` naming the components written. Tokenizers and scheduler are not part of a
    /// checkpoint, so they are listed as absent.
    private func modelIndex() -> JSONValue {
        var entries: [(String, JSONValue)] = [("_class_name", .string("StableDiffusionXLPipeline")), ("_diffusers_version", .string("0.42.1"))]
        let classes: [(ModelComponent, String, String)] = [(.unet, "diffusers", "UNet2DConditionModel"), (.vae, "diffusers", "AutoencoderKL"),
                                                           (.te1, "transformers", "CLIPTextModel"), (.te2, "transformers", "CLIPTextModelWithProjection")]
        for (component, library, cls) in classes where writers[component] != nil {
            entries.append((component.diffusersFolder, .array([.string(library), .string(cls)])))
        }
        return .object(entries)
    }
}
