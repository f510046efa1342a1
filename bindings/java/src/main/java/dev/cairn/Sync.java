package dev.cairn;

import java.util.Objects;
import java.util.function.LongConsumer;
import java.util.function.LongFunction;

/**
 * Syncs a {@link Replica} with a cairn-server: one exchange ({@link #syncOnce}) or live sync on
 * a background thread ({@link #start} .. {@link #stop}) that reconnects by itself with backoff.
 * Thread-safe. Close it when done (closing the replica closes it too). Callbacks run on the
 * sync thread (or inside syncOnce) and must not close the sync or its replica.
 */
public final class Sync implements AutoCloseable {
    /** Told when the state, the count of pending ops or the last error changed. */
    public interface StatusListener {
        void onStatus(SyncStatus status);
    }

    /**
     * Told when the server made every local op up to {@code throughSeq} durable, but the
     * transactions a {@link RefusedListener} was told of before (docs/c-api.md "Write receipts").
     */
    public interface DurableListener {
        void onDurable(long throughSeq);
    }

    /**
     * Told of each local transaction the server refused (its seqs, the last one its write's
     * receipt; the code as {@link CairnException}'s; the reason), before the durable listener
     * is told of a watermark that covers it. The write is undone locally.
     */
    public interface RefusedListener {
        void onRefused(long firstSeq, long lastSeq, int code, String reason);
    }

    /** Where and how to connect. */
    public static final class Options {
        String server;
        String token;
        boolean tls = true;
        String caFile;
        String serverName;
        String only;
        String channels;

        /** "HOST:PORT" of the cairn-server. */
        public Options(String server) {
            this.server = Objects.requireNonNull(server, "server");
        }

        /** The bearer token (an HS256 JWT the server's secret signed). */
        public Options token(String token) {
            this.token = token;
            return this;
        }

        /** TLS with certificate and host-name verification (the default), or plain TCP. */
        public Options tls(boolean on) {
            this.tls = on;
            return this;
        }

        /** A PEM file of CAs to trust instead of the system's. */
        public Options caFile(String path) {
            this.caFile = path;
            return this;
        }

        /** The name to verify in the server's certificate (default: the host). */
        public Options serverName(String name) {
            this.serverName = name;
            return this;
        }

        /** Partial sync: only these collections. */
        public Options only(String... collections) {
            this.only = collections.length == 0 ? null : String.join(",", collections);
            return this;
        }

        /**
         * With the server's sync rules (docs/sync-rules.md): only these channels, each one the
         * token may read (default: all it may).
         */
        public Options channels(String... names) {
            for (String n : names) {
                if (n == null || n.isEmpty() || n.indexOf(',') >= 0) {
                    throw new IllegalArgumentException("a channel name is empty or has a comma");
                }
            }
            this.channels = names.length == 0 ? null : String.join(",", names);
            return this;
        }
    }

    private final Replica replica;
    private final NativeHandle handle;

    /** A sync for {@code replica}; nothing connects yet. EINVAL for bad options. */
    public Sync(Replica replica, Options options) {
        this.replica = Objects.requireNonNull(replica, "replica");
        Objects.requireNonNull(options, "options");
        try (Replica.Handle h = replica.acquire()) {
            handle = new NativeHandle("sync", nativeNew(h.value, options.server, options.token,
                    options.tls, options.caFile, options.serverName, options.only,
                    options.channels));
            replica.addSync(this);  // while the replica cannot start closing
        }
    }

    /**
     * One exchange: pushes every local op, pulls everything, returns when done. Throws {@link
     * CairnException} (ENETWORK, ETIMEDOUT, EPERM, ...) on failure; EBUSY while live sync runs.
     *
     * @param timeoutMs 0: no limit
     */
    public void syncOnce(long timeoutMs) {
        if (timeoutMs < 0 || timeoutMs > 0xFFFFFFFFL) {
            throw new IllegalArgumentException("timeoutMs out of range");
        }
        run(h -> nativeOnce(h, timeoutMs));
    }

    /** Starts live sync on a background thread (EBUSY if running). */
    public void start() {
        run(Sync::nativeStart);
    }

    /** Stops live sync and waits for its thread; a no-op when not running. Not from a callback. */
    public void stop() {
        if (Callbacks.inCallback()) {
            throw new IllegalStateException("a sync cannot be stopped from one of its callbacks");
        }
        run(Sync::nativeStop);
    }

    /** The network came back: a waiting live sync reconnects at once. */
    public void networkChanged() {
        run(Sync::nativeNetworkChanged);
    }

    /**
     * A renewed token (docs/protocol.md "Token renewal"): the live session takes it without
     * reconnecting, and every later connection uses it. A live sync whose token expired (status
     * error ETOKEN) waits for this call, then reconnects at once. Renew before {@link
     * SyncStatus#tokenExpiresMs}.
     */
    public void setToken(String token) {
        Objects.requireNonNull(token, "token");
        run(h -> nativeSetToken(h, token));
    }

    public SyncStatus status() {
        return SyncStatus.parse(call(Sync::nativeStatus));
    }

    /** Sets the status listener (null removes it). */
    public void setStatusListener(StatusListener l) {
        run(h -> nativeSetStatusListener(h, l));
    }

    /** Sets the durable listener (null removes it). */
    public void setDurableListener(DurableListener l) {
        run(h -> nativeSetDurableListener(h, l));
    }

    /** Sets the refusal listener (null removes it). */
    public void setRefusedListener(RefusedListener l) {
        run(h -> nativeSetRefusedListener(h, l));
    }

    /** Stops live sync and frees; idempotent. Not from one of its callbacks. */
    @Override
    public void close() {
        if (Callbacks.inCallback()) {
            throw new IllegalStateException("a sync cannot be closed from one of its callbacks");
        }
        if (!handle.markClosing()) return;
        nativeFree(handle.awaitIdle());  // stops live sync: its callbacks may still call in
        replica.removeSync(this);
    }

    /** Runs {@code f} on the handle, held open (close waits) for the call. */
    private <T> T call(LongFunction<T> f) {
        long h = handle.acquire();
        try {
            return f.apply(h);
        } finally {
            handle.release();
        }
    }

    private void run(LongConsumer f) {
        call(h -> {
            f.accept(h);
            return null;
        });
    }

    private static native long nativeNew(long replica, String server, String token, boolean tls,
            String caFile, String serverName, String only, String channels);

    private static native void nativeFree(long h);

    private static native void nativeOnce(long h, long timeoutMs);

    private static native void nativeStart(long h);

    private static native void nativeStop(long h);

    private static native void nativeNetworkChanged(long h);

    private static native void nativeSetToken(long h, String token);

    private static native String nativeStatus(long h);

    private static native void nativeSetStatusListener(long h, StatusListener l);

    private static native void nativeSetDurableListener(long h, DurableListener l);

    private static native void nativeSetRefusedListener(long h, RefusedListener l);
}
