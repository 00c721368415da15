// swift-tools-version:6.0
// mumu: community SDXL fine-tunes for MUMU image generation, on a plain CPU.
//
// Targets, lowest first (docs/architecture.md has the map and what each may import):
//   CBLAS, CZstd, CPNG       system libraries found with pkg-config (install-deps.sh installs them)
//   CMumuSystem              the process's one signal handler (temporary files, the interrupt flag)
//   CMumuKernels             C kernels with run-time CPU dispatch: dtype conversion, SHA-256, the bf16 GEMM
//                            (AMX, AVX-512-BF16, AVX2 + FMA, portable), softmax / SiLU / GELU / GEGLU
//   MumuTensor               dtypes, conversions, Tensor and the network kernels (DenseWeight, conv, norms, attention)
//   MumuFormats              safetensors, shards, .ckpt, diffusers folders, layouts, descriptors, detection, hashes
//   MumuMerge                recipes, merge methods, the streaming executor, LoRA bake-in and extraction
//   MumuStyles               the style registry and its plugins
//   MumuSampler              the SDXL networks, tokenizer, samplers, the pipeline's denoising iterator, PNG output
//   MumuEncoder              MUMU's encoder: images, the tokenizer.json BPE, SigLIP + Mistral (Idefics2), the connector
//   MumuGenerate             what a CLI and a server share: a generation job, styles on the resident decoder
//   mumu                     the command line (swift-argument-parser): parses, calls the libraries, prints
import PackageDescription

