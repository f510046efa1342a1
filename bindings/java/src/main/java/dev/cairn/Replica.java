package dev.cairn;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * A local replica: one SQLite file holding the documents, the op log and the queue of changes
 * not yet on a server. Every write is atomic and durable when the call returns. Thread-safe:
 * calls from several threads are serialized by the engine. Close it when done ({@link
 * AutoCloseable}); it also stops the {@link Sync}s made for it. Errors of the engine throw
 * {@link CairnException}; a closed replica throws {@link IllegalStateException}.
 *
 * <p>Values read back are {@code null}, {@code Boolean}, {@code Long}, {@code Double}, {@code
 * String} or {@code byte[]}; documents and rows are {@code Map<String, Object>} sorted by name.
 */
public final class Replica implements AutoCloseable {
    static {
        Cairn.load();
    }

    private final NativeHandle handle;
    private final List<Sync> syncs = new ArrayList<>();

    private Replica(long handle) {
        this.handle = new NativeHandle("replica", handle);
    }

    /** Opens the replica at {@code path}, creating it when missing. */
    public static Replica open(String path) {
        return open(path, true, false);
    }

    /**
     * Opens the replica at {@code path}.
     *
     * @param create create the file when it does not exist (else ENOTFOUND-like failure)
     * @param readOnly no writes through this handle
     */
    public static Replica open(String path, boolean create, boolean readOnly) {
        Objects.requireNonNull(path, "path");
        return new Replica(nativeOpen(path, create, readOnly));
    }

    /** The replica's id, 32 lowercase hex characters. */
    public String id() {
        try (Handle h = acquire()) {
            return nativeId(h.value);
        }
    }

    /**
     * Sets fields of a document in one transaction (values as {@link WriteBatch#set}).
     *
     * <p>Every write returns its receipt: the seq of its transaction's last op. The server made
     * the write durable once the durable watermark ({@link Sync.DurableListener}) reaches it, unless it
     * refused it (docs/c-api.md "Write receipts").
     */
    public long put(String collection, String key, Map<String, ?> fields) {
        Objects.requireNonNull(fields, "fields");
        WriteBatch b = new WriteBatch();
        for (Map.Entry<String, ?> e : fields.entrySet()) {
            b.set(collection, key, e.getKey(), e.getValue());
        }
        return write(b);
    }

    /** Sets the fields of a JSON object ({"$bytes":"base64"} for bytes) on a document. */
    public long putJson(String collection, String key, String fieldsJson) {
        Objects.requireNonNull(collection, "collection");
        Objects.requireNonNull(key, "key");
        Objects.requireNonNull(fieldsJson, "fieldsJson");
        try (Handle h = acquire()) {
            return nativePutJson(h.value, collection, key, fieldsJson);
        }
    }

    /** Adds {@code delta} to a counter field (concurrent increments add up). */
    public long increment(String collection, String key, String field, long delta) {
        return write(new WriteBatch().increment(collection, key, field, delta));
    }

    /** Deletes a document (a later write revives it with only its own fields). */
    public long delete(String collection, String key) {
        return write(new WriteBatch().delete(collection, key));
    }

    /**
     * Applies every change of {@code batch} in one transaction; an empty batch is an error.
     * Returns the write's receipt, as {@link #put}.
     */
    public long write(WriteBatch batch) {
        Objects.requireNonNull(batch, "batch");
        try (Handle h = acquire()) {
            return nativeWrite(h.value, batch.kinds.stream().mapToInt(Integer::intValue).toArray(),
                    batch.collections.toArray(new String[0]), batch.keys.toArray(new String[0]),
                    batch.fields.toArray(new String[0]), batch.values.toArray());
        }
    }

    /** The visible document, or null when there is none. */
    @SuppressWarnings("unchecked")
    public Map<String, Object> get(String collection, String key) {
        String json = getJson(collection, key);
        return json == null ? null : (Map<String, Object>) nativeParseJson(json);
    }

    /** The visible document as canonical JSON, or null when there is none. */
    public String getJson(String collection, String key) {
        Objects.requireNonNull(collection, "collection");
        Objects.requireNonNull(key, "key");
        try (Handle h = acquire()) {
            return nativeGetJson(h.value, collection, key);
        }
    }

