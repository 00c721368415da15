import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import MumuTensor

/// sgm single file <-> flat diffusers names: the key maps on the real architectures' key sets
/// (formats/*.json against the diffusers names scripts/gen_fixtures_layouts.py got from diffusers), the
/// lazy converter on a micro random SDXL (bit for bit against what diffusers saved and what diffusers'
/// own converters accept), and diffusers folders.
final class LayoutTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTemporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    // MARK: - key maps, one name at a time

    func testUNetNamesMapBothWaysForSDXL() {
        let map = UNetKeyMap(structure: .sdxl)
        let pairs = [
            ("input_blocks.4.1.proj_in.weight", "down_blocks.1.attentions.0.proj_in.weight"),
            ("input_blocks.8.1.transformer_blocks.1.attn2.to_k.weight", "down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_k.weight"),
            ("input_blocks.0.0.weight", "conv_in.weight"),
            ("input_blocks.1.0.in_layers.0.weight", "down_blocks.0.resnets.0.norm1.weight"),
            ("input_blocks.4.0.skip_connection.bias", "down_blocks.1.resnets.0.conv_shortcut.bias"),
            ("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"),
            ("input_blocks.6.0.op.bias", "down_blocks.1.downsamplers.0.conv.bias"),
            ("middle_block.0.emb_layers.1.weight", "mid_block.resnets.0.time_emb_proj.weight"),
            ("middle_block.1.proj_out.bias", "mid_block.attentions.0.proj_out.bias"),
            ("middle_block.2.out_layers.3.weight", "mid_block.resnets.1.conv2.weight"),
            ("output_blocks.0.0.out_layers.0.bias", "up_blocks.0.resnets.0.norm2.bias"),
            ("output_blocks.2.1.norm.weight", "up_blocks.0.attentions.2.norm.weight"),
            ("output_blocks.2.2.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
            ("output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias"),
            ("output_blocks.8.0.in_layers.2.weight", "up_blocks.2.resnets.2.conv1.weight"),
            ("time_embed.2.bias", "time_embedding.linear_2.bias"),
            ("label_emb.0.0.weight", "add_embedding.linear_1.weight"),
            ("out.0.weight", "conv_norm_out.weight"),
            ("out.2.bias", "conv_out.bias"),
        ]
        for (sgm, diffusers) in pairs {
            XCTAssertEqual(map.toDiffusers(sgm), .rename(sgm, diffusers), sgm)
            XCTAssertEqual(map.toSGM(diffusers), .rename(diffusers, sgm), diffusers)
        }
        XCTAssertNil(map.toDiffusers("input_blocks.1.0.bogus.weight"), "a resnet has only its known layers")
        XCTAssertNil(map.toDiffusers("input_blocks.1.1.proj_in.weight"), "SDXL's first level has no attention")
        XCTAssertNil(map.toDiffusers("input_blocks.9.0.in_layers.0.weight"), "SDXL has 9 input blocks")
    }

    func testUNetUpsamplerFollowsTheLevelsAttention() {
        // SD1's lowest-resolution up level has no attention: its upsampler is block 1, not 2.
        let sd1 = UNetKeyMap(structure: .sd1)
        XCTAssertEqual(sd1.toSGM("up_blocks.0.upsamplers.0.conv.weight")?.targets, ["output_blocks.2.1.conv.weight"])
        XCTAssertEqual(sd1.toSGM("up_blocks.1.upsamplers.0.conv.weight")?.targets, ["output_blocks.5.2.conv.weight"])
        XCTAssertEqual(sd1.toDiffusers("input_blocks.1.1.proj_in.weight")?.targets, ["down_blocks.0.attentions.0.proj_in.weight"])
        XCTAssertEqual(sd1.toDiffusers("output_blocks.11.1.proj_out.weight")?.targets, ["up_blocks.3.attentions.2.proj_out.weight"])
        // A mid block without attention numbers its resnets 0 and 1.
        var s = UNetStructure.sdxl
        s.midAttention = false
        XCTAssertEqual(UNetKeyMap(structure: s).toSGM("mid_block.resnets.1.conv1.weight")?.targets, ["middle_block.1.in_layers.2.weight"])
    }

    func testVAENamesReverseTheDecoderAndReshapeTheMidAttention() {
        let map = VAEKeyMap(structure: .sdxl)
        XCTAssertEqual(map.toDiffusers("decoder.up.3.block.0.conv1.weight")?.targets, ["decoder.up_blocks.0.resnets.0.conv1.weight"])
        XCTAssertEqual(map.toDiffusers("decoder.up.0.block.2.nin_shortcut.bias")?.targets, ["decoder.up_blocks.3.resnets.2.conv_shortcut.bias"])
        XCTAssertEqual(map.toDiffusers("decoder.up.1.upsample.conv.weight")?.targets, ["decoder.up_blocks.2.upsamplers.0.conv.weight"])
        XCTAssertNil(map.toDiffusers("decoder.up.0.upsample.conv.weight"), "the full-resolution level has no upsampler")
        XCTAssertEqual(map.toDiffusers("encoder.down.2.downsample.conv.bias")?.targets, ["encoder.down_blocks.2.downsamplers.0.conv.bias"])
        XCTAssertEqual(map.toDiffusers("encoder.norm_out.weight")?.targets, ["encoder.conv_norm_out.weight"])
        XCTAssertEqual(map.toDiffusers("encoder.mid.attn_1.norm.bias")?.targets, ["encoder.mid_block.attentions.0.group_norm.bias"])
        XCTAssertEqual(map.toDiffusers("decoder.mid.attn_1.proj_out.weight"),
                       .rename("decoder.mid.attn_1.proj_out.weight", "decoder.mid_block.attentions.0.to_out.0.weight", .linearFromConv1x1))
        XCTAssertEqual(map.toDiffusers("decoder.mid.attn_1.q.bias"), .rename("decoder.mid.attn_1.q.bias", "decoder.mid_block.attentions.0.to_q.bias"))
        XCTAssertEqual(map.toSGM("encoder.mid_block.attentions.0.to_k.weight"),
                       .rename("encoder.mid_block.attentions.0.to_k.weight", "encoder.mid.attn_1.k.weight", .conv1x1FromLinear))
        // diffusers < 0.14 names are read too
        XCTAssertEqual(map.toSGM("decoder.mid_block.attentions.0.proj_attn.weight"),
                       .rename("decoder.mid_block.attentions.0.proj_attn.weight", "decoder.mid.attn_1.proj_out.weight", .conv1x1FromLinear))
    }

    func testTextEncoderNames() {
        let te1 = CLIPTextKeyMap()
        XCTAssertEqual(te1.toDiffusers("text_model.encoder.layers.3.mlp.fc1.weight")?.targets, ["text_model.encoder.layers.3.mlp.fc1.weight"])
        // transformers >= 5 spelling, read and written back with text_model.
        XCTAssertEqual(te1.toSGM("encoder.layers.3.mlp.fc1.weight"), .rename("encoder.layers.3.mlp.fc1.weight", "text_model.encoder.layers.3.mlp.fc1.weight"))
        XCTAssertNil(te1.toSGM("logit_scale"))

        let te2 = OpenCLIPKeyMap()
        XCTAssertEqual(te2.toDiffusers("transformer.resblocks.31.attn.in_proj_weight"),
                       Mapping(sources: ["transformer.resblocks.31.attn.in_proj_weight"],
                               targets: ["q", "k", "v"].map { "text_model.encoder.layers.31.self_attn.\($0)_proj.weight" },
                               transform: .splitRows))
        let qkvBias = ["q", "k", "v"].map { "text_model.encoder.layers.0.self_attn.\($0)_proj.bias" }
        for name in qkvBias {
            XCTAssertEqual(te2.toSGM(name), Mapping(sources: qkvBias, targets: ["transformer.resblocks.0.attn.in_proj_bias"], transform: .concatRows))
        }
        XCTAssertEqual(te2.toDiffusers("text_projection"), .rename("text_projection", "text_projection.weight", .transpose))
        XCTAssertEqual(te2.toDiffusers("positional_embedding")?.targets, ["text_model.embeddings.position_embedding.weight"])
        XCTAssertEqual(te2.toDiffusers("transformer.resblocks.2.ln_1.bias")?.targets, ["text_model.encoder.layers.2.layer_norm1.bias"])
        XCTAssertEqual(te2.toDiffusers("transformer.resblocks.2.mlp.c_proj.weight")?.targets, ["text_model.encoder.layers.2.mlp.fc2.weight"])
        XCTAssertEqual(te2.toSGM("text_model.final_layer_norm.weight")?.targets, ["ln_final.weight"])
        XCTAssertNil(te2.toDiffusers("logit_scale"), "OpenCLIP's logit_scale has no transformers counterpart")
        XCTAssertNil(te2.toDiffusers("transformer.resblocks.0.attn.in_proj_weight.extra"))
    }

    func testStructureIsInferredFromNames() throws {
        for (arch, expected) in [("sdxl-base", UNetStructure.sdxl), ("sdxl-refiner", .sdxlRefiner), ("sd1", .sd1)] {
            let rows = try formatsRows(arch)
            let unet = rows.compactMap { SGMPrefix.split($0.name).flatMap { $0.prefix == .unet ? $0.local : nil } }
            XCTAssertEqual(UNetStructure.infer(sgmNames: unet), expected, arch)
            let vae = rows.compactMap { SGMPrefix.split($0.name).flatMap { $0.prefix == .vae ? $0.local : nil } }
            XCTAssertEqual(VAEStructure.infer(sgmNames: vae), .sdxl, arch)
            let diffusers = try expectedDiffusers(arch).keys.compactMap { ModelComponent.splitDiffusers($0) }
            XCTAssertEqual(UNetStructure.infer(diffusersNames: diffusers.filter { $0.component == .unet }.map(\.local)), expected, arch)
            XCTAssertEqual(VAEStructure.infer(diffusersNames: diffusers.filter { $0.component == .vae }.map(\.local)), .sdxl, arch)
        }
        let tiny = try formatsRows("sdxl-tiny").compactMap { SGMPrefix.split($0.name).flatMap { $0.prefix == .unet ? $0.local : nil } }
        XCTAssertEqual(UNetStructure.infer(sgmNames: tiny), .sdxl, "sdxl-tiny: SDXL's blocks, smaller widths")
        // A mid block of two resnets (diffusers UNetMidBlock2D) is told by middle_block.1 being a resnet.
        let plainMid = ["input_blocks.1.0.in_layers.0.weight", "middle_block.0.in_layers.0.weight", "middle_block.1.in_layers.0.weight"]
        XCTAssertEqual(UNetStructure.infer(sgmNames: plainMid)?.midAttention, false)
        XCTAssertEqual(UNetStructure.infer(diffusersNames: ["down_blocks.0.resnets.0.norm1.weight", "mid_block.resnets.1.norm1.weight"])?.midAttention, false)
    }

    func testLayoutDetection() {
        XCTAssertEqual(StoredLayout.detect(["model.diffusion_model.out.2.weight", "first_stage_model.quant_conv.bias"]), .sgm)
        XCTAssertEqual(StoredLayout.detect(["connector.proj_in.weight"]), .sgm)
        XCTAssertEqual(StoredLayout.detect(["unet.conv_in.weight", "text_encoder_2.text_projection.weight"]), .diffusers)
        XCTAssertEqual(StoredLayout.detect(["down_blocks.0.resnets.0.conv1.weight", "conv_in.weight"]), .diffusersUNet)
        XCTAssertEqual(StoredLayout.detect(["encoder.down_blocks.0.resnets.0.conv1.weight"]), .diffusersVAE)
        XCTAssertEqual(StoredLayout.detect(["encoder.down.0.block.0.conv1.weight", "decoder.up.3.block.0.conv1.weight"]), .ldmVAE)
        XCTAssertEqual(StoredLayout.detect(["text_model.embeddings.token_embedding.weight"]), .transformersCLIP)
        XCTAssertEqual(StoredLayout.detect(["lora_unet_down_blocks_0.alpha", "foo"]), .unknown)
    }

    // MARK: - whole conversions of the real key sets (names and shapes, no data)

    func testRealArchitecturesConvertBothWaysWithDiffusersNamesAndShapes() throws {
        let leftOut = ["sdxl-base": ["conditioner.embedders.1.model.logit_scale"],
                       "sdxl-refiner": ["conditioner.embedders.0.model.logit_scale"],
                       "sd1": [], "sdxl-tiny": ["conditioner.embedders.1.model.logit_scale"]]
        for (arch, unmapped) in leftOut {
            let rows = try formatsRows(arch)
            let sgm = ShapeSource(path: "formats/\(arch).json", rows.map { TensorInfo(name: $0.name, dtype: $0.dtype, shape: $0.shape) })
            let diffusers = try LayoutConverter().convert(source: sgm, to: .diffusers)
            XCTAssertEqual(diffusers.unmapped.map(\.name), unmapped, arch)

            // transformers never saves CLIP's position_ids buffer; sgm files carry it and it is kept.
            var expected = try expectedDiffusers(arch)
            for row in rows where row.name.hasSuffix("text_model.embeddings.position_ids") {
                expected["text_encoder.text_model.embeddings.position_ids"] = row.shape
            }
            let got = Dictionary(uniqueKeysWithValues: diffusers.tensors.map { ($0.name, $0.shape) })
            XCTAssertEqual(Set(got.keys).subtracting(expected.keys).sorted(), [], "\(arch): names diffusers does not have")
            XCTAssertEqual(Set(expected.keys).subtracting(got.keys).sorted(), [], "\(arch): diffusers names not produced")
            for (name, shape) in expected where got[name] != nil {
                XCTAssertEqual(got[name], shape, "\(arch): \(name)")
            }

            let back = try LayoutConverter().convert(source: diffusers, to: .sgm)
            XCTAssertEqual(back.unmapped, [], arch)
            let want = sgm.tensors.filter { !unmapped.contains($0.name) }
            XCTAssertEqual(back.tensors.sorted { $0.name < $1.name }, want.sorted { $0.name < $1.name }, "\(arch): back to sgm")
        }
    }

    // MARK: - micro SDXL: data, bit for bit

    func testMicroSGMConvertsToExactlyWhatDiffusersSaved() throws {
        let sgm = try SafetensorsFile(path: fixturePath("layouts/micro_sgm.safetensors"))
        let folder = try DiffusersFolder(path: fixturePath("layouts/micro_diffusers"))
        let converted = try LayoutConverter().convert(source: sgm, to: .diffusers)
        XCTAssertEqual(converted.unmapped, [])
        try assertSameTensors(converted, folder)
    }

    func testMicroDiffusersFolderConvertsToExactlyTheSGMFile() throws {
        let sgm = try SafetensorsFile(path: fixturePath("layouts/micro_sgm.safetensors"))
        let folder = try DiffusersFolder(path: fixturePath("layouts/micro_diffusers"))
        let converted = try LayoutConverter().convert(source: folder, to: .sgm)
        XCTAssertEqual(converted.unmapped, [])
        try assertSameTensors(converted, sgm)
    }

    func testRoundTripsAreIdentities() throws {
        let sgm = try SafetensorsFile(path: fixturePath("layouts/micro_sgm.safetensors"))
        let there = try LayoutConverter().convert(source: sgm, to: .diffusers)
        try assertSameTensors(try LayoutConverter().convert(source: there, to: .sgm), sgm)

        let folder = try DiffusersFolder(path: fixturePath("layouts/micro_diffusers"))
        let back = try LayoutConverter().convert(source: folder, to: .sgm)
        try assertSameTensors(try LayoutConverter().convert(source: back, to: .diffusers), folder)
    }

    func testConversionStreamsThroughTheWriterAndSlicesWithoutCopying() throws {
        let folder = try DiffusersFolder(path: fixturePath("layouts/micro_diffusers"))
        let converted = try LayoutConverter().convert(source: folder, to: .sgm)
        let out = dir + "/micro_from_folder.safetensors"
        let writer = try SafetensorsWriter(path: out, tensors: converted.tensors, metadata: ["format": "pt"])
        for info in converted.tensors { try writer.write(try converted.tensor(info.name)) }
        try writer.finish()
        try assertSameTensors(try SafetensorsFile(path: out), try SafetensorsFile(path: fixturePath("layouts/micro_sgm.safetensors")))

        // sgm -> diffusers: q, k, v are views into the fused in_proj tensor of the mapped file.
        let sgm = try SafetensorsFile(path: fixturePath("layouts/micro_sgm.safetensors"))
        let diffusers = try LayoutConverter().convert(source: sgm, to: .diffusers)
        let fused = try sgm.tensor("conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight")
        let k = try diffusers.tensor("text_encoder_2.text_model.encoder.layers.1.self_attn.k_proj.weight")
        XCTAssertEqual(k.info.shape, [16, 16])
        XCTAssertEqual(k.info.dtype, .f32)
        XCTAssertEqual(k.bytes.baseAddress, fused.bytes.baseAddress.map { $0 + 16 * 16 * 4 })
        XCTAssertTrue(k.owner === fused.owner, "the slice keeps the mapping alive")
    }

    // MARK: - diffusers folders

    func testDiffusersFolderReadsShardsConfigsAndBothCLIPSpellings() throws {
        let folder = try DiffusersFolder(path: fixturePath("layouts/micro_diffusers"))
        XCTAssertEqual(folder.components, [.unet, .vae, .te1, .te2])
        let shards = try XCTUnwrap(folder.source(for: .unet) as? ShardedSafetensors)
        XCTAssertGreaterThanOrEqual(shards.shards.count, 2)
        // transformers 5 saved CLIP-L without text_model.; the folder exposes it with the prefix.
        let te1File = try XCTUnwrap(folder.source(for: .te1))
        XCTAssertTrue(te1File.names.contains("encoder.layers.0.mlp.fc1.weight"))
        XCTAssertTrue(folder.names.contains("text_encoder.text_model.encoder.layers.0.mlp.fc1.weight"))
        XCTAssertEqual(try folder.tensor("text_encoder.text_model.encoder.layers.0.mlp.fc1.weight").bytes.baseAddress,
                       try te1File.tensor("encoder.layers.0.mlp.fc1.weight").bytes.baseAddress)
        XCTAssertTrue(folder.names.contains("text_encoder_2.text_projection.weight"))
        XCTAssertEqual(folder.names.count, 720 + 180 + 36 + 37)
        let config = try XCTUnwrap(folder.config(for: .unet))
        XCTAssertEqual(UNetStructure(diffusersConfig: config), .sdxl)
        XCTAssertEqual(UNetStructure.infer(diffusersNames: try XCTUnwrap(folder.source(for: .unet)).names), .sdxl)
        XCTAssertEqual(folder.config(for: .te2)?["projection_dim"]?.intValue, 16)
        XCTAssertThrowsError(try folder.tensor("unet.nope")) {
            XCTAssertEqual($0 as? FormatError, .missingTensor(path: folder.path, tensor: "unet.nope"))
        }
    }

    func testComponentNamedInModelIndexButMissingIsAClearError() throws {
        let copy = try copyMicroFolder()
        try FileManager.default.removeItem(atPath: copy + "/text_encoder_2")
        XCTAssertThrowsError(try DiffusersFolder(path: copy)) { error in
            guard case let .missingComponent(path, component)? = error as? FormatError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, copy)
            XCTAssertTrue(component.hasPrefix("text_encoder_2 "), component)
            XCTAssertTrue("\(error)".contains("model_index.json"), "\(error)")
        }
        // A component folder without weights is an error too, naming the files looked for.
        try FileManager.default.createDirectory(atPath: copy + "/text_encoder_2", withIntermediateDirectories: false)
        XCTAssertThrowsError(try DiffusersFolder(path: copy)) { error in
            XCTAssertTrue("\(error)".contains("text_encoder_2/ holds no model.safetensors"), "\(error)")
        }
    }

    func testPartialFoldersAndVariants() throws {
        // just unet/, no model_index.json
        let unetOnly = dir + "/unet_only"
        try FileManager.default.createDirectory(atPath: unetOnly, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixturePath("layouts/micro_diffusers/unet"), toPath: unetOnly + "/unet")
        let folder = try DiffusersFolder(path: unetOnly)
        XCTAssertNil(folder.modelIndex)
        XCTAssertEqual(folder.components, [.unet])
        XCTAssertEqual(folder.names.count, 720)
        let converted = try LayoutConverter().convert(source: folder, to: .sgm)
        XCTAssertEqual(converted.unmapped, [])
        XCTAssertTrue(converted.names.allSatisfy { $0.hasPrefix("model.diffusion_model.") })

        // .fp16 variant accepted when alone; the plain file wins when both are there.
        let copy = try copyMicroFolder()
        let vae = copy + "/vae/diffusion_pytorch_model"
        try FileManager.default.moveItem(atPath: vae + ".safetensors", toPath: vae + ".fp16.safetensors")
        XCTAssertEqual(try DiffusersFolder(path: copy).source(for: .vae)?.path, vae + ".fp16.safetensors")
        try FileManager.default.copyItem(atPath: vae + ".fp16.safetensors", toPath: vae + ".safetensors")
        try Data("not a safetensors file".utf8).write(to: URL(fileURLWithPath: vae + ".fp16.safetensors"))
        let both = try DiffusersFolder(path: copy)
        XCTAssertEqual(both.source(for: .vae)?.path, vae + ".safetensors")
        try assertSameTensors(both, try DiffusersFolder(path: fixturePath("layouts/micro_diffusers")))
    }

    func testRefinerStyleFolderWritesBigGAsEmbedderZero() throws {
        let copy = try copyMicroFolder()
        try FileManager.default.removeItem(atPath: copy + "/text_encoder")
        try FileManager.default.removeItem(atPath: copy + "/model_index.json")
        let converted = try LayoutConverter().convert(source: try DiffusersFolder(path: copy), to: .sgm)
        XCTAssertTrue(converted.names.contains("conditioner.embedders.0.model.text_projection"))
        XCTAssertFalse(converted.names.contains { $0.hasPrefix("conditioner.embedders.1.") })
    }

    func testBareComponentFilesConvertOnceGivenTheirPrefix() throws {
        // A standalone diffusers VAE file and the sgm VAE inside micro_sgm hold the same tensors.
        let bare = try SafetensorsFile(path: fixturePath("layouts/micro_diffusers/vae/diffusion_pytorch_model.safetensors"))
        let vae = PrefixedSource(bare, diffusers: .vae)
        XCTAssertTrue(vae.names.allSatisfy { $0.hasPrefix("vae.") })
        let sgmVAE = try LayoutConverter().convert(source: vae, to: .sgm)
        XCTAssertEqual(sgmVAE.unmapped, [])
        let sgm = try SafetensorsFile(path: fixturePath("layouts/micro_sgm.safetensors"))
        for info in sgmVAE.tensors {
            let a = try sgmVAE.tensor(info.name), b = try sgm.tensor(info.name)
            withExtendedLifetime((a, b)) { XCTAssertTrue(a.info == b.info && a.bytes.elementsEqual(b.bytes), info.name) }
        }
        XCTAssertEqual(sgmVAE.names.count, 180)
        XCTAssertThrowsError(try vae.tensor("encoder.conv_in.weight"))
    }

    // MARK: - what cannot be converted is reported

    func testUnknownTensorsAreReportedNeverDropped() throws {
        let source = MemorySource(path: "mixed.safetensors", [
            ("model.diffusion_model.input_blocks.1.0.in_layers.0.weight", [4]),
            ("model.diffusion_model.input_blocks.1.0.bogus.weight", [4]),
            ("model.diffusion_model.foo.weight", [4]),
            ("conditioner.embedders.1.model.logit_scale", []),
            ("model_ema.decay", []),
            ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_bias", [12]),
        ])
        let converted = try LayoutConverter().convert(source: source, to: .diffusers)
        XCTAssertEqual(Set(converted.names), ["unet.down_blocks.0.resnets.0.norm1.weight",
                                              "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.bias",
                                              "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj.bias",
                                              "text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj.bias"])
        XCTAssertEqual(converted.unmapped.map(\.name), ["model.diffusion_model.input_blocks.1.0.bogus.weight",
                                                        "model.diffusion_model.foo.weight",
                                                        "conditioner.embedders.1.model.logit_scale", "model_ema.decay"])
        XCTAssertTrue(converted.unmapped[0].reason.contains("no diffusers counterpart for this unet tensor"), converted.unmapped[0].reason)
        XCTAssertTrue(converted.unmapped[3].reason.contains("not under a known sgm component prefix"), converted.unmapped[3].reason)
        XCTAssertTrue(converted.plan.unmappedReport.hasPrefix("4 tensor(s) not converted sgm -> diffusers:"))
        XCTAssertEqual(try converted.tensor("text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj.bias").floats(), [8, 9, 10, 11])
    }

    func testIncompleteFusedGroupsAndDoubleSpellingsAreReported() throws {
        let source = MemorySource(path: "partial.safetensors", [
            ("text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.weight", [2, 2]),
            ("text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj.weight", [2, 2]),
            ("text_encoder.encoder.layers.0.mlp.fc1.weight", [2]),
            ("text_encoder.text_model.encoder.layers.0.mlp.fc1.weight", [2]),
        ])
        let converted = try LayoutConverter().convert(source: source, to: .sgm)
        XCTAssertEqual(converted.names, ["conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight"])
        XCTAssertEqual(converted.unmapped.map(\.name), ["text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.weight",
                                                        "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj.weight",
                                                        "text_encoder.text_model.encoder.layers.0.mlp.fc1.weight"])
        XCTAssertTrue(converted.unmapped[0].reason.contains("v_proj.weight, which the source lacks"), converted.unmapped[0].reason)
        XCTAssertTrue(converted.unmapped[2].reason.contains("already made from 'text_encoder.encoder.layers.0.mlp.fc1.weight'"),
                      converted.unmapped[2].reason)
    }

    // MARK: - transforms

    func testTransformsKeepBytesAndCheckShapes() throws {
        // transpose, 2-byte elements: [[1,2,3],[4,5,6]] -> [[1,4],[2,5],[3,6]]
        let m = TensorData.owned(TensorInfo(name: "p", dtype: .f16, shape: [2, 3]), bytes: try Convert.fromF32Array([1, 2, 3, 4, 5, 6], .f16))
        let tInfo = try TensorTransform.transpose.targetInfos(sources: [m.info], targets: ["t"], path: "x")
        XCTAssertEqual(tInfo, [TensorInfo(name: "t", dtype: .f16, shape: [3, 2])])
        let t = try TensorTransform.transpose.apply([m], target: tInfo[0], index: 0, path: "x")
        XCTAssertEqual(try t.floats(), [1, 4, 2, 5, 3, 6])
        // split then concat gives back the bytes
        let fused = TensorData.owned(TensorInfo(name: "f", dtype: .bf16, shape: [6, 1]), bytes: try Convert.fromF32Array([1, 2, 3, 4, 5, 6], .bf16))
        let parts = try TensorTransform.splitRows.targetInfos(sources: [fused.info], targets: ["q", "k", "v"], path: "x")
        XCTAssertEqual(parts.map(\.shape), [[2, 1], [2, 1], [2, 1]])
        let pieces = try parts.enumerated().map { try TensorTransform.splitRows.apply([fused], target: $1, index: $0, path: "x") }
        XCTAssertEqual(try pieces[1].floats(), [3, 4])
        let joined = try TensorTransform.concatRows.targetInfos(sources: parts, targets: ["f"], path: "x")
        XCTAssertEqual(joined, [fused.info])
        let rejoined = try TensorTransform.concatRows.apply(pieces, target: joined[0], index: 0, path: "x")
        withExtendedLifetime((rejoined, fused)) { XCTAssertEqual(Array(rejoined.bytes), Array(fused.bytes)) }
        // reshape
        let conv = TensorInfo(name: "c", dtype: .f32, shape: [5, 5, 1, 1])
        XCTAssertEqual(try TensorTransform.linearFromConv1x1.targetInfos(sources: [conv], targets: ["l"], path: "x").first?.shape, [5, 5])
        XCTAssertEqual(try TensorTransform.conv1x1FromLinear.targetInfos(sources: [TensorInfo(name: "l", dtype: .f32, shape: [5, 5])],
                                                                         targets: ["c"], path: "x").first?.shape, [5, 5, 1, 1])
        // shapes that do not fit name the tensor
        XCTAssertThrowsError(try TensorTransform.splitRows.targetInfos(sources: [TensorInfo(name: "in_proj_weight", dtype: .f16, shape: [10, 4])],
                                                                       targets: ["q", "k", "v"], path: "m.safetensors")) { error in
            guard case let .badTensor(path, tensor, _)? = error as? FormatError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, "m.safetensors"); XCTAssertEqual(tensor, "in_proj_weight")
        }
        XCTAssertThrowsError(try TensorTransform.linearFromConv1x1.targetInfos(sources: [TensorInfo(name: "q", dtype: .f16, shape: [4, 4, 3, 3])],
                                                                               targets: ["to_q"], path: "m"))
    }

    func testABadShapeInTheSourceFailsTheConversionUpFront() throws {
        let source = MemorySource(path: "bad.safetensors", [("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", [4, 2])])
        XCTAssertThrowsError(try LayoutConverter().convert(source: source, to: .diffusers)) { error in
            XCTAssertTrue("\(error)".contains("bad.safetensors: tensor 'conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight'"), "\(error)")
        }
        XCTAssertThrowsError(try LayoutConverter().convert(source: MemorySource(path: "none", [("foo", [1])]), to: .sgm)) { error in
            XCTAssertTrue("\(error)".contains("cannot tell the layout"), "\(error)")
        }
    }

    // MARK: - helpers

    /// Same names, shapes, dtypes and bytes.
    private func assertSameTensors(_ a: TensorSource, _ b: TensorSource, file: StaticString = #filePath, line: UInt = #line) throws {
        let an = Set(a.names), bn = Set(b.names)
        XCTAssertEqual(an.subtracting(bn).sorted(), [], "only in \(a.path)", file: file, line: line)
        XCTAssertEqual(bn.subtracting(an).sorted(), [], "only in \(b.path)", file: file, line: line)
        XCTAssertEqual(a.names.count, an.count, "duplicate names in \(a.path)", file: file, line: line)
        var differing: [String] = []
        for name in an.intersection(bn).sorted() {
            let x = try a.tensor(name), y = try b.tensor(name)
            let same = withExtendedLifetime((x, y)) { x.info.dtype == y.info.dtype && x.info.shape == y.info.shape && x.bytes.elementsEqual(y.bytes) }
            if !same { differing.append(name) }
            XCTAssertEqual(x.info, a.infoByName[name], "tensor() agrees with the listing", file: file, line: line)
        }
        XCTAssertEqual(differing, [], "dtype, shape or bytes differ", file: file, line: line)
    }

    private func copyMicroFolder() throws -> String {
        let copy = dir + "/micro_copy"
        try FileManager.default.copyItem(atPath: fixturePath("layouts/micro_diffusers"), toPath: copy)
        return copy
    }

    private struct FormatsRow { var name: String; var shape: [Int]; var dtype: DType }

    /// formats/<arch>.json tensor rows: `[sgmName, shape, component, block, {dtype?, optional?}]`.
    private func formatsRows(_ arch: String) throws -> [FormatsRow] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let data = try Data(contentsOf: root.appendingPathComponent("formats/\(arch).json"))
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let rows = try XCTUnwrap(json["tensors"] as? [[Any]])
        return try rows.map { row in
            let extra = row.count > 4 ? row[4] as? [String: Any] : nil
            let dtype = (extra?["dtype"] as? String).flatMap(DType.init(rawValue:)) ?? .f16
            return FormatsRow(name: try XCTUnwrap(row[0] as? String), shape: try XCTUnwrap(row[1] as? [Int]), dtype: dtype)
        }
    }

    /// Fixtures/layouts/<arch>.diffusers.txt: `name<TAB>d0,d1,...` as diffusers names the real model.
    private func expectedDiffusers(_ arch: String) throws -> [String: [Int]] {
        let text = try String(contentsOfFile: fixturePath("layouts/\(arch).diffusers.txt"), encoding: .utf8)
        var out: [String: [Int]] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "\t", omittingEmptySubsequences: false)
            out[String(parts[0])] = parts[1].isEmpty ? [] : parts[1].split(separator: ",").map { Int($0)! }
        }
        return out
    }
}

/// Tensor descriptions without data: enough to plan and check a conversion of a real-size model.
private final class ShapeSource: TensorSource, @unchecked Sendable {
    let path: String
    let tensors: [TensorInfo]
    var metadata: [String: String] { [:] }
    init(path: String, _ tensors: [TensorInfo]) { self.path = path; self.tensors = tensors }
    func tensor(_ name: String) throws -> TensorData { throw FormatError.unsupported("\(path): names and shapes only") }
}

/// Small f32 tensors in memory whose values count up from 0.
private final class MemorySource: TensorSource, @unchecked Sendable {
    let path: String
    let tensors: [TensorInfo]
    var metadata: [String: String] { [:] }
    init(path: String, _ specs: [(String, [Int])]) {
        self.path = path
        tensors = specs.map { TensorInfo(name: $0.0, dtype: .f32, shape: $0.1) }
    }
    func tensor(_ name: String) throws -> TensorData {
        guard let info = infoByName[name] else { throw FormatError.missingTensor(path: path, tensor: name) }
        return TensorData.owned(info, bytes: try Convert.fromF32Array((0..<info.elementCount).map(Float.init), .f32))
    }
}
