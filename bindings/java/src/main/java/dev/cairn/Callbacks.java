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
        int[] depth = DEPTH.get();
        depth[0]++;
        try {
            l.onChange(collection, Collections.unmodifiableList(Arrays.asList(keys)), local);
        } catch (Throwable t) {
            Cairn.listenerFailed(t);
        } finally {
            depth[0]--;
        }
    }

    static void status(Sync.StatusListener l, String json) {
        int[] depth = DEPTH.get();
        depth[0]++;
        try {
            l.onStatus(SyncStatus.parse(json));
        } catch (Throwable t) {
            Cairn.listenerFailed(t);
        } finally {
            depth[0]--;
        }
    }

    static void durable(Sync.DurableListener l, long throughSeq) {
        int[] depth = DEPTH.get();
        depth[0]++;
        try {
            l.onDurable(throughSeq);
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