// Only the numerical code builds with -Ounchecked (bounds and overflow checks off), where a benchmark shows it matters
// (docs/benchmarks.md): the kernels (MumuTensor) and the networks (MumuSampler: with -O, loading SDXL's UNet peaks
// 1.2 GB higher). Everything that parses user input (formats, recipes, styles, the encoder's images and tokenizer)
// builds with the default -O, so every `precondition` and overflow trap runs in the binary that ships.
let kernels: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
let cOptimize: [CSetting] = [.unsafeFlags(["-O3", "-fno-math-errno"])]
// Targets whose concurrency claims (`Sendable`, `nonisolated(unsafe)`) the Swift 6 checker verifies.
let swift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "mumu",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "mumu", targets: ["mumu"]),
        .library(name: "MumuFormats", targets: ["MumuFormats"]),
        .library(name: "MumuTensor", targets: ["MumuTensor"]),
        .library(name: "MumuMerge", targets: ["MumuMerge"]),
        .library(name: "MumuStyles", targets: ["MumuStyles"]),
        .library(name: "MumuSampler", targets: ["MumuSampler"]),
        .library(name: "MumuGenerate", targets: ["MumuGenerate"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // System libraries, found through pkg-config (install-deps.sh installs the -dev packages).
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg62-turbo-dev"])]),

        // Hand-written C kernels with run-time CPU dispatch: dtype conversion (F16C/AVX2), SHA-256 (SHA extensions),
        // the bf16 GEMM (AMX, AVX-512-BF16, portable), softmax and activations (AVX-512).
        .target(name: "CMumuKernels", cSettings: cOptimize),
        // The process's one signal handler: temporary outputs removed, or a flag raised for work that polls it.
        .target(name: "CMumuSystem"),

        .target(name: "MumuTensor", dependencies: ["CMumuKernels", "CBLAS"],
                swiftSettings: swift6 + kernels),
        // Architecture descriptors (formats/*.json) are compiled into MumuFormats by this plugin.
        .executableTarget(name: "EmbedFormatsTool", path: "Sources/EmbedFormatsTool"),
        .plugin(name: "EmbedFormats", capability: .buildTool(), dependencies: ["EmbedFormatsTool"]),
        .target(name: "MumuFormats",
                dependencies: ["MumuTensor", "CMumuKernels", "CMumuSystem"],
                plugins: ["EmbedFormats"]),
        // Recipes, merge methods, the streaming merge executor, LoRA bake-in and extraction.
        .target(name: "MumuMerge",
                dependencies: ["MumuFormats", "MumuTensor", "CMumuKernels", "CBLAS",
                               .product(name: "Yams", package: "Yams")]),
        // The style registry: manifests, content-addressed blobs, lossless deltas, plugins that patch a decoder.
        .target(name: "MumuStyles",
                dependencies: ["MumuMerge", "MumuFormats", "MumuTensor", "CZstd"]),
        // The CLIP BPE merges (vocab/clip_merges.txt) are compiled into MumuSampler by this plugin.
        .executableTarget(name: "EmbedVocabTool", path: "Sources/EmbedVocabTool"),
        .plugin(name: "EmbedVocab", capability: .buildTool(), dependencies: ["EmbedVocabTool"]),
        // The SDXL networks (tokenizer, CLIP-L, bigG, UNet, VAE), the samplers, the pipeline and its denoising
        // iterator, PNG output with A1111 infotext. Knows nothing of styles or merges.
        .target(name: "MumuSampler", dependencies: ["MumuFormats", "MumuTensor", "CBLAS", "CMumuKernels", "CPNG"],
                swiftSettings: swift6 + kernels,
                plugins: ["EmbedVocab"]),
        // MUMU's encoder: images and tokenizer for `<image:PATH>` prompts, SigLIP + Mistral (Idefics2), the connector.
        .target(name: "MumuEncoder",
                dependencies: ["MumuSampler", "MumuFormats", "MumuTensor", "CMumuKernels", "CBLAS", "CPNG", "CJPEG"],
                swiftSettings: swift6),
        // What a CLI and a server share: the generation job (settings checked before loading, output names), styles
        // put on one resident decoder (StyledPipeline), the encoder before the decoder, the job as steps its caller
        // drives.
        .target(name: "MumuGenerate",
                dependencies: ["MumuSampler", "MumuEncoder", "MumuStyles", "MumuMerge", "MumuFormats", "MumuTensor"],
                swiftSettings: swift6),
        .executableTarget(name: "mumu",
                          dependencies: ["MumuFormats", "MumuTensor", "MumuMerge", "MumuStyles", "MumuSampler", "MumuGenerate",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")]),

        // Helpers every test target shares: temporary folders, tiny models, max-error checks, seeded RNG,
        // safetensors writers, LoRA fixtures.
        .target(name: "MumuTestSupport", dependencies: ["MumuSampler", "MumuFormats", "MumuTensor"], path: "Tests/MumuTestSupport"),
        .testTarget(name: "MumuTensorTests", dependencies: ["MumuTensor", "MumuTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "MumuFormatsTests", dependencies: ["MumuFormats", "MumuTensor", "MumuTestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "MumuMergeTests", dependencies: ["MumuMerge", "MumuFormats", "MumuTensor", "MumuTestSupport",
                                                           .product(name: "Yams", package: "Yams")],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "MumuStylesTests", dependencies: ["MumuStyles", "MumuMerge", "MumuFormats", "MumuTensor", "MumuTestSupport"]),
        .testTarget(name: "MumuSamplerTests", dependencies: ["MumuSampler", "MumuFormats", "MumuTensor", "MumuTestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "MumuGenerateTests", dependencies: ["MumuGenerate", "MumuEncoder", "MumuSampler", "MumuStyles", "MumuMerge", "MumuFormats",
                                                              "MumuTensor", "MumuTestSupport"]),
        .testTarget(name: "MumuEncoderTests", dependencies: ["MumuEncoder", "MumuSampler", "MumuFormats", "MumuTensor", "MumuTestSupport"],
                    resources: [.copy("Fixtures")]),
        // The mumu binary run as a user runs it (found beside the test bundle).
        .testTarget(name: "MumuCLITests", dependencies: ["MumuTestSupport"]),
        .testTarget(name: "SystemLibraryTests", dependencies: ["CBLAS", "CZstd", "CPNG", "CJPEG"]),
    ],
    swiftLanguageModes: [.v5]
)
