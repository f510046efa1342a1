package dev.cairn;

import java.util.List;

/**
 * Told after a transaction committed, once per collection whose documents it changed (a value, a
 * counter, a delete or a revival). Calls for one replica are serialized and in commit order; they
 * run on the thread that committed (the writer's thread: the UI thread for a write made there;
 * the sync thread for received ops), or on another thread of the replica that committed and is
 * delivering at that moment. Post to the UI thread from here; do not wait for it. A listener may
 * read and write the replica, but must not close it. An exception it throws goes to the default
 * uncaught-exception handler.
 */
public interface ChangeListener {
    /**
     * @param collection the collection
     * @param keys the changed documents' keys, sorted
     * @param local true for writes made through this replica, false for ops received (sync,
     *     import, a refused write undone)
     */
    void onChange(String collection, List<String> keys, boolean local);
}
