package dev.cairn;

/**
 * A native handle shared by calls from any thread. Closing refuses new calls at once (they throw
 * IllegalStateException, also those a callback makes while the close waits) and then waits for
 * the calls in progress, so the handle is freed only when nothing uses it.
 */
final class NativeHandle {
    private final String what;
    private long value;
    private int calls;
    private boolean closing;

    NativeHandle(String what, long value) {
        this.what = what;
        this.value = value;
    }

    /** The handle for one call; release() after it. */
    synchronized long acquire() {
        if (closing) throw new IllegalStateException(what + " is closed");
        calls++;
        return value;
    }

    synchronized void release() {
        if (--calls == 0) notifyAll();
    }

    /** Starts closing; false when it was already closing or closed. */
    synchronized boolean markClosing() {
        if (closing) return false;
        closing = true;
        return true;
    }

    /** After markClosing: waits for the calls in progress, returns the handle to free. */
    synchronized long awaitIdle() {
        boolean interrupted = false;
        while (calls > 0) {
            try {
                wait();
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) Thread.currentThread().interrupt();
        long v = value;
        value = 0;
        return v;
    }
}
