package dev.cairn;

/** What an append did: the seqs given to the records stored, and how many were dropped. */
public final class AppendResult {
    /** The first and last seq of the stored records (both 0 when none was stored). */
    public final long firstSeq;
    public final long lastSeq;
    /** Records dropped to make room (a drop-oldest stream). */
    public final long dropped;

    AppendResult(long[] r) {
        this.firstSeq = r[0];
        this.lastSeq = r[1];
        this.dropped = r[2];
    }
}