    /**
     * Runs one read-only SQL statement over the materialized tables (one per collection, a
     * column per field) with {@code params} bound to its parameters in order; EREADONLY when it
     * would write.
     */
    @SuppressWarnings("unchecked")
    public List<Map<String, Object>> query(String sql, Object... params) {
        Objects.requireNonNull(sql, "sql");
        Object[] values = params == null ? new Object[0] : params.clone();
        for (int i = 0; i < values.length; i++) values[i] = WriteBatch.normalize(values[i]);
        String lines;
        try (Handle h = acquire()) {
            lines = nativeQuery(h.value, sql, values);
        }
        List<Map<String, Object>> rows = new ArrayList<>();
        int from = 0;
        for (int nl; (nl = lines.indexOf('\n', from)) >= 0; from = nl + 1) {
            rows.add((Map<String, Object>) nativeParseJson(lines.substring(from, nl)));
        }
        return rows;
    }

    /** Canonical JSON of all visible data: {"collection":{"key":{"field":value}}}. */
    public String dumpJson() {
        try (Handle h = acquire()) {
            return nativeDump(h.value);
        }
    }

    /** SHA-256 of the canonical dump: replicas that hold the same ops have the same digest. */
    public String digest() {
        try (Handle h = acquire()) {
            return nativeDigest(h.value);
        }
    }

    /** Creates a telemetry stream or changes its settings (queued records stay). */
    public void configureStream(String stream, StreamOptions options) {
        Objects.requireNonNull(stream, "stream");
        Objects.requireNonNull(options, "options");
        try (Handle h = acquire()) {
            nativeConfigureStream(h.value, stream, options.maxBytes, options.maxAgeMs,
                    options.dropOldest ? 1 : 0, options.priority);
        }
    }

    /**
     * Appends one telemetry record (field values as {@link WriteBatch#set}) stamped now; durable
     * when this returns. Throws {@link CairnException} with {@link CairnException#EFULL} when
     * the stream is full and refuses records, {@link CairnException#EINVAL} for a bad record.
     */
    public AppendResult append(String stream, Map<String, ?> fields) {
        Objects.requireNonNull(fields, "fields");
        return appendAll(stream, java.util.Collections.singletonList(fields), null);
    }

    /** Appends one record given as a JSON object. */
    public AppendResult appendJson(String stream, String fieldsJson) {
        Objects.requireNonNull(stream, "stream");
        Objects.requireNonNull(fieldsJson, "fieldsJson");
        try (Handle h = acquire()) {
            return new AppendResult(nativeAppendJson(h.value, stream, fieldsJson));
        }
    }

    /**
     * Appends records in one transaction, all or none. {@code timestampsMs}: each record's
     * timestamp (ms since the epoch), or null to stamp them all now.
     */
    public AppendResult appendAll(String stream, List<? extends Map<String, ?>> records,
            long[] timestampsMs) {
        Objects.requireNonNull(stream, "stream");
        Objects.requireNonNull(records, "records");
        if (timestampsMs != null && timestampsMs.length != records.size()) {
            throw new IllegalArgumentException("one timestamp per record");
        }
        int[] counts = new int[records.size()];
        List<String> names = new ArrayList<>();
        List<Object> values = new ArrayList<>();
        for (int i = 0; i < counts.length; i++) {
            Map<String, ?> fields = Objects.requireNonNull(records.get(i), "record");
            int n = 0;
            for (Map.Entry<String, ?> e : fields.entrySet()) {
                Object v = WriteBatch.checked(e.getKey(), e.getValue());
                // JSON carries the record to the engine: it would turn these into null.
                if (v instanceof Double && !Double.isFinite((Double) v)) {
                    throw new IllegalArgumentException("field " + e.getKey() + " is not finite");
                }
                values.add(v);
                names.add(e.getKey());
                n++;
            }
            counts[i] = n;
        }
        try (Handle h = acquire()) {
            return new AppendResult(nativeAppend(h.value, stream, counts,
                    names.toArray(new String[0]), values.toArray(), timestampsMs));
        }
    }

    /**
     * Every stream's settings and counters, by name: records and bytes queued (not yet
     * acknowledged by a server), oldest_age_ms, dropped, rejected, uploaded, last_seq,
     * max_bytes, max_age_ms, policy, priority.
     */
    @SuppressWarnings("unchecked")
    public Map<String, Map<String, Object>> streams() {
        try (Handle h = acquire()) {
            return (Map<String, Map<String, Object>>) nativeParseJson(nativeStreams(h.value));
        }
    }

