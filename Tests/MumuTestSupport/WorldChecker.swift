import Foundation
import MumuSampler

/// The shapes world's checker and style classifiers (scripts/world.py, docs/world.md), ported for the semantic
/// tests: colors and masks only, no network. Scenes come from `Tests/MumuGenerateTests/Fixtures/world/heldout.json`
/// (scripts/gen_fixtures_world.py), which carries each shape's flat mask and region as world.py computes them,
/// so the port needs no geometry; `WorldCheckerTests` checks it against world.py's verdicts on true renders.
public enum World {
    public static var fixtures: URL { testsFolder.appendingPathComponent("MumuGenerateTests/Fixtures/world") }
    /// The shipped models (models/shapes/, issue 14).
    public static var models: URL { testsFolder.deletingLastPathComponent().appendingPathComponent("models/shapes") }

    public struct Shape: Sendable {
        public var shape: String, color: String, position: String, size: String
        public var rgb: [Int], pastel: [Int]
        /// [x0, y0, x1) ... as world.check slices the large-size box.
        public var region: [Int]
        /// Row-major, side `size`.
        public var mask: [Bool]
        /// world.outline_core: where is_outline looks (the deep interior, else the pixels the stroke leaves empty).
        public var outlineCore: [Bool]
        /// world.shape_of's templates (the fixture's first prompts only): per kind, the shape drawn as that kind.
        public var templates: [String: [Bool]]?
    }

    /// world.SHAPES, in its order (shape_of keeps the first of equal matches).
    public static let shapeKinds = ["circle", "square", "triangle", "star", "ring"]

    public struct Scene: Sendable {
        public var index: Int, seed: Int, caption: String
        /// MUMU's replace form: the first shape's crop (`<image:crops/NN-0.png>`, relative to `World.fixtures`)
        /// in place of its words.
        public var replace: String
        public var background: String
        public var backgroundRGB: [Int], backgroundPastel: [Int]
        public var shapes: [Shape]
    }

    public struct Constants: Sendable {
        public var size: Int
        /// style -> (tolerance, fraction of the shape's area)
        public var check: [String: (Int, Double)]
        public var tolerance: Int
        public var interiorErode: Double
        /// A shape whose interior (outline core) has fewer pixels does not vote.
        public var judgedMin: Int
        public var pixelGrid: Int
        public var pixelBoundary: Double
    }

    public static func load() throws -> (constants: Constants, scenes: [Scene]) {
        let data = try Data(contentsOf: fixtures.appendingPathComponent("heldout.json"))
        guard let root = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let c = root["constants"] as? [String: Any], let prompts = root["prompts"] as? [[String: Any]] else {
            throw CocoaError(.fileReadCorruptFile)
        }
        let size = c["size"] as! Int
        var check: [String: (Int, Double)] = [:]
        for (k, v) in c["check"] as! [String: [Double]] { check[k] = (Int(v[0]), v[1]) }
        let constants = Constants(size: size, check: check, tolerance: c["check_tolerance"] as! Int,
                                  interiorErode: c["interior_erode"] as! Double, judgedMin: c["judged_min"] as! Int, pixelGrid: c["pixel_grid"] as! Int,
                                  pixelBoundary: c["pixel_boundary"] as! Double)
        let scenes = prompts.map { p -> Scene in
            let shapes = (p["shapes"] as! [[String: Any]]).map { s -> Shape in
                Shape(shape: s["shape"] as! String, color: s["color"] as! String, position: s["position"] as! String,
                      size: s["size"] as! String, rgb: s["rgb"] as! [Int], pastel: s["pastel"] as! [Int],
                      region: s["region"] as! [Int], mask: unpack(s["mask"] as! String, count: size * size),
                      outlineCore: unpack(s["outline_core"] as! String, count: size * size),
                      templates: (s["templates"] as? [String: String])?.mapValues { unpack($0, count: size * size) })
            }
            return Scene(index: p["index"] as! Int, seed: p["seed"] as! Int, caption: p["caption"] as! String,
                         replace: p["replace"] as! String, background: p["background"] as! String, backgroundRGB: p["background_rgb"] as! [Int],
                         backgroundPastel: p["background_pastel"] as! [Int], shapes: shapes)
        }
        return (constants, scenes)
    }

    static func unpack(_ hex: String, count: Int) -> [Bool] {
        var out = [Bool](); out.reserveCapacity(count)
        var it = hex.utf8.makeIterator()
        while out.count < count, let hi = it.next(), let lo = it.next() {
            let byte = (hexValue(hi) << 4) | hexValue(lo)
            for b in 0..<8 where out.count < count { out.append(byte & (0x80 >> b) != 0) }
        }
        return out
    }

