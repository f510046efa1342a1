// A small app on Cairn's Java API, as an Android app would use it (without the UI): it writes
// while offline, reacts to changes, then syncs with a cairn-server and sees another device's
// edits arrive through live sync.
//
//   java -Dcairn.lib.path=.../libcairn_jni.so -cp cairn.jar:todo_app.jar TodoApp \
//        DB_FILE HOST:PORT CA_FILE TOKEN [wait-for-KEY]
import dev.cairn.Replica;
import dev.cairn.Sync;
import dev.cairn.SyncStatus;
import dev.cairn.WriteBatch;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public final class TodoApp {
    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: TodoApp DB_FILE HOST:PORT CA_FILE TOKEN [wait-for-KEY]");
            System.exit(2);
        }
        String waitFor = args.length > 4 ? args[4] : null;
        CountDownLatch arrived = new CountDownLatch(1);
        try (Replica db = Replica.open(args[0])) {
            // React to changes: here the UI would refresh the list.
            AutoCloseable sub = db.addChangeListener((collection, keys, local) -> {
                System.out.println((local ? "changed here: " : "synced in:    ") + collection + " " + keys);
                if (waitFor != null && !local && keys.contains(waitFor)) arrived.countDown();
            });
            // Offline: a transaction of two writes, and a counter.
            String me = db.id().substring(0, 6);
            db.write(new WriteBatch()
                    .set("todos", "from-java", "title", "written by the Java app " + me)
                    .set("todos", "from-java", "done", false));
            db.increment("stats", "app", "opens", 1);
            System.out.println("pending before sync: " + db.status().get("pending_ops"));

            Sync.Options options = new Sync.Options(args[1]).caFile(args[2]).serverName("localhost").token(args[3]);
            try (Sync sync = new Sync(db, options)) {
                sync.setStatusListener(s -> System.out.println("sync status: " + s.state
                        + " (pending " + s.pendingOps + ")"));
                sync.start();  // live sync: pushes now, then keeps pulling and pushing
                if (waitFor != null && !arrived.await(30, TimeUnit.SECONDS)) {
                    System.err.println("no " + waitFor + " within 30 s");
                    System.exit(1);
                }
                for (int i = 0; i < 300 && sync.status().pendingOps > 0; i++) Thread.sleep(100);
                SyncStatus st = sync.status();
                System.out.println("after sync: " + st.state + ", pending " + st.pendingOps);
                sync.stop();
            }
            sub.close();
            for (Map<String, Object> row : db.query("SELECT key, title FROM todos ORDER BY key")) {
                System.out.println("todo " + row.get("key") + ": " + row.get("title"));
            }
            System.out.println("digest " + db.digest());
        }
    }
}
