import CCairn
import Foundation

/// Documents of one collection that a committed transaction changed.
public struct Change: Sendable, Equatable {
    public let collection: String
    /// The changed documents' keys, sorted.
    public let keys: [String]
    /// true for writes made through this replica; false for ops received (sync, import, a
    /// refused write undone).
    public let local: Bool
}

/// Changes applied atomically by `Replica.write`: all or none. A builder (calls chain); not
/// shared between threads.
public final class WriteBatch {
    enum Entry: Sendable {
        case set(String, String, String, Value)
        case increment(String, String, String, Int64)
        case delete(String, String)
    }

    var entries: [Entry] = []

    public init() {}

    @discardableResult
    public func set(_ collection: String, _ key: String, _ field: String, _ value: Value) -> Self {
        entries.append(.set(collection, key, field, value))
        return self
    }

    @discardableResult
    public func increment(_ collection: String, _ key: String, _ field: String, by delta: Int64) -> Self {
        entries.append(.increment(collection, key, field, delta))
        return self
    }

    @discardableResult
    public func delete(_ collection: String, _ key: String) -> Self {
        entries.append(.delete(collection, key))
        return self
    }

    public var count: Int { entries.count }
}

/// A local replica: one SQLite file holding the documents, the op log and the queue of changes
/// not yet on a server. Every write is atomic and durable when the call returns.
///
/// `Sendable` because the C library serializes the calls on one replica; the handle itself is
/// guarded here so that `close()` waits for calls in progress on other threads.
public final class Replica: @unchecked Sendable {
    private let handle: NativeHandle
    private let syncsLock = NSLock()
    private var syncs: [WeakSync] = []  // closed before the replica

    /// Opens (creating when `create`) the replica at `path`.
    public init(path: String, create: Bool = true, readOnly: Bool = false) throws {
        var opts = cairn_replica_options()
        try check(cairn_replica_options_init(&opts, UInt32(CAIRN_REPLICA_OPTIONS_VERSION)))
        opts.create = create ? 1 : 0
        opts.read_only = readOnly ? 1 : 0
        var h: OpaquePointer?
        try check(cairn_replica_open(&h, path, &opts))
        guard let h else { throw CairnError(code: CAIRN_EINTERNAL.rawValue, message: "no handle") }
        handle = NativeHandle("replica", h)
    }

    deinit { close() }

    /// Closes the replica after its syncs (its change streams finish); waits for calls in
    /// progress on other threads; later calls throw `CairnError.closed`. Not from a handler.
    public func close() {
        guard handle.markClosing() else { return }
        // New calls are refused now; a Sync being made finishes registering before this returns.
        let h = handle.awaitIdle()
        syncsLock.lock()
        let open = syncs.compactMap(\.sync)
        syncs.removeAll()
        syncsLock.unlock()
        for s in open { s.close() }
        if let h { cairn_replica_free(h) }
    }

    func withHandle<T>(_ body: (OpaquePointer) throws -> T) throws -> T {
        try handle.use(body)
    }

    func add(_ sync: Sync) {
        syncsLock.lock()
        syncs.removeAll { $0.sync == nil }
        syncs.append(WeakSync(sync))
        syncsLock.unlock()
    }

    /// The replica's id, 32 lowercase hex characters.
    public var id: String {
        get throws {
            try withHandle { h in
                var buf = [CChar](repeating: 0, count: 33)
                try check(cairn_replica_id(&buf, h))
                return String(cString: buf)
            }
        }
    }

    /// Sets `fields` on a document in one transaction.
    ///
    /// Every write returns its receipt: the seq of its transaction's last op. The server made
    /// the write durable once the durable watermark (`Sync.onDurable`) reaches it, unless it
    /// refused it (docs/c-api.md "Write receipts").
    @discardableResult
    public func put(_ collection: String, _ key: String, _ fields: Fields) throws -> UInt64 {
        let b = WriteBatch()
        for (name, value) in fields { b.set(collection, key, name, value) }
        return try write(b)
    }

    /// Adds `delta` to a counter field (concurrent increments add up).
    @discardableResult
    public func increment(_ collection: String, _ key: String, _ field: String, by delta: Int64) throws -> UInt64 {
        try write(WriteBatch().increment(collection, key, field, by: delta))
    }

    /// Deletes a document (a later write revives it with only its own fields).
    @discardableResult
    public func delete(_ collection: String, _ key: String) throws -> UInt64 {
        try write(WriteBatch().delete(collection, key))
    }

    /// Applies every change of `batch` in one transaction; its receipt, as `put`.
    @discardableResult
    public func write(_ batch: WriteBatch) throws -> UInt64 {
        var raw: OpaquePointer?
        try check(cairn_batch_new(&raw))
        guard let b = raw else { throw CairnError(code: CAIRN_ENOMEM.rawValue, message: "out of memory") }
        defer { cairn_batch_free(b) }
        for e in batch.entries {
            switch e {
            case let .set(c, k, f, v):
                switch v {
                case .null: try check(cairn_batch_set_null(b, c, k, f))
                case .bool(let x): try check(cairn_batch_set_bool(b, c, k, f, x ? 1 : 0))
                case .int(let x): try check(cairn_batch_set_int(b, c, k, f, x))
                case .double(let x): try check(cairn_batch_set_double(b, c, k, f, x))
                case .string(let s):
                    // With its length: a string may hold NUL. The added 0 keeps it non-empty.
                    let utf8 = Array(s.utf8) + [0]
                    try utf8.withUnsafeBufferPointer { u in
                        try u.withMemoryRebound(to: CChar.self) { p in
                            try check(cairn_batch_set_string(b, c, k, f, p.baseAddress!, utf8.count - 1))
                        }
                    }
                case .bytes(let bytes):
                    try bytes.withUnsafeBufferPointer { p in
                        try check(cairn_batch_set_bytes(b, c, k, f, p.baseAddress, p.count))
                    }
                }
            case let .increment(c, k, f, d): try check(cairn_batch_increment(b, c, k, f, d))
            case let .delete(c, k): try check(cairn_batch_delete(b, c, k))
            }
        }
        return try withHandle { h in
            var seq: UInt64 = 0
            try check(cairn_replica_write_seq(h, b, &seq))
            return seq
        }
    }