    /** replica_id, seq, pending_ops, held_back_ops, rejected_ops, cursor, known, streams, ... */
    @SuppressWarnings("unchecked")
    public Map<String, Object> status() {
        try (Handle h = acquire()) {
            return (Map<String, Object>) nativeParseJson(nativeStatus(h.value));
        }
    }

    /** The ops a server refused (each with "error" and "reason"), oldest first. */
    @SuppressWarnings("unchecked")
    public List<Map<String, Object>> rejected() {
        String lines;
        try (Handle h = acquire()) {
            lines = nativeRejected(h.value);
        }
        List<Map<String, Object>> out = new ArrayList<>();
        for (String line : lines.split("\n")) {
            if (!line.isEmpty()) out.add((Map<String, Object>) nativeParseJson(line));
        }
        return out;
    }

    /** Writes every op to {@code path} (an offline sync); returns the ops written. */
    public long exportTo(String path) {
        Objects.requireNonNull(path, "path");
        try (Handle h = acquire()) {
            return nativeExport(h.value, path);
        }
    }

    /** Applies an export atomically; returns the ops merged. */
    public long importFrom(String path) {
        Objects.requireNonNull(path, "path");
        try (Handle h = acquire()) {
            return nativeImport(h.value, path);
        }
    }

    /**
     * Adds a change listener; closing the returned handle removes it (it is not called after
     * that, except by a call another thread is starting at that moment; a running call
     * finishes).
     */
    public AutoCloseable addChangeListener(ChangeListener listener) {
        Objects.requireNonNull(listener, "listener");
        final long id;
        try (Handle h = acquire()) {
            id = nativeAddChangeListener(h.value, listener);
        }
        return () -> {
            long h;
            try {
                h = handle.acquire();
            } catch (IllegalStateException closed) {
                return;  // the listener went with the replica
            }
            try {
                nativeRemoveChangeListener(h, id);
            } finally {
                handle.release();
            }
        };
    }

    /** Stops this replica's syncs and closes it; idempotent. Not from a listener. */
    @Override
    public void close() {
        if (Callbacks.inCallback()) {
            throw new IllegalStateException("a replica cannot be closed from one of its callbacks");
        }
        if (!handle.markClosing()) return;  // closed, or another thread is closing it
        // New calls are refused now; a Sync being made finishes registering before this returns.
        long h = handle.awaitIdle();
        List<Sync> open;
        synchronized (syncs) {
            open = new ArrayList<>(syncs);
        }
        for (Sync s : open) s.close();
        nativeFree(h);
    }

    void addSync(Sync s) {
        synchronized (syncs) {
            syncs.add(s);
        }
    }

    void removeSync(Sync s) {
        synchronized (syncs) {
            syncs.remove(s);
        }
    }

    /** The native handle held open for one call. */
    final class Handle implements AutoCloseable {
        final long value;

        Handle(long value) {
            this.value = value;
        }

        @Override
        public void close() {
            handle.release();
        }
    }

    Handle acquire() {
        return new Handle(handle.acquire());
    }

    static native Object nativeParseJson(String json);

    private static native long nativeOpen(String path, boolean create, boolean readOnly);

    private static native void nativeFree(long h);

    private static native String nativeId(long h);

    private static native long nativePutJson(long h, String collection, String key, String json);

    private static native long nativeWrite(long h, int[] kinds, String[] collections, String[] keys,
            String[] fields, Object[] values);

    private static native String nativeGetJson(long h, String collection, String key);

    private static native String nativeQuery(long h, String sql, Object[] params);

    private static native String nativeDump(long h);

    private static native String nativeDigest(long h);

    private static native String nativeStatus(long h);

    private static native void nativeConfigureStream(long h, String stream, long maxBytes,
            long maxAgeMs, int policy, int priority);

    private static native long[] nativeAppendJson(long h, String stream, String json);

    private static native long[] nativeAppend(long h, String stream, int[] counts, String[] names,
            Object[] values, long[] timestampsMs);

    private static native String nativeStreams(long h);

    private static native String nativeRejected(long h);

    private static native long nativeExport(long h, String path);

    private static native long nativeImport(long h, String path);

    private static native long nativeAddChangeListener(long h, ChangeListener listener);

    private static native void nativeRemoveChangeListener(long h, long id);
}
