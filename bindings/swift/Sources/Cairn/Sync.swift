import CCairn
import Foundation

/// A sync's status (docs/protocol.md "Sync status (client)").
public struct SyncStatus: Sendable, Equatable, Decodable {
    public enum State: String, Sendable, Decodable { case offline, connecting, syncing, idle }
    public let state: State
    /// Local ops not yet acknowledged by the server.
    public let pendingOps: Int64
    /// Telemetry records not yet acknowledged by the server.
    public let pendingRecords: UInt64
    /// Telemetry records the server acknowledged (this sync's lifetime).
    public let recordsUploaded: UInt64
    /// The last failure, nil when the last attempt did not fail.
    public let lastError: String?
    /// When the last exchange completed (ms since the epoch).
    public let lastSyncMs: Int64?
    public let cursor: UInt64
    public let bytesSent: UInt64
    public let bytesReceived: UInt64
    public let opsPushed: UInt64
    public let opsReceived: UInt64
    public let txnsRefused: UInt64
    public let reconnects: UInt32
    /// When the session's token expires (ms since the epoch), as the server said; nil: unknown.
    /// Renew before it (`setToken`).
    public let tokenExpiresMs: Int64?

    enum CodingKeys: String, CodingKey {
        case state, cursor, reconnects
        case tokenExpiresMs = "token_expires_ms"
        case pendingOps = "pending_ops", lastError = "last_error", lastSyncMs = "last_sync_ms"
        case pendingRecords = "pending_records", recordsUploaded = "records_uploaded"
        case bytesSent = "bytes_sent", bytesReceived = "bytes_received", opsPushed = "ops_pushed"
        case opsReceived = "ops_received", txnsRefused = "txns_refused"
    }

    static func parse(_ json: String) throws -> SyncStatus {
        try JSONDecoder().decode(SyncStatus.self, from: Data(json.utf8))
    }
}

/// Syncs a `Replica` with a cairn-server: one exchange (`syncOnce`) or live sync on a
/// background thread (`start` ... `stop`) that reconnects by itself with backoff.
///
/// `Sendable`: the C library's sync calls may come from any thread. Handlers run on the sync
/// thread (or inside `syncOnce`) and must not stop or close this sync.
public final class Sync: @unchecked Sendable {
    public struct Options: Sendable {
        /// "HOST:PORT" of the cairn-server.
        public var server: String
        /// The bearer token (an HS256 JWT signed with the server's secret).
        public var token: String?
        /// TLS with certificate and host-name verification (the default).
        public var tls = true
        /// A PEM file of CAs to trust instead of the system's.
        public var caFile: String?
        /// The name to verify in the certificate (default: the host of `server`).
        public var serverName: String?
        /// Partial sync: only these collections (nil: all).
        public var only: [String]?
        /// With the server's sync rules (docs/sync-rules.md): only these channels, each one the
        /// token may read (nil: all it may).
        public var channels: [String]?

        public init(server: String, token: String? = nil) {
            self.server = server
            self.token = token
        }
    }

    private let replica: Replica  // kept alive as long as the sync
    private let handle: NativeHandle

    public init(replica: Replica, options: Options) throws {
        self.replica = replica
        var opts = cairn_sync_options()
        try check(cairn_sync_options_init(&opts, UInt32(CAIRN_SYNC_OPTIONS_VERSION)))
        var h: OpaquePointer?
        let only = options.only?.joined(separator: ",")
        if let channels = options.channels, channels.contains(where: { $0.isEmpty || $0.contains(",") }) {
            throw CairnError(code: CAIRN_EINVAL.rawValue, message: "a channel name is empty or has a comma")
        }
        let channels = options.channels?.joined(separator: ",")
        try replica.withHandle { r in
            try options.server.withCString { server in
                try withOptionalCString(options.token) { token in
                    try withOptionalCString(options.caFile) { ca in
                        try withOptionalCString(options.serverName) { name in
                            try withOptionalCString(only) { only in
                              try withOptionalCString(channels) { channels in
                                opts.server = server
                                opts.token = token
                                opts.tls = options.tls ? 1 : 0
                                opts.ca_file = ca
                                opts.server_name = name
                                opts.only = only
                                opts.channels = channels
                                try check(cairn_sync_new(&h, r, &opts))
                              }
                            }
                        }
                    }
                }
            }
        }
        guard let h else { throw CairnError(code: CAIRN_EINTERNAL.rawValue, message: "no handle") }
        handle = NativeHandle("sync", h)
        do {
            // Registered during a call on the replica: its close() waits for that, then closes us.
            try replica.withHandle { _ in replica.add(self) }
        } catch {
            close()  // the replica started closing meanwhile
            throw error
        }
    }

    deinit { close() }

    /// Stops live sync and frees; later calls throw `CairnError.closed`.
    public func close() {
        guard handle.markClosing() else { return }
        if let h = handle.awaitIdle() { cairn_sync_free(h) }  // stops live sync first
    }

    private func withHandle<T>(_ body: (OpaquePointer) throws -> T) throws -> T {
        try handle.use(body)
    }