    /// The visible document, or nil when there is none.
    public func get(_ collection: String, _ key: String) throws -> Fields? {
        let text: String? = try withHandle { h in
            var buf = cairn_buf()
            let rc = cairn_replica_get_json(&buf, h, collection, key)
            if rc == CAIRN_ENOTFOUND.rawValue { return nil }
            try check(rc)
            return take(&buf)
        }
        return try text.map(JSON.fields)
    }

    /// Runs one read-only SQL statement over the materialized tables (a table per collection,
    /// a column per field) with `params` bound in order. Throws `readOnly` when it would write.
    public func query(_ sql: String, _ params: [Value] = []) throws -> [Fields] {
        let paramsJSON = try JSON.text(params.map(JSON.encode))
        let lines: String = try withHandle { h in
            var buf = cairn_buf()
            try check(cairn_replica_query_json_params(&buf, h, sql, paramsJSON))
            return take(&buf)
        }
        return try lines.split(separator: "\n").map { try JSON.fields(String($0)) }
    }

    /// SHA-256 of the canonical dump: replicas holding the same ops have the same digest.
    public func digest() throws -> String {
        try withHandle { h in
            var buf = [CChar](repeating: 0, count: 65)
            try check(cairn_replica_digest(&buf, h))
            return String(cString: buf)
        }
    }

    /// Canonical JSON of all visible data.
    public func dumpJSON() throws -> String {
        try text(cairn_replica_dump_json)
    }

    /// The text a C call that fills a cairn_buf from the replica returns.
    private func text(_ call: (UnsafeMutablePointer<cairn_buf>, OpaquePointer) -> Int32) throws -> String {
        try withHandle { h in
            var buf = cairn_buf()
            try check(call(&buf, h))
            return take(&buf)
        }
    }

    /// replica_id, seq, pending_ops, held_back_ops, rejected_ops, cursor, known, ...
    public func status() throws -> [String: Any] {
        return (try JSON.parse(try text(cairn_replica_status_json)) as? [String: Any]) ?? [:]
    }

    /// The ops a server refused, oldest first (each with "error" and "reason").
    public func rejected() throws -> [[String: Any]] {
        let lines = try text(cairn_replica_rejected_json)
        return try lines.split(separator: "\n").compactMap { try JSON.parse(String($0)) as? [String: Any] }
    }

    /// Writes every op to `path` (an offline sync); returns the ops written.
    @discardableResult
    public func export(to path: String) throws -> UInt64 {
        try withHandle { h in
            var n: UInt64 = 0
            try check(cairn_replica_export(&n, h, path))
            return n
        }
    }

    /// Applies an export atomically; returns the ops merged.
    @discardableResult
    public func importFile(_ path: String) throws -> UInt64 {
        try withHandle { h in
            var n: UInt64 = 0
            try check(cairn_replica_import(&n, h, path))
            return n
        }
    }

    /// The committed changes from now on, in commit order. The stream ends when the replica is
    /// closed; ending it (cancelling its task) removes the listener.
    public func changes(bufferingPolicy: AsyncStream<Change>.Continuation.BufferingPolicy = .unbounded)
        throws -> AsyncStream<Change>
    {
        let (stream, continuation) = AsyncStream.makeStream(of: Change.self, bufferingPolicy: bufferingPolicy)
        var id: UInt64 = 0
        try withHandle { h in
            // The library owns `box` from here: it calls releaseChangeSink when it drops it,
            // also if this call fails.
            let box = Unmanaged.passRetained(ChangeSink(continuation)).toOpaque()
            try check(cairn_replica_add_change_listener(&id, h, { ctx, collection, keys, n, local in
                guard let ctx else { return }
                let sink = Unmanaged<ChangeSink>.fromOpaque(ctx).takeUnretainedValue()
                let list = (0..<n).map { String(cString: keys[$0]) }
                sink.continuation.yield(Change(collection: String(cString: collection), keys: list, local: local != 0))
            }, box, releaseChangeSink))
        }
        let listenerID = id
        continuation.onTermination = { [weak self] _ in
            guard let self else { return }
            _ = try? self.withHandle { h in cairn_replica_remove_change_listener(h, listenerID) }
        }
        return stream
    }
}

struct WeakSync {
    weak var sync: Sync?
    init(_ s: Sync) { sync = s }
}

/// What a change listener's C payload points to: the stream it feeds.
final class ChangeSink: @unchecked Sendable {
    let continuation: AsyncStream<Change>.Continuation
    init(_ c: AsyncStream<Change>.Continuation) { continuation = c }
}

private func releaseChangeSink(_ ctx: UnsafeMutableRawPointer?) {
    guard let ctx else { return }
    let sink = Unmanaged<ChangeSink>.fromOpaque(ctx).takeRetainedValue()
    sink.continuation.finish()
}
