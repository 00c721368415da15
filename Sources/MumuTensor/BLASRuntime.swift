import CBLAS
import CMumuKernels
import Foundation

/// OpenBLAS picks its kernels when the library loads, by CPU model. Distribution builds do not know CPUs newer
/// than their release (Debian's 0.3.21 takes this machine's Sapphire/Emerald Rapids Xeon for a "Prescott" and
/// runs SSE3 kernels, 3x slower than its AVX-512 ones); `OPENBLAS_CORETYPE` overrides the choice, but only
/// before the library initializes. So the CLI checks at start and, when OpenBLAS fell back to a generic core
/// on a CPU that has AVX-512 or AVX2, runs itself again with OPENBLAS_CORETYPE set.
public enum BLASRuntime {
    /// The core OpenBLAS uses ("SkylakeX", "Haswell", "Prescott", ...).
    public static var coreName: String { String(cString: openblas_get_corename()) }

    /// The core OpenBLAS should use on this CPU when its own detection fell back to a generic one, else nil.
    public static var betterCore: String? {
        let generic: Set<String> = ["prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "unknown", "katmai", "coppermine", "northwood", "banias"]
        guard generic.contains(coreName.lowercased()) else { return nil }
        switch mumu_cpu_vector_level() {
        case 2: return "SkylakeX"
        case 1: return "Haswell"
        default: return nil
        }
    }

    /// Re-executes the current program with OPENBLAS_CORETYPE set when that gives faster kernels (once: the
    /// variable being set stops a second round; a user's own OPENBLAS_CORETYPE is respected). Returns only when
    /// nothing needs doing or exec failed.
    public static func reexecWithFasterKernelsIfNeeded() {
        guard getenv("OPENBLAS_CORETYPE") == nil, let core = betterCore else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) }
        argv.append(nil)
        execv("/proc/self/exe", &argv)
        // exec failed: carry on with the slow kernels rather than not at all.
        FileHandle.standardError.write("mumu: OpenBLAS uses its generic \(coreName) kernels on this CPU and re-running with OPENBLAS_CORETYPE=\(core) failed (\(String(cString: strerror(errno)))); set it yourself for ~3x faster matrix products\n".data(using: .utf8)!)
    }
}