    /// One exchange: pushes every local op, pulls everything, returns when done.
    /// - Parameter timeoutMs: 0 for no limit.
    public func syncOnce(timeoutMs: UInt32 = 0) throws {
        try withHandle { h in try check(cairn_sync_once(h, timeoutMs)) }
    }

    /// Starts live sync on a background thread (`busy` when running).
    public func start() throws { try withHandle { h in try check(cairn_sync_start(h)) } }

    /// Stops live sync and waits for its thread.
    public func stop() throws { try withHandle { h in try check(cairn_sync_stop(h)) } }

    /// The network came back: a waiting live sync reconnects at once.
    public func networkChanged() throws { try withHandle { h in try check(cairn_sync_network_changed(h)) } }

    /// A renewed token (docs/protocol.md "Token renewal"): the live session takes it without
    /// reconnecting, and every later connection uses it. A live sync whose token expired
    /// (`lastError` ETOKEN) waits for this call, then reconnects at once.
    public func setToken(_ token: String) throws {
        try withHandle { h in try token.withCString { t in try check(cairn_sync_set_token(h, t)) } }
    }

    public func status() throws -> SyncStatus {
        let text: String = try withHandle { h in
            var buf = cairn_buf()
            try check(cairn_sync_status_json(&buf, h))
            return take(&buf)
        }
        return try SyncStatus.parse(text)
    }

    /// Called when the state, the count of pending ops or the last error changed (nil removes).
    public func onStatus(_ handler: (@Sendable (SyncStatus) -> Void)?) throws {
        try withHandle { h in
            guard let handler else {
                try check(cairn_sync_set_status_callback(h, nil, nil, nil))
                return
            }
            let box = Unmanaged.passRetained(Handler(handler)).toOpaque()
            try check(cairn_sync_set_status_callback(h, { ctx, json in
                guard let ctx else { return }
                let f = Unmanaged<Handler<SyncStatus>>.fromOpaque(ctx).takeUnretainedValue()
                if let s = try? SyncStatus.parse(String(cString: json)) { f.call(s) }
            }, box, releaseStatusHandler))
        }
    }

    /// Called when the server made every local op up to the given seq durable, but the
    /// transactions `onRefused` was told of before (docs/c-api.md "Write receipts"; nil removes).
    public func onDurable(_ handler: (@Sendable (UInt64) -> Void)?) throws {
        try withHandle { h in
            guard let handler else {
                try check(cairn_sync_set_durable_callback(h, nil, nil, nil))
                return
            }
            let box = Unmanaged.passRetained(Handler(handler)).toOpaque()
            try check(cairn_sync_set_durable_callback(h, { ctx, through in
                guard let ctx else { return }
                Unmanaged<Handler<UInt64>>.fromOpaque(ctx).takeUnretainedValue().call(through)
            }, box, releaseDurableHandler))
        }
    }

    /// Called for each local transaction the server refused, before `onDurable` is told of a
    /// watermark that covers it (nil removes). The write is undone locally.
    public func onRefused(_ handler: (@Sendable (Refusal) -> Void)?) throws {
        try withHandle { h in
            guard let handler else {
                try check(cairn_sync_set_refused_callback(h, nil, nil, nil))
                return
            }
            let box = Unmanaged.passRetained(Handler(handler)).toOpaque()
            try check(cairn_sync_set_refused_callback(h, { ctx, first, last, code, reason in
                guard let ctx else { return }
                Unmanaged<Handler<Refusal>>.fromOpaque(ctx).takeUnretainedValue().call(
                    Refusal(firstSeq: first, lastSeq: last, code: code, reason: String(cString: reason)))
            }, box, releaseRefusedHandler))
        }
    }
}

/// A local transaction the server refused: its seqs (`lastSeq` is its write's receipt), the
/// server's code (as `CairnError.code`) and reason.
public struct Refusal: Sendable, Equatable {
    public let firstSeq: UInt64
    public let lastSeq: UInt64
    public let code: Int32
    public let reason: String
}

/// A Swift closure behind a C callback's payload.
final class Handler<T>: @unchecked Sendable {
    let call: @Sendable (T) -> Void
    init(_ f: @escaping @Sendable (T) -> Void) { call = f }
}

// The payload-free functions for the handlers (a C function pointer cannot be generic).
private func releaseStatusHandler(_ ctx: UnsafeMutableRawPointer?) {
    if let ctx { Unmanaged<Handler<SyncStatus>>.fromOpaque(ctx).release() }
}

private func releaseDurableHandler(_ ctx: UnsafeMutableRawPointer?) {
    if let ctx { Unmanaged<Handler<UInt64>>.fromOpaque(ctx).release() }
}

private func releaseRefusedHandler(_ ctx: UnsafeMutableRawPointer?) {
    if let ctx { Unmanaged<Handler<Refusal>>.fromOpaque(ctx).release() }
}

private func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) throws -> R) rethrows -> R {
    guard let s else { return try body(nil) }
    return try s.withCString { try body($0) }
}
