package dev.cairn;

/**
 * An error reported by the Cairn engine. {@link #code()} is the engine's negative code (the C
 * API's {@code CAIRN_E*}), {@link #codeName()} its name ("EINVAL", "ENOTFOUND", ...). Unchecked:
 * misuse (a closed handle, a null argument) throws the usual Java exceptions instead.
 */
public class CairnException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public static final int EINVAL = -2;
    public static final int ENOTFOUND = -3;
    public static final int ECORRUPT = -4;
    public static final int EVERSION = -5;
    public static final int EBUSY = -6;
    public static final int EIO = -9;
    public static final int ENOTREPLICA = -10;
    public static final int EREADONLY = -11;
    public static final int EPERM = -13;
    public static final int ENETWORK = -14;
    public static final int ETIMEDOUT = -15;
    public static final int ECLOCK = -16;
    public static final int EFULL = -17;
    public static final int EFORKED = -18;

    private final int code;
    private final String codeName;

    /** Called by the native library. */
    public CairnException(int code, String codeName, String message) {
        super(message);
        this.code = code;
        this.codeName = codeName;
    }

    public int code() {
        return code;
    }

    public String codeName() {
        return codeName;
    }
}
