// MumuMerge: recipes (YAML), the method registry, block weights, the streaming merge executor and
// LoRA bake-in. See docs/merging.md for the user's view and docs/architecture.md for the design.
