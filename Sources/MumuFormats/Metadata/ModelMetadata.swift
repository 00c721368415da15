/// The metadata conventions of the ecosystem, read from and written to safetensors `__metadata__`:
/// ModelSpec 1.0.1 (`modelspec.*`), kohya's training keys (`ss_*`, `sshs_*`), and A1111's merge
/// lineage (`sd_merge_recipe`, `sd_merge_models`).
public struct ModelSpec: Sendable, Equatable {
    public static let version = "1.0.1"
    /// Every `modelspec.*` key without its prefix (architecture, implementation, title, resolution,
    /// description, author, date, hash_sha256, thumbnail, tags, merged_from, trigger_phrase,
    /// prediction_type, usage_hint, license, ...).
    public var fields: [String: String]

    public init(fields: [String: String] = [:]) { self.fields = fields }

    /// Reads the `modelspec.*` keys of a metadata dictionary; nil when there are none.
    public init?(metadata: [String: String]) {
        var f: [String: String] = [:]
        for (k, v) in metadata where k.hasPrefix("modelspec.") { f[String(k.dropFirst("modelspec.".count))] = v }
        guard !f.isEmpty else { return nil }
        fields = f
    }

    public subscript(_ key: String) -> String? {
        get { fields[key] }
        set { fields[key] = newValue }
    }

    /// The MUST keys of ModelSpec 1.0.1 that are missing.
    public var missingRequired: [String] {
        ["sai_model_spec", "architecture", "implementation", "title", "resolution"].filter { fields[$0] == nil }
    }

    /// The metadata entries to write (with `sai_model_spec` set to this version when absent).
    public var metadata: [String: String] {
        var m: [String: String] = [:]
        for (k, v) in fields { m["modelspec." + k] = v }
        if m["modelspec.sai_model_spec"] == nil { m["modelspec.sai_model_spec"] = Self.version }
        return m
    }
}

/// kohya sd-scripts' training metadata (`ss_*`, `sshs_*`): what LoRA files from kohya, OneTrainer and
/// Civitai's trainer carry.
public struct KohyaMetadata: Sendable, Equatable {
    public var fields: [String: String]

    public init?(metadata: [String: String]) {
        let f = metadata.filter { $0.key.hasPrefix("ss_") || $0.key.hasPrefix("sshs_") }
        guard !f.isEmpty else { return nil }
        fields = f
    }

    public var networkModule: String? { fields["ss_network_module"] }
    public var networkDim: Int? { fields["ss_network_dim"].flatMap { Int($0) } }
    public var networkAlpha: Float? { fields["ss_network_alpha"].flatMap { Float($0) } }
    public var baseModelVersion: String? { fields["ss_base_model_version"] }
    public var outputName: String? { fields["ss_output_name"] }
    /// AutoV3 of the file as kohya wrote it (sha256 of the data after the header).
    public var modelHash: String? { fields["sshs_model_hash"] }
}

/// A1111's merge lineage: `sd_merge_recipe` (JSON of the last merge) and `sd_merge_models`
/// (JSON: {sha256: {name, legacy_hash, sd_merge_recipe}} of every model merged in, nested from
/// the parents' own).
public struct A1111MergeMetadata: Sendable, Equatable {
    public struct Model: Sendable, Equatable {
        public var sha256: String
        public var name: String
        public var legacyHash: String
        /// The parent's own recipe (JSON), when it was a merge too.
        public var recipe: String?
        public init(sha256: String, name: String, legacyHash: String, recipe: String?) {
            self.sha256 = sha256; self.name = name; self.legacyHash = legacyHash; self.recipe = recipe
        }
    }
    /// JSON text of the recipe.
    public var recipe: String?
    public var models: [Model]

    public init(recipe: String?, models: [Model]) { self.recipe = recipe; self.models = models }

    public init?(metadata: [String: String]) {
        recipe = metadata["sd_merge_recipe"]
        models = []
        if let text = metadata["sd_merge_models"], case let .object(entries)? = try? JSONParser.parse(text) {
            for (hash, value) in entries {
                let r = value["sd_merge_recipe"]
                let recipeText: String?
                switch r {
                case let .string(s)?: recipeText = s
                case .object?, .array?: recipeText = JSONWriter.write(r!)
                default: recipeText = nil
                }
                models.append(Model(sha256: hash, name: value["name"]?.stringValue ?? "", legacyHash: value["legacy_hash"]?.stringValue ?? "",
                                    recipe: recipeText))
            }
        }
        if recipe == nil && models.isEmpty { return nil }
    }

    /// The metadata entries A1111 writes.
    public var metadata: [String: String] {
        var m: [String: String] = [:]
        if let recipe { m["sd_merge_recipe"] = recipe }
        if !models.isEmpty {
            let entries: [(String, JSONValue)] = models.map { model in
                var fields: [(String, JSONValue)] = [("name", .string(model.name)), ("legacy_hash", .string(model.legacyHash))]
                fields.append(("sd_merge_recipe", model.recipe.flatMap { try? JSONParser.parse($0) } ?? .null))
                return (model.sha256, .object(fields))
            }
            m["sd_merge_models"] = JSONWriter.write(.object(entries))
        }
        return m
    }
}