    static func hexValue(_ c: UInt8) -> Int { c <= 57 ? Int(c) - 48 : Int(c) - 87 }

    /// The checker and classifiers over one image (RGB, `size` x `size`).
    public struct Checker {
        public let constants: Constants
        public init(_ constants: Constants) { self.constants = constants }

        func hits(_ image: RGBImage, _ rgb: [Int], _ tol: Int) -> [Bool] {
            let p = image.pixels
            return (0..<(image.width * image.height)).map { i in
                abs(Int(p[3 * i]) - rgb[0]) <= tol && abs(Int(p[3 * i + 1]) - rgb[1]) <= tol && abs(Int(p[3 * i + 2]) - rgb[2]) <= tol
            }
        }

        /// world.check: per shape, is its named color (in the palette's colors) at its named position?
        public func check(_ image: RGBImage, _ scene: Scene, palette: String = "flat") -> [Bool] {
            let (tol, frac) = constants.check[palette]!
            let n = image.width
            return scene.shapes.map { s in
                let h = hits(image, palette == "pastel" ? s.pastel : s.rgb, tol)
                var count = 0
                for y in max(0, s.region[1])..<min(n, s.region[3]) {
                    for x in max(0, s.region[0])..<min(n, s.region[2]) where h[y * n + x] { count += 1 }
                }
                let expected = s.mask.reduce(0) { $0 + ($1 ? 1 : 0) }
                return Double(count) >= frac * Double(expected)
            }
        }

        /// world.shape_of: per shape, the kind whose template best explains the pixels of its named color in its
        /// region (intersection over union, the template's centroid moved onto the pixels', best of that place and
        /// its eight one-pixel neighbours); nil without pixels of that color or without templates.
        public func shapeOf(_ image: RGBImage, _ scene: Scene, palette: String = "flat") -> [String?] {
            let tol = constants.check[palette]!.0
            let n = image.width
            return scene.shapes.map { s -> String? in
                let h = hits(image, palette == "pastel" ? s.pastel : s.rgb, tol)
                var found = [Bool](repeating: false, count: n * n)
                for y in max(0, s.region[1])..<min(n, s.region[3]) {
                    for x in max(0, s.region[0])..<min(n, s.region[2]) where h[y * n + x] { found[y * n + x] = true }
                }
                guard let templates = s.templates, let (cy, cx) = centroid(found, n) else { return nil }
                var best: String?, bestIoU = -1.0
                for kind in World.shapeKinds {
                    let t = templates[kind]!
                    let (ty, tx) = centroid(t, n)!
                    let dy = Int((cy - ty).rounded(.toNearestOrEven)), dx = Int((cx - tx).rounded(.toNearestOrEven))
                    var iou = -1.0
                    for ey in -1...1 {
                        for ex in -1...1 { iou = max(iou, intersectionOverUnion(shift(t, n, dy + ey, dx + ex), found)) }
                    }
                    if iou > bestIoU { best = kind; bestIoU = iou }
                }
                return best
            }
        }

        func centroid(_ m: [Bool], _ n: Int) -> (Double, Double)? {
            var sy = 0, sx = 0, count = 0
            for i in 0..<(n * n) where m[i] { sy += i / n; sx += i % n; count += 1 }
            return count == 0 ? nil : (Double(sy) / Double(count), Double(sx) / Double(count))
        }

        /// The mask moved by (dy, dx), zero-filled.
        func shift(_ m: [Bool], _ n: Int, _ dy: Int, _ dx: Int) -> [Bool] {
            var out = [Bool](repeating: false, count: n * n)
            for y in 0..<n where (0..<n).contains(y - dy) {
                for x in 0..<n where (0..<n).contains(x - dx) { out[y * n + x] = m[(y - dy) * n + x - dx] }
            }
            return out
        }

        func intersectionOverUnion(_ a: [Bool], _ b: [Bool]) -> Double {
            var both = 0, either = 0
            for i in a.indices { both += a[i] && b[i] ? 1 : 0; either += a[i] || b[i] ? 1 : 0 }
            return Double(both) / Double(either)
        }

        /// A mask eroded by r pixels (outside the canvas counts as outside the mask).
        func erode(_ m: [Bool], _ r: Int) -> [Bool] {
            let n = constants.size
            var out = m
            for y in 0..<n {
                for x in 0..<n where m[y * n + x] {
                    search: for dy in -r...r {
                        for dx in -r...r {
                            let yy = y + dy, xx = x + dx
                            if yy < 0 || yy >= n || xx < 0 || xx >= n || !m[yy * n + xx] { out[y * n + x] = false; break search }
                        }
                    }
                }
            }
            return out
        }

