// Stands in for MumuSampler's RGBImage (Sources/MumuSampler/Output/PNG.swift) in the image and tokenizer fuzz
// targets, which compile MumuEncoder's Image/ and Tokenizer/ sources without the MumuSampler module.
public struct RGBImage: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}
