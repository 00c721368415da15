import MumuFormats

/// How far a long registry job (a copy, a delta, an extraction, a materialization) has come. The library reports
/// it through a callback; the CLI draws it as a bar, a server would send it on.
public struct WorkProgress: Sendable, Equatable {
    /// What `done` and `total` count.
    public enum Unit: String, Sendable {
        case bytes, tensors, modules
    }

    public var done: Int
    public var total: Int
    public var unit: Unit
    /// Bytes done and in all, when the units are not bytes (0 when unknown).
    public var bytesDone: Int
    public var bytesTotal: Int

    public init(done: Int, total: Int, unit: Unit, bytesDone: Int = 0, bytesTotal: Int = 0) {
        self.done = done; self.total = total; self.unit = unit; self.bytesDone = bytesDone; self.bytesTotal = bytesTotal
    }

    /// The merge executor's progress (tensors written, bytes written).
    public init(_ p: StreamProgress) {
        self.init(done: p.tensorsDone, total: p.tensorsTotal, unit: .tensors, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal)
    }

    public var isFinished: Bool { done >= total }
}
