package dev.cairn;

/**
 * A telemetry stream's settings ({@link Replica#configureStream}): its quota (bytes of queued
 * records and/or age of the oldest, 0 meaning no limit of that kind), what happens when it is
 * full (refuse new records with {@link CairnException#EFULL}, or drop the oldest and count
 * them) and its upload priority (higher first). The defaults: 64 MiB, no age limit, refuse,
 * priority 0.
 */
public final class StreamOptions {
    long maxBytes = 64L << 20;
    long maxAgeMs = 0;
    boolean dropOldest = false;
    int priority = 0;

    public StreamOptions maxBytes(long bytes) {
        if (bytes < 0) throw new IllegalArgumentException("maxBytes must not be negative");
        this.maxBytes = bytes;
        return this;
    }

    public StreamOptions maxAgeMs(long ms) {
        if (ms < 0) throw new IllegalArgumentException("maxAgeMs must not be negative");
        this.maxAgeMs = ms;
        return this;
    }

    /** When full, drop the oldest records (counted as dropped) instead of refusing new ones. */
    public StreamOptions dropOldest(boolean drop) {
        this.dropOldest = drop;
        return this;
    }

    public StreamOptions priority(int priority) {
        this.priority = priority;
        return this;
    }
}
