import MumuTensor

/// What `mumu inspect` says of a model: its architecture (or why it is unknown), layout,
/// components, prediction type, dtypes and parameter counts.
public struct ModelDetection: Sendable {
    public struct ComponentReport: Sendable {
        public var name: String
        /// complete | partial | absent
        public var status: String
        public var tensors: Int
        public var parameters: Int
        public var dtypes: [String: Int]
    }

    public struct Prediction: Sendable {
        /// epsilon | v
        public var type: String
        /// Where it was read from: a key, the metadata, or the architecture's default.
        public var source: String
        public var zeroTerminalSNR: Bool
        public var edm: Bool
    }

    /// The architecture's name, or nil when unknown.
    public var architecture: String?
    public var family: String?
    /// Why the architecture is unknown, or notes on an ambiguous match.
    public var notes: [String] = []
    public var components: [ComponentReport] = []
    public var prediction: Prediction
    public var dtypes: [String: Int] = [:]
    public var parameters = 0
    public var tensorCount = 0
    /// File tensors the architecture does not know (sgm names), e.g. EMA copies.
    public var extraTensors: [String] = []
    public var inpainting = false
}

/// Recognises architectures by comparing a model's sgm-layout names and shapes with the descriptors.
public enum ModelDetector {
    /// `shapes`: sgm-layout tensor name -> (shape, dtype). `metadata`: the file's metadata.
    public static func detect(_ tensors: [TensorInfo], metadata: [String: String]) -> ModelDetection {
        // An Idefics2Model (no `model.` prefix) is read under Idefics2ForConditionalGeneration's names.
        var bareIdefics2 = false
        var tensors = tensors
        if tensors.contains(where: { $0.name == "text_model.embed_tokens.weight" }),
           tensors.contains(where: { $0.name == "vision_model.embeddings.patch_embedding.weight" }) {
            bareIdefics2 = true
            tensors = tensors.map { TensorInfo(name: "model." + $0.name, dtype: $0.dtype, shape: $0.shape) }
        }
        var detection = detectNames(tensors, metadata: metadata)
        if bareIdefics2 {
            detection.notes.append("tensor names without the 'model.' prefix (an Idefics2Model) are read as model.*")
        }
        return detection
    }

