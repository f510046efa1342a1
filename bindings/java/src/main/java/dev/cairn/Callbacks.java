package dev.cairn;

import java.util.Arrays;
import java.util.Collections;

/** Entry points the native library calls on engine threads; exceptions stop here. */
final class Callbacks {
    private static final ThreadLocal<int[]> DEPTH = ThreadLocal.withInitial(() -> new int[1]);

    private Callbacks() {}

    static boolean inCallback() {
        return DEPTH.get()[0] > 0;
    }

    static void change(ChangeListener l, String collection, String[] keys, boolean local) {
        guarded(() -> l.onChange(collection, Collections.unmodifiableList(Arrays.asList(keys)), local));
    }

    static void status(Sync.StatusListener l, String json) {
        guarded(() -> l.onStatus(SyncStatus.parse(json)));
    }

    static void durable(Sync.DurableListener l, long throughSeq) {
        guarded(() -> l.onDurable(throughSeq));
    }

    static void refused(Sync.RefusedListener l, long firstSeq, long lastSeq, int code,
            String reason) {
        guarded(() -> l.onRefused(firstSeq, lastSeq, code, reason));
    }

    /** Runs a listener, marked as inside a callback; what it throws is reported, not propagated. */
    private static void guarded(Runnable listener) {
        int[] depth = DEPTH.get();
        depth[0]++;
        try {
            listener.run();
        } catch (Throwable t) {
            Cairn.listenerFailed(t);
        } finally {
            depth[0]--;
        }
    }

    static void log(Cairn.Logger l, int level, String message) {
        try {
            l.log(level, message);
        } catch (Throwable t) {
            // a logger that fails is dropped for this message only
        }
    }
}