        /// world._fills: per shape whose core has at least `judgedMin` pixels, the fractions of it near the shape's
        /// color and near the background's.
        func fills(_ image: RGBImage, _ scene: Scene, core: (Shape) -> [Bool]) -> [(Double, Double)] {
            let bg = hits(image, scene.backgroundRGB, constants.tolerance)
            return scene.shapes.compactMap { s in
                let c = core(s)
                let n = c.filter { $0 }.count
                guard n >= constants.judgedMin else { return nil }
                let sh = hits(image, s.rgb, constants.tolerance)
                var a = 0, b = 0
                for i in c.indices where c[i] {
                    if sh[i] { a += 1 }
                    if bg[i] { b += 1 }
                }
                return (Double(a) / Double(n), Double(b) / Double(n))
            }
        }

        /// world.interior_fill: over the flat masks eroded by round(interiorErode x size) pixels.
        public func interiorFill(_ image: RGBImage, _ scene: Scene) -> [(Double, Double)] {
            let r = max(1, Int((constants.interiorErode * Double(constants.size)).rounded(.toNearestOrEven)))
            return fills(image, scene) { erode($0.mask, r) }
        }

        /// world.outline_fill: over the shapes' outline cores.
        public func outlineFill(_ image: RGBImage, _ scene: Scene) -> [(Double, Double)] {
            fills(image, scene) { $0.outlineCore }
        }

        /// world.is_outline; false where world.py says None (no shape to judge: not claimed).
        public func isOutline(_ image: RGBImage, _ scene: Scene) -> Bool {
            let f = outlineFill(image, scene)
            return !f.isEmpty && f.map { $0.1 - $0.0 }.reduce(0, +) / Double(f.count) > 0.3
        }

        /// world.is_striped; false where world.py says None.
        public func isStriped(_ image: RGBImage, _ scene: Scene) -> Bool {
            let f = interiorFill(image, scene)
            guard !f.isEmpty else { return false }
            let a = f.map(\.0).reduce(0, +) / Double(f.count), b = f.map(\.1).reduce(0, +) / Double(f.count)
            return a >= 0.2 && b >= 0.2 && abs(a - b) <= 0.3
        }

        /// world.blockiness: the share of neighbour differences on the pixel grid's block boundaries.
        public func blockiness(_ image: RGBImage) -> Double {
            let n = image.width, p = image.pixels, block = n / constants.pixelGrid
            var on = 0.0, total = 0.0
            for y in 0..<n {
                for x in 0..<n {
                    for c in 0..<3 {
                        let v = Double(p[3 * (y * n + x) + c])
                        if x + 1 < n {
                            let d = abs(Double(p[3 * (y * n + x + 1) + c]) - v)
                            total += d
                            if x % block == block - 1 { on += d }
                        }
                        if y + 1 < n {
                            let d = abs(Double(p[3 * ((y + 1) * n + x) + c]) - v)
                            total += d
                            if y % block == block - 1 { on += d }
                        }
                    }
                }
            }
            return total > 0 ? on / total : 0
        }

        public func isPixel(_ image: RGBImage) -> Bool { blockiness(image) >= constants.pixelBoundary }

        public func isPastel(_ image: RGBImage, _ scene: Scene) -> Bool {
            let n = image.width
            var outside = [Bool](repeating: true, count: n * n)
            var elements: [([Bool], [Int], [Int])] = []
            for s in scene.shapes {
                for y in max(0, s.region[1])..<min(n, s.region[3]) {
                    for x in max(0, s.region[0])..<min(n, s.region[2]) { outside[y * n + x] = false }
                }
                let core = erode(s.mask, 1)
                if core.contains(true) { elements.append((core, s.rgb, s.pastel)) }
            }
            elements.append((outside, scene.backgroundRGB, scene.backgroundPastel))
            var votes = 0
            for (m, flat, pastel) in elements {
                if zip(flat, pastel).map({ abs($0 - $1) }).max()! < 40 { continue }
                var dFlat = 0.0, dPastel = 0.0
                for c in 0..<3 {
                    let values = m.indices.filter { m[$0] }.map { Double(image.pixels[3 * $0 + c]) }.sorted()
                    let k = values.count
                    let med = k % 2 == 1 ? values[k / 2] : (values[k / 2 - 1] + values[k / 2]) / 2
                    dFlat += abs(med - Double(flat[c]))
                    dPastel += abs(med - Double(pastel[c]))
                }
                votes += dPastel < dFlat ? 1 : -1
            }
            return votes > 0
        }

        /// Every style classifier's verdict (outline, striped, pixel, pastel).
        public func styles(_ image: RGBImage, _ scene: Scene) -> [String: Bool] {
            ["outline": isOutline(image, scene), "striped": isStriped(image, scene), "pixel": isPixel(image),
             "pastel": isPastel(image, scene)]
        }
    }
}