    static func detectNames(_ tensors: [TensorInfo], metadata: [String: String]) -> ModelDetection {
        let byName = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var detection = ModelDetection(architecture: nil, prediction: prediction(byName, metadata))
        detection.tensorCount = tensors.count
        for t in tensors where t.dtype.isFloatingPoint {
            detection.parameters += t.elementCount
        }
        for t in tensors { detection.dtypes[t.dtype.rawValue, default: 0] += 1 }

        struct Candidate {
            var descriptor: ArchitectureDescriptor
            var reports: [ModelDetection.ComponentReport]
            var explained: Int
            var mismatches: [String]
            var requiredComplete: Bool
        }
        var candidates: [Candidate] = []
        for d in Architectures.all {
            var reports: [ModelDetection.ComponentReport] = []
            var explained = 0
            var mismatches: [String] = []
            for c in d.components {
                let rows = d.tensors.filter { $0.component == c.name }
                let required = rows.filter { !$0.optional }
                var present = 0
                var parameters = 0
                var dtypes: [String: Int] = [:]
                for r in rows {
                    guard let t = byName[r.name] else { continue }
                    if t.shape != r.shape {
                        mismatches.append("\(r.name): file has \(t.shape), \(d.name) has \(r.shape)")
                        continue
                    }
                    if !r.optional { present += 1 }
                    explained += 1
                    if t.dtype.isFloatingPoint { parameters += t.elementCount }
                    dtypes[t.dtype.rawValue, default: 0] += 1
                }
                let status = present == required.count ? "complete" : (present == 0 ? "absent" : "partial")
                reports.append(.init(name: c.name, status: status, tensors: present, parameters: parameters, dtypes: dtypes))
            }
            let requiredComplete = zip(d.components, reports).allSatisfy { $0.optional || $1.status == "complete" }
            candidates.append(Candidate(descriptor: d, reports: reports, explained: explained, mismatches: mismatches,
                                        requiredComplete: requiredComplete))
        }
        // A match: no shape disagreement, no half-present component, at least one complete component.
        let matches = candidates.filter { c in
            c.mismatches.isEmpty && !c.reports.contains { $0.status == "partial" } && c.reports.contains { $0.status == "complete" }
        }
        let declared = metadata["modelspec.architecture"]
        let best = matches.max { a, b in
            // Most tensors explained; then the one whose required parts are all there; then the
            // one the file's own ModelSpec names.
            (a.explained, a.requiredComplete ? 1 : 0, a.descriptor.modelspecArchitecture == declared ? 1 : 0)
                < (b.explained, b.requiredComplete ? 1 : 0, b.descriptor.modelspecArchitecture == declared ? 1 : 0)
        }
        if let best {
            detection.architecture = best.descriptor.name
            detection.family = best.descriptor.family
            detection.components = best.reports.filter { $0.status != "absent" }
            let known = Set(best.descriptor.tensors.map(\.name))
            detection.extraTensors = tensors.map(\.name).filter { !known.contains($0) }.sorted()
            for other in matches where other.descriptor.name != best.descriptor.name && other.explained == best.explained {
                detection.notes.append("the same tensors also fit \(other.descriptor.name)")
            }
            let missing = zip(best.descriptor.components, best.reports).filter { !$0.0.optional && $0.1.status == "absent" }.map(\.0.name)
            if !missing.isEmpty { detection.notes.append("components absent: \(missing.joined(separator: ", "))") }
            if detection.prediction.source == "default" || best.descriptor.prediction == "none" {
                detection.prediction.type = best.descriptor.prediction
                if best.descriptor.prediction == "none" { detection.prediction.source = "\(best.descriptor.name) is an encoder" }
            }
            return detection
        }

        // Unknown: say why, naming the closest architecture and what differs.
        detection.family = family(byName)
        if detection.family == "idefics2" {
            detection.prediction = .init(type: "none", source: "an Idefics2 encoder", zeroTerminalSNR: false, edm: false)
        }
        detection.inpainting = byName["model.diffusion_model.input_blocks.0.0.weight"]?.shape.dropFirst().first == 9
        // An Idefics2 is compared with the Idefics2 descriptors only (SDXL behaviour unchanged).
        let pool = detection.family == "idefics2" ? candidates.filter { $0.descriptor.family == "idefics2" } : candidates
        if let closest = pool.max(by: { $0.explained < $1.explained }), closest.explained > 0 {
            var reason = "no known architecture matches; closest is \(closest.descriptor.name) (\(closest.explained) of \(tensors.count) tensors fit)"
            if !closest.mismatches.isEmpty {
                reason += "; \(closest.mismatches.count) tensors have other shapes, first: \(closest.mismatches[0])"
            }
            let partial = closest.reports.filter { $0.status == "partial" }.map(\.name)
            if !partial.isEmpty { reason += "; incomplete components: \(partial.joined(separator: ", "))" }
            detection.notes.append(reason)
            detection.components = closest.reports.filter { $0.status != "absent" }
        } else {
            let sample = tensors.prefix(3).map(\.name).joined(separator: ", ")
            detection.notes.append("no known architecture's keys are present (first keys: \(sample.isEmpty ? "none" : sample))")
        }
        if detection.inpainting { detection.notes.append("UNet takes 9 input channels: an inpainting model") }
        return detection
    }

    /// Family by marker keys (as diffusers' `infer_diffusers_model_type`; docs/formats.md, "Detection"), for files
    /// whose shapes match no descriptor.
    static func family(_ byName: [String: TensorInfo]) -> String? {
        if byName["model.text_model.embed_tokens.weight"] != nil && byName["model.vision_model.embeddings.patch_embedding.weight"] != nil {
            return "idefics2"
        }
        if byName["conditioner.embedders.1.model.ln_final.weight"] != nil { return "sdxl" }
        if byName["conditioner.embedders.0.model.ln_final.weight"] != nil { return "sdxl-refiner" }
        if byName["model.diffusion_model.output_blocks.11.0.skip_connection.weight"] != nil { return "sd1" }
        if byName["model.diffusion_model.label_emb.0.0.weight"] != nil { return "sdxl" }
        return nil
    }

    static func prediction(_ byName: [String: TensorInfo], _ metadata: [String: String]) -> ModelDetection.Prediction {
        let ztsnr = byName["ztsnr"] != nil
        let edm = byName["edm_vpred.sigma_max"] != nil
        if byName["v_pred"] != nil { return .init(type: "v", source: "key v_pred", zeroTerminalSNR: ztsnr, edm: false) }
        if edm { return .init(type: "v", source: "key edm_vpred.sigma_max", zeroTerminalSNR: ztsnr, edm: true) }
        if let p = metadata["modelspec.prediction_type"]?.lowercased(), p == "v" || p == "epsilon" {
            return .init(type: p, source: "metadata modelspec.prediction_type", zeroTerminalSNR: ztsnr, edm: false)
        }
        return .init(type: "epsilon", source: "default", zeroTerminalSNR: ztsnr, edm: false)
    }
}
