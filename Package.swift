// swift-tools-version:6.0
// mumu: community SDXL fine-tunes for MUMU image generation, on a plain CPU.
import PackageDescription

let optimize: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
let cOptimize: [CSetting] = [.unsafeFlags(["-O3", "-fno-math-errno"])]

let package = Package(
    name: "mumu",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "mumu", targets: ["mumu"]),
        .library(name: "MumuFormats", targets: ["MumuFormats"]),
        .library(name: "MumuTensor", targets: ["MumuTensor"]),
        .library(name: "MumuMerge", targets: ["MumuMerge"]),
        .library(name: "MumuStyles", targets: ["MumuStyles"]),
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

        // Hand-written C kernels (dtype conversion, SHA-256) with run-time CPU dispatch.
        .target(name: "CMumuKernels", cSettings: cOptimize),

        .target(name: "MumuTensor", dependencies: ["CMumuKernels", "CBLAS"],
                swiftSettings: optimize),
        // Architecture descriptors (formats/*.json) are compiled into MumuFormats by this plugin.
        .executableTarget(name: "EmbedFormatsTool", path: "Sources/EmbedFormatsTool"),
        .plugin(name: "EmbedFormats", capability: .buildTool(), dependencies: ["EmbedFormatsTool"]),
        .target(name: "MumuFormats",
                dependencies: ["MumuTensor", "CMumuKernels"],
                swiftSettings: optimize,
                plugins: ["EmbedFormats"]),
        // Recipes, merge methods, the streaming merge executor, LoRA bake-in.
        .target(name: "MumuMerge",
                dependencies: ["MumuFormats", "MumuTensor", "CMumuKernels", "CBLAS",
                               .product(name: "Yams", package: "Yams")],
                swiftSettings: optimize),
        // The style registry: manifests, content-addressed blobs, lossless deltas, plugins for the sampler.
        .target(name: "MumuStyles",
                dependencies: ["MumuMerge", "MumuFormats", "MumuTensor", "CZstd"],
                swiftSettings: optimize),
        // The CLIP BPE merges (vocab/clip_merges.txt) are compiled into MumuSampler by this plugin.
        .executableTarget(name: "EmbedVocabTool", path: "Sources/EmbedVocabTool"),
        .plugin(name: "EmbedVocab", capability: .buildTool(), dependencies: ["EmbedVocabTool"]),
        // The SDXL networks (tokenizer, CLIP-L, bigG, UNet, VAE), the sampler and pipeline (styles applied to the
        // resident models through the registry's plugins), PNG output with A1111 infotext.
        .target(name: "MumuSampler", dependencies: ["MumuFormats", "MumuTensor", "MumuMerge", "MumuStyles", "CBLAS", "CMumuKernels", "CPNG"],
                swiftSettings: optimize,
                plugins: ["EmbedVocab"]),
        // MUMU's encoder: images and tokenizer for `<image:PATH>` prompts, SigLIP + Mistral (Idefics2), the connector.
        .target(name: "MumuEncoder",
                dependencies: ["MumuSampler", "MumuFormats", "MumuTensor", "CMumuKernels", "CBLAS", "CPNG", "CJPEG"],
                swiftSettings: optimize),
        .executableTarget(name: "mumu",
                          dependencies: ["MumuFormats", "MumuTensor", "MumuMerge", "MumuStyles", "MumuSampler",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: optimize),

        .testTarget(name: "MumuTensorTests", dependencies: ["MumuTensor"], resources: [.copy("Fixtures")]),
        .testTarget(name: "MumuFormatsTests", dependencies: ["MumuFormats", "MumuTensor"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "MumuMergeTests", dependencies: ["MumuMerge", "MumuFormats", "MumuTensor", .product(name: "Yams", package: "Yams")],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "MumuStylesTests", dependencies: ["MumuStyles", "MumuMerge", "MumuFormats", "MumuTensor"]),
        .testTarget(name: "MumuSamplerTests", dependencies: ["MumuSampler", "MumuStyles", "MumuMerge", "MumuFormats", "MumuTensor"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "MumuEncoderTests", dependencies: ["MumuEncoder", "MumuSampler", "MumuFormats", "MumuTensor"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "SystemLibraryTests", dependencies: ["CBLAS", "CZstd", "CPNG", "CJPEG"]),
    ],
    swiftLanguageModes: [.v5]
)
