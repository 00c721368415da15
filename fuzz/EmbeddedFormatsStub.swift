// Stand-in for the EmbeddedFormats.swift that the EmbedFormats build plugin generates in a
// SwiftPM build. The fuzz targets never read architecture descriptors, so none are embedded.
enum EmbeddedFormats {
    static let files: [(name: String, json: String)] = []
}
