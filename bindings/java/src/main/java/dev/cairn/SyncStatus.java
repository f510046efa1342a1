package dev.cairn;

import java.util.Map;

/**
 * A sync's status (docs/protocol.md "Sync status (client)"): what it is doing, what is left,
 * the last error. Immutable.
 */
public final class SyncStatus {
    /** offline, connecting, syncing, or idle (everything acknowledged and applied). */
    public enum State { OFFLINE, CONNECTING, SYNCING, IDLE }

    public final State state;
    /** Local ops not yet acknowledged by the server. */
    public final long pendingOps;
    /** Telemetry records not yet acknowledged by the server. */
    public final long pendingRecords;
    /** Telemetry records the server acknowledged (this sync's lifetime). */
    public final long recordsUploaded;
    /** The last failure ("ENETWORK: ..."), or null when the last attempt did not fail. */
    public final String lastError;
    /** When the last exchange completed (ms since the epoch), or null. */
    public final Long lastSyncMs;
    public final long cursor;
    public final long bytesSent;
    public final long bytesReceived;
    public final long opsPushed;
    public final long opsReceived;
    public final long transactionsRefused;
    public final long reconnects;
    /** When the session's token expires (ms since the epoch), as the server said; null: unknown. */
    public final Long tokenExpiresMs;

    private SyncStatus(Map<String, Object> m) {
        state = State.valueOf(((String) m.get("state")).toUpperCase(java.util.Locale.ROOT));
        pendingOps = (Long) m.get("pending_ops");
        pendingRecords = (Long) m.get("pending_records");
        recordsUploaded = (Long) m.get("records_uploaded");
        lastError = (String) m.get("last_error");
        lastSyncMs = (Long) m.get("last_sync_ms");
        cursor = (Long) m.get("cursor");
        bytesSent = (Long) m.get("bytes_sent");
        bytesReceived = (Long) m.get("bytes_received");
        opsPushed = (Long) m.get("ops_pushed");
        opsReceived = (Long) m.get("ops_received");
        transactionsRefused = (Long) m.get("txns_refused");
        reconnects = (Long) m.get("reconnects");
        tokenExpiresMs = (Long) m.get("token_expires_ms");
    }

    @SuppressWarnings("unchecked")
    static SyncStatus parse(String json) {
        return new SyncStatus((Map<String, Object>) Replica.nativeParseJson(json));
    }

    @Override
    public String toString() {
        return "SyncStatus{" + state + ", pending " + pendingOps
                + (lastError != null ? ", error " + lastError : "") + "}";
    }
}
