/// A diffusers pipeline folder seen as one flat key space: `unet/`, `vae/`, `text_encoder/` and
/// `text_encoder_2/` expose their tensors as `unet.…`, `vae.…`, `text_encoder.…`, `text_encoder_2.…`
/// (the prefixes diffusers/PEFT LoRA files use).
///
/// Each component's weights are one safetensors file or a sharded set (`*.safetensors.index.json`),
/// possibly only as an `.fp16` variant (the plain file wins when both are there). `model_index.json`
/// is optional; a component it names must be on disk. A folder holding only some components is fine.
/// CLIP names saved by transformers >= 5 without `text_model.` are exposed with it
/// (`text_encoder.text_model.encoder.…`), the spelling SDXL pipelines ship and the sgm layout uses.
public final class DiffusersFolder: TensorSource, @unchecked Sendable {
    public let path: String
    /// `model_index.json`, when the folder has one.
    public let modelIndex: JSONValue?
    /// The components present, in `ModelComponent` order.
    public let components: [ModelComponent]
    public let tensors: [TensorInfo]
    public var metadata: [String: String] { [:] }

    private let sources: [ModelComponent: TensorSource]
    private let configs: [ModelComponent: JSONValue]
    /// Flat name -> (component, name inside the component's files).
    private let location: [String: (component: ModelComponent, name: String)]

    public init(path folder: String) throws {
        let folder = folder.count > 1 && folder.hasSuffix("/") ? String(folder.dropLast()) : folder
        guard isDirectory(folder) else {
            throw FormatError.io(path: folder, reason: "not a folder (a diffusers pipeline is a folder with model_index.json, unet/, vae/, text_encoder/, text_encoder_2/)")
        }
        path = folder
        let indexPath = folder + "/model_index.json"
        modelIndex = fileExists(indexPath) ? try Self.readJSON(indexPath, what: "model_index.json") : nil

        var sources: [ModelComponent: TensorSource] = [:]
        var configs: [ModelComponent: JSONValue] = [:]
        for component in ModelComponent.allCases {
            let dir = folder + "/" + component.diffusersFolder
            let named = modelIndex.map { Self.names($0, component) } ?? false
            guard isDirectory(dir) else {
                if named {
                    throw FormatError.missingComponent(
                        path: folder, component: "\(component.diffusersFolder) (named in model_index.json, but there is no \(component.diffusersFolder)/ folder)")
                }
                continue
            }
            guard let weights = try Self.openWeights(dir, component) else {
                throw FormatError.missingComponent(
                    path: folder, component: "\(component.diffusersFolder) weights (\(component.diffusersFolder)/ holds no \(Self.expectedFiles(component)))")
            }
            sources[component] = weights
            let configPath = dir + "/config.json"
            if fileExists(configPath) {
                configs[component] = try Self.readJSON(configPath, what: "config.json")
            }
        }
        guard !sources.isEmpty else {
            throw FormatError.malformed(
                path: folder, reason: "not a diffusers pipeline: no unet/, vae/, text_encoder/ or text_encoder_2/ with weights")
        }

        var tensors: [TensorInfo] = []
        var location: [String: (component: ModelComponent, name: String)] = [:]
        for component in ModelComponent.allCases {
            guard let source = sources[component] else { continue }
            for info in source.tensors {
                let local = component == .te1 || component == .te2 ? Self.withTextModelPrefix(info.name) : info.name
                let flat = component.diffusersPrefix + local
                if let other = location[flat] {
                    throw FormatError.malformed(
                        path: source.path, reason: "tensors '\(other.name)' and '\(info.name)' are the same weight under two spellings")
                }
                location[flat] = (component, info.name)
                tensors.append(TensorInfo(name: flat, dtype: info.dtype, shape: info.shape))
            }
        }
        self.sources = sources
        self.configs = configs
        self.components = ModelComponent.allCases.filter { sources[$0] != nil }
        self.tensors = tensors
        self.location = location
    }

    public func tensor(_ name: String) throws -> TensorData {
        guard let (component, local) = location[name], let source = sources[component] else {
            throw FormatError.missingTensor(path: path, tensor: name)
        }
        return try source.tensor(local).renamed(name)
    }

    /// The component's weights (a `SafetensorsFile` or `ShardedSafetensors`), in its own names.
    public func source(for component: ModelComponent) -> TensorSource? { sources[component] }

    /// The component's `config.json`, when it has one.
    public func config(for component: ModelComponent) -> JSONValue? { configs[component] }

    // MARK: - Files

    /// Weight files of a component folder, in order of preference: the plain file, its sharded index,
    /// then the `.fp16` variant (diffusers names its sharded index `….safetensors.index.fp16.json`).
    static func candidateFiles(_ component: ModelComponent) -> [(name: String, sharded: Bool)] {
        let base = component == .unet || component == .vae ? "diffusion_pytorch_model" : "model"
        return [("\(base).safetensors", false), ("\(base).safetensors.index.json", true),
                ("\(base).fp16.safetensors", false), ("\(base).safetensors.index.fp16.json", true),
                ("\(base).fp16.safetensors.index.json", true)]
    }

    private static func expectedFiles(_ component: ModelComponent) -> String {
        let c = candidateFiles(component)
        return "\(c[0].name), \(c[1].name) (sharded) or \(c[2].name)"
    }

    private static func openWeights(_ dir: String, _ component: ModelComponent) throws -> TensorSource? {
        for (name, sharded) in candidateFiles(component) {
            let file = dir + "/" + name
            guard fileExists(file) else { continue }
            return sharded ? try ShardedSafetensors(indexPath: file) : try SafetensorsFile(path: file)
        }
        if let pickle = listDirectory(dir).first(where: { $0.hasSuffix(".bin") }) {
            throw FormatError.unsupported(
                "\(dir)/\(pickle): only PyTorch pickle weights here; mumu reads diffusers folders in .safetensors (convert the folder with diffusers' save_pretrained(safe_serialization=True))")
        }
        return nil
    }

    private static func readJSON(_ path: String, what: String) throws -> JSONValue {
        let file = try MappedFile(path: path)
        do {
            let value = try JSONParser.parse(file.all)
            guard value.objectValue != nil else { throw FormatError.malformed(path: path, reason: "\(what) is not a JSON object") }
            return value
        } catch let e as JSONParseError {
            throw FormatError.malformed(path: path, reason: "\(what) is not valid JSON: \(e)")
        }
    }

    /// Whether `model_index.json` names the component with a class: `"unet": ["diffusers",
    /// "UNet2DConditionModel"]`; `[null, null]` (the refiner's text_encoder) means absent.
    private static func names(_ index: JSONValue, _ component: ModelComponent) -> Bool {
        guard let entry = index[component.diffusersFolder]?.arrayValue else { return false }
        return entry.contains { $0.stringValue != nil }
    }

    /// transformers >= 5 saves `CLIPTextModel` as `encoder.…`, `embeddings.…`, `final_layer_norm.…`.
    private static func withTextModelPrefix(_ name: String) -> String {
        CLIPTextKeyMap().canonicalDiffusers(name)
    }
}
