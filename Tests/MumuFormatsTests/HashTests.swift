import Foundation
import MumuTestSupport
import XCTest
import MumuFormats
import CMumuKernels

final class HashTests: XCTestCase {
    private func hex(_ bytes: [UInt8], chunks: [Int] = []) -> String {
        var h = SHA256()
        var i = 0
        for c in chunks where i < bytes.count {
            let n = min(c, bytes.count - i)
            bytes.withUnsafeBytes { h.update(UnsafeRawBufferPointer(rebasing: $0[i..<(i + n)])) }
            i += n
        }
        bytes.withUnsafeBytes { h.update(UnsafeRawBufferPointer(rebasing: $0[i...])) }
        return h.hexDigest()
    }

    /// FIPS 180-4 / NIST test vectors, through both block functions.
    func testNISTVectors() {
        for portable in [false, true] {
            mumu_sha256_force_portable(portable ? 1 : 0)
            defer { mumu_sha256_force_portable(0) }
            XCTAssertEqual(hex([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            XCTAssertEqual(hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
            XCTAssertEqual(hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                           "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
            XCTAssertEqual(hex(Array(repeating: UInt8(ascii: "a"), count: 1_000_000)),
                           "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        }
    }

    /// Any split of the input into updates gives the same digest, and the SHA-NI path equals the portable one.
    func testChunkingAndPathsAgree() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<30 {
            let n = Int.random(in: 0..<5000, using: &rng)
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let whole = hex(bytes)
            let chunks = (0..<8).map { _ in Int.random(in: 0..<300, using: &rng) }
            XCTAssertEqual(hex(bytes, chunks: chunks), whole)
            mumu_sha256_force_portable(1)
            XCTAssertEqual(hex(bytes), whole)
            mumu_sha256_force_portable(0)
        }
    }

    func testFileHashesFollowTheEcosystemDefinitions() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/m.safetensors"
        // Big enough to have bytes at the AutoV1 offset (1 MiB .. 1 MiB + 64 KiB).
        try writeTensors(path, [("w", [300_000], (0..<300_000).map { Float($0 % 1000) })], metadata: ["a": "b"])
        let file = try MappedFile(path: path)
        let header = try SafetensorsHeader.parse(file.all, path: path)
        let h = try Hashing.hashes(of: file, dataStart: header.dataStart)
        let bytes = try readFile(path)
        XCTAssertEqual(h.sha256, hex(bytes))
        XCTAssertEqual(h.autoV2, String(hex(bytes).prefix(10)))
        XCTAssertEqual(h.autoV1, String(hex(Array(bytes[0x100000..<0x110000])).prefix(8)))
        XCTAssertEqual(h.dataSHA256, hex(Array(bytes[header.dataStart...])))
        XCTAssertEqual(h.autoV3, String(hex(Array(bytes[header.dataStart...])).prefix(12)))
        XCTAssertEqual(h.modelspecHash, "0x" + hex(Array(bytes[header.dataStart...])))

        let cache = HashCache(directory: dir + "/cache")
        XCTAssertNil(cache.lookup(path))
        XCTAssertEqual(try cache.hashes(of: path), h)
        XCTAssertEqual(HashCache(directory: dir + "/cache").lookup(path), h, "persisted")
        // The whole-file hashes alone (what merges name inputs by), completed when the data hash is asked for.
        let partial = HashCache(directory: dir + "/cache-whole")
        let whole = try partial.wholeFileHashes(of: path)
        XCTAssertEqual(whole, FileHashes(sha256: h.sha256, autoV1: h.autoV1, dataSHA256: nil))
        XCTAssertEqual(partial.lookup(path), whole)
        XCTAssertEqual(try partial.hashes(of: path), h, "the data-only hash is added")
        XCTAssertEqual(HashCache(directory: dir + "/cache-whole").lookup(path), h)
        XCTAssertEqual(try cache.wholeFileHashes(of: path), h, "a complete entry serves the whole-file hashes")
        try writeTensors(dir + "/m2.safetensors", [("w", [1], [1])])
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: dir + "/m2.safetensors", toPath: path)
        XCTAssertNil(cache.lookup(path), "a changed file is not served from the cache")
    }
}
