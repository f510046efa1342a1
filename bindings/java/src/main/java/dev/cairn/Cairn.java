package dev.cairn;

/**
 * Loads the native library and holds process-wide settings. The library is {@code cairn_jni}:
 * found through {@code System.loadLibrary} (an app's jniLibs, {@code java.library.path}), or at
 * the path given by the system property {@code cairn.lib.path}.
 */
public final class Cairn {
    /** Receives the engine's log messages; called on the thread that logs (often a sync thread). */
    public interface Logger {
        void log(int level, String message);
    }

    public static final int LOG_DEBUG = 0;
    public static final int LOG_INFO = 1;
    public static final int LOG_WARN = 2;
    public static final int LOG_ERROR = 3;

    private static boolean loaded;

    private Cairn() {}

    static synchronized void load() {
        if (loaded) return;
        String path = System.getProperty("cairn.lib.path");
        if (path != null && !path.isEmpty()) {
            System.load(path);
        } else {
            System.loadLibrary("cairn_jni");
        }
        loaded = true;
    }

    /** The engine's version, "MAJOR.MINOR.PATCH". */
    public static String version() {
        load();
        return nativeVersion();
    }

    /** The name of an engine error code ("EINVAL" for {@link CairnException#EINVAL}); "EUNKNOWN" for a number that is none. */
    public static String codeName(int code) {
        load();
        return nativeCodeName(code);
    }

    /**
     * Sends the engine's messages at {@code minLevel} or above to {@code logger} (null: none, the
     * default). An exception the logger throws is dropped.
     */
    public static void setLogger(int minLevel, Logger logger) {
        load();
        if (minLevel < LOG_DEBUG || minLevel > LOG_ERROR) {
            throw new IllegalArgumentException("minLevel must be LOG_DEBUG .. LOG_ERROR");
        }
        nativeSetLogger(minLevel, logger);
    }

    /** Reports an exception a listener threw (it cannot reach the engine's thread). */
    static void listenerFailed(Throwable t) {
        Thread.UncaughtExceptionHandler h = Thread.getDefaultUncaughtExceptionHandler();
        if (h != null && !(t instanceof Error)) {
            h.uncaughtException(Thread.currentThread(), t);
        } else {
            t.printStackTrace();
        }
    }

    private static native String nativeVersion();

    private static native String nativeCodeName(int code);

    private static native void nativeSetLogger(int minLevel, Logger logger);
}
