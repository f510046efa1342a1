import CCairn
import Foundation

/// A telemetry stream's settings (`Replica.configureStream`): its quota (bytes of queued
/// records and/or the oldest one's age; 0 = no limit of that kind), what happens when it is full
/// (refuse new records with `CairnError.full`, or drop the oldest and count them) and its upload
/// priority (higher first).
public struct StreamOptions: Sendable, Equatable {
    public var maxBytes: UInt64
    public var maxAgeMs: Int64
    public var dropOldest: Bool
    public var priority: Int32

    public init(maxBytes: UInt64 = 64 << 20, maxAgeMs: Int64 = 0, dropOldest: Bool = false,
                priority: Int32 = 0) {
        self.maxBytes = maxBytes
        self.maxAgeMs = maxAgeMs
        self.dropOldest = dropOldest
        self.priority = priority
    }
}

/// What an append did: the seqs given to the records stored (0...0 when none was), and how many
/// records were dropped to make room.
public struct AppendResult: Sendable, Equatable {
    public let firstSeq: UInt64
    public let lastSeq: UInt64
    public let dropped: UInt64
}

extension JSON {
    /// A record's fields as JSON text, every value exactly as typed (a whole double stays a
    /// double: JSONSerialization would write 1.0 as 1).
    static func exactText(_ fields: Fields) throws -> String {
        var parts: [String] = []
        for (name, value) in fields {
            let v: String
            switch value {
            case .null: v = "null"
            case .bool(let b): v = b ? "true" : "false"
            case .int(let i): v = String(i)
            case .double(let d):
                guard d.isFinite else {
                    throw CairnError(code: CairnError.invalidArgument,
                                     message: "field '\(name)' is not a finite number")
                }
                v = d == d.rounded() && abs(d) < 1e15 ? String(format: "%.1f", d) : "\(d)"
            case .string, .bytes: v = try text(encode(value))
            }
            parts.append(try text(name) + ":" + v)
        }
        return "{" + parts.joined(separator: ",") + "}"
    }
}

extension Replica {
    /// Creates a telemetry stream or changes its settings (queued records stay).
    public func configureStream(_ stream: String, _ options: StreamOptions = StreamOptions()) throws {
        var o = cairn_stream_options()
        o.version = UInt32(CAIRN_STREAM_OPTIONS_VERSION)
        o.max_bytes = options.maxBytes
        o.max_age_ms = options.maxAgeMs
        o.policy = Int32(options.dropOldest ? CAIRN_STREAM_DROP_OLDEST.rawValue : CAIRN_STREAM_REJECT.rawValue)
        o.priority = options.priority
        try withHandle { h in try check(cairn_replica_configure_stream(h, stream, &o)) }
    }

    /// Appends one record, durably, stamped `timestampMs` (ms since the epoch) or now. Throws
    /// `full` when the stream is full and refuses records, `invalidArgument` for a bad record.
    @discardableResult
    public func append(_ stream: String, _ fields: Fields, timestampMs: Int64? = nil) throws
        -> AppendResult
    {
        try append(stream, records: [fields], timestampsMs: timestampMs.map { [$0] })
    }

    /// Appends records in one transaction, all or none; `timestampsMs`: one per record, or nil to
    /// stamp them all now.
    @discardableResult
    public func append(_ stream: String, records: [Fields], timestampsMs: [Int64]? = nil) throws
        -> AppendResult
    {
        if let ts = timestampsMs, ts.count != records.count {
            throw CairnError(code: CairnError.invalidArgument, message: "one timestamp per record")
        }
        var raw: OpaquePointer?
        try check(cairn_records_new(&raw))
        defer { cairn_records_free(raw) }
        for (i, fields) in records.enumerated() {
            let ts = timestampsMs?[i] ?? Int64.min  // CAIRN_TS_NOW
            try check(cairn_records_add_json(raw!, try JSON.exactText(fields), ts))
        }
        var r = cairn_append_result()
        try withHandle { h in try check(cairn_replica_append_records(&r, h, stream, raw!)) }
        return AppendResult(firstSeq: r.first_seq, lastSeq: r.last_seq, dropped: r.dropped)
    }

    /// Every stream's settings and counters by name: records and bytes queued (not yet
    /// acknowledged by a server), oldest_age_ms, dropped, rejected, uploaded, last_seq,
    /// max_bytes, max_age_ms, policy, priority.
    public func streams() throws -> [String: [String: Any]] {
        let text: String = try withHandle { h in
            var buf = cairn_buf()
            try check(cairn_replica_streams_json(&buf, h))
            return take(&buf)
        }
        return (try JSON.parse(text) as? [String: [String: Any]]) ?? [:]
    }
}
