package dev.cairn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ReplicaTest {
    @TempDir Path dir;

    private Replica open(String name) {
        return Replica.open(dir.resolve(name).toString());
    }

    // Write receipts (docs/c-api.md "Write receipts"): the seq of each write's last op; a
    // refused write takes none.
    @Test
    void writesReturnTheirReceipts() {
        try (Replica r = open("receipts.db")) {
            Map<String, Object> two = new LinkedHashMap<>();
            two.put("a", 1);
            two.put("b", 2);
            assertEquals(2L, r.put("t", "k", two));
            assertEquals(3L, r.increment("t", "k", "n", 1));
            assertEquals(4L, r.putJson("t", "k", "{\"c\":3}"));
            assertThrows(CairnException.class, () -> r.putJson("t", "k", "{oops"));
            assertEquals(5L, r.delete("t", "k"));
            assertEquals(7L, r.write(new WriteBatch().set("t", "j", "a", 1L).delete("t", "k")));
        }
    }

    @Test
    void putGetTypedValuesAndReopen() {
        String id;
        byte[] raw = {0, 1, (byte) 0xff};
        try (Replica r = open("a.db")) {
            id = r.id();
            assertEquals(32, id.length());
            Map<String, Object> fields = new LinkedHashMap<>();
            fields.put("title", "héllo \uD83D\uDE00 wörld");  // beyond the BMP survives
            fields.put("n", 42);
            fields.put("ratio", 0.25);
            fields.put("done", true);
            fields.put("blob", raw);
            fields.put("nothing", null);
            fields.put("nul", "a\u0000b");
            r.put("tasks", "t1", fields);
            r.increment("tasks", "t1", "views", 3);
            r.increment("tasks", "t1", "views", -1);
            Map<String, Object> doc = r.get("tasks", "t1");
            assertEquals("héllo \uD83D\uDE00 wörld", doc.get("title"));
            assertEquals(42L, doc.get("n"));
            assertEquals(0.25, doc.get("ratio"));
            assertEquals(Boolean.TRUE, doc.get("done"));
            assertArrayEquals(raw, (byte[]) doc.get("blob"));
            assertTrue(doc.containsKey("nothing"));
            assertNull(doc.get("nothing"));
            assertEquals("a\u0000b", doc.get("nul"));
            assertEquals(2L, doc.get("views"));
            assertEquals(new ArrayList<>(doc.keySet()),
                    Arrays.asList("blob", "done", "n", "nothing", "nul", "ratio", "title", "views"));
            assertNull(r.get("tasks", "missing"));
            r.delete("tasks", "t1");
            assertNull(r.get("tasks", "t1"));
            assertNull(r.getJson("tasks", "t1"));
            r.putJson("notes", "n1", "{\"a\":1,\"b\":{\"$bytes\":\"AAE=\"}}");
        }
        try (Replica again = open("a.db")) {
            assertEquals(id, again.id());
            assertEquals("{\"a\":1,\"b\":{\"$bytes\":\"AAE=\"}}", again.getJson("notes", "n1"));
            assertEquals(64, again.digest().length());
            // 7 fields, 2 increments, a delete, 2 fields: 12 ops, none on a server yet.
            assertEquals(12L, again.status().get("pending_ops"));
        }
    }

    @Test
    void transactionsAreAtomic() {
        try (Replica r = open("a.db")) {
            WriteBatch b = new WriteBatch().set("tasks", "t1", "title", "one")
                    .increment("tasks", "t1", "n", 5).set("tasks", "t2", "title", "two");
            r.write(b);
            assertEquals(3, b.size());
            String before = r.digest();
            WriteBatch bad = new WriteBatch().set("tasks", "t3", "title", "three")
                    .set("tasks", "t3", "bad name", 1);
            CairnException e = assertThrows(CairnException.class, () -> r.write(bad));
            assertEquals(CairnException.EINVAL, e.code());
            assertEquals("EINVAL", e.codeName());
            assertTrue(e.getMessage().contains("bad name"), e.getMessage());
            assertEquals(before, r.digest());
            assertNull(r.get("tasks", "t3"));
            assertThrows(CairnException.class, () -> r.write(new WriteBatch()));
        }
    }

    @Test
    void queriesWithParameters() {
        try (Replica r = open("a.db")) {
            for (int i = 0; i < 5; i++) {
                Map<String, Object> f = new HashMap<>();
                f.put("n", i);
                f.put("name", "task " + i);
                r.put("tasks", "t" + i, f);
            }
            List<Map<String, Object>> rows =
                    r.query("SELECT key, n FROM tasks WHERE n >= ? AND name LIKE ? ORDER BY n", 3, "task%");
            assertEquals(2, rows.size());
            assertEquals("t3", rows.get(0).get("key"));
            assertEquals(4L, rows.get(1).get("n"));
            assertEquals(5L, r.query("SELECT count(*) AS c FROM tasks").get(0).get("c"));
            assertEquals(Collections.singletonList(Collections.singletonMap("v", null)),
                    r.query("SELECT ? AS v", (Object) null));
            CairnException ro = assertThrows(CairnException.class, () -> r.query("DELETE FROM tasks"));
            assertEquals(CairnException.EREADONLY, ro.code());
            assertThrows(CairnException.class, () -> r.query("SELECT ?", 1, 2));
            assertThrows(IllegalArgumentException.class, () -> r.query("SELECT ?", new Object()));
            assertEquals(5L, r.query("SELECT count(*) AS c FROM tasks").get(0).get("c"));
        }
    }

    @Test
    void badInputThrowsAndChangesNothing() {
        try (Replica r = open("a.db")) {
            r.put("tasks", "t1", Collections.singletonMap("x", 1));
            String before = r.digest();
            assertThrows(NullPointerException.class, () -> r.put(null, "k", Collections.singletonMap("x", 1)));
            assertThrows(NullPointerException.class, () -> r.get("tasks", null));
            assertThrows(IllegalArgumentException.class,
                    () -> r.put("tasks", "bad\uD800key", Collections.singletonMap("x", 1)));
            assertThrows(IllegalArgumentException.class,
                    () -> r.put("tasks", "k", Collections.singletonMap("x", "lone \uDC00")));
            assertThrows(IllegalArgumentException.class,
                    () -> r.put("tasks", "k", Collections.singletonMap("x", new Object())));
            assertThrows(IllegalArgumentException.class, () -> r.get("tasks", "a\u0000b"));
            assertEquals(CairnException.EINVAL,
                    assertThrows(CairnException.class, () -> r.putJson("tasks", "k", "{oops")).code());
            char[] big = new char[5 << 20];
            Arrays.fill(big, 'x');
            assertEquals(CairnException.EINVAL, assertThrows(CairnException.class,
                    () -> r.put("tasks", "k", Collections.singletonMap("x", new String(big)))).code());
            assertEquals(CairnException.EIO,
                    assertThrows(CairnException.class, () -> r.importFrom(dir.resolve("none").toString())).code());
            assertEquals(before, r.digest());
        }
        assertThrows(CairnException.class, () -> Replica.open(dir.resolve("absent.db").toString(), false, false));
    }

    @Test
    void closedHandleMisuseThrows() {
        Replica r = open("a.db");
        AutoCloseable sub = r.addChangeListener((c, k, l) -> { });
        r.close();
        r.close();  // idempotent
        assertThrows(IllegalStateException.class, r::id);
        assertThrows(IllegalStateException.class, () -> r.get("tasks", "t1"));
        assertThrows(IllegalStateException.class, () -> r.query("SELECT 1"));
        assertThrows(IllegalStateException.class, () -> r.write(new WriteBatch().delete("a", "b")));
        assertThrows(IllegalStateException.class, () -> r.addChangeListener((c, k, l) -> { }));
        assertDoesNotThrow(sub);
    }

    private static void assertDoesNotThrow(AutoCloseable c) {
        try {
            c.close();
        } catch (Exception e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void changeListenersSeeCommittedChanges() throws Exception {
        try (Replica a = open("a.db"); Replica b = open("b.db")) {
            List<String> seen = new CopyOnWriteArrayList<>();
            AutoCloseable sub = a.addChangeListener(
                    (coll, keys, local) -> seen.add((local ? "L " : "R ") + coll + ":" + String.join(",", keys)));
            a.write(new WriteBatch().set("tasks", "t2", "x", 1).set("notes", "n1", "x", 1).set("tasks", "t1", "x", 1));
            assertEquals(Arrays.asList("L notes:n1", "L tasks:t1,t2"), seen);
            seen.clear();
            assertThrows(CairnException.class, () -> a.write(new WriteBatch().set("tasks", "t9", "bad name", 1)));
            assertTrue(seen.isEmpty());
            b.put("notes", "from-b", Collections.singletonMap("x", 1));
            String file = dir.resolve("b.cex").toString();
            b.exportTo(file);
            assertEquals(1L, a.importFrom(file));
            assertEquals(Collections.singletonList("R notes:from-b"), seen);
            sub.close();
            sub.close();
            seen.clear();
            a.put("tasks", "t3", Collections.singletonMap("x", 3));
            assertTrue(seen.isEmpty());
        }
    }

    @Test
    void listenerThatThrowsOrWritesOrClosesIsSafe() throws Exception {
        try (Replica r = open("a.db")) {
            List<String> seen = new CopyOnWriteArrayList<>();
            Thread.UncaughtExceptionHandler old = Thread.getDefaultUncaughtExceptionHandler();
            List<Throwable> reported = new CopyOnWriteArrayList<>();
            Thread.setDefaultUncaughtExceptionHandler((t, e) -> reported.add(e));
            try {
                r.addChangeListener((coll, keys, local) -> {
                    seen.add(coll);
                    if (coll.equals("tasks")) {
                        r.put("audit", keys.get(0), Collections.singletonMap("seen", true));
                        assertThrows(IllegalStateException.class, r::close);
                        throw new RuntimeException("listener failure");
                    }
                });
                r.put("tasks", "t1", Collections.singletonMap("x", 1));
            } finally {
                Thread.setDefaultUncaughtExceptionHandler(old);
            }
            assertEquals(Arrays.asList("tasks", "audit"), seen);
            assertEquals(1, reported.size());
            assertEquals("listener failure", reported.get(0).getMessage());
            assertEquals(Boolean.TRUE, r.get("audit", "t1").get("seen"));
        }
    }

    @Test
    void severalThreadsAtOnce() throws Exception {
        try (Replica r = open("a.db")) {
            AtomicInteger changes = new AtomicInteger();
            AtomicInteger inFlight = new AtomicInteger();
            AtomicInteger overlaps = new AtomicInteger();
            r.addChangeListener((coll, keys, local) -> {
                if (inFlight.incrementAndGet() != 1) overlaps.incrementAndGet();
                changes.addAndGet(keys.size());
                inFlight.decrementAndGet();
            });
            int threads = 4, each = 50;
            CountDownLatch go = new CountDownLatch(1);
            List<Thread> ts = new ArrayList<>();
            List<Throwable> errors = new CopyOnWriteArrayList<>();
            for (int t = 0; t < threads; t++) {
                final int id = t;
                Thread th = new Thread(() -> {
                    try {
                        go.await();
                        for (int i = 0; i < each; i++) {
                            r.increment("stats", "s", "hits", 1);
                            r.put("tasks", id + "-" + i, Collections.singletonMap("i", i));
                            r.query("SELECT count(*) FROM tasks");
                        }
                    } catch (Throwable e) {
                        errors.add(e);
                    }
                });
                th.start();
                ts.add(th);
            }
            go.countDown();
            for (Thread th : ts) th.join();
            assertTrue(errors.isEmpty(), errors.toString());
            assertEquals((long) threads * each, r.get("stats", "s").get("hits"));
            assertEquals((long) threads * each, r.query("SELECT count(*) AS c FROM tasks").get(0).get("c"));
            assertEquals(2 * threads * each, changes.get());
            assertEquals(0, overlaps.get());
        }
    }

    @Test
    void closeWhileOtherThreadsWorkIsClean() throws Exception {
        Replica r = open("a.db");
        List<Throwable> unexpected = new CopyOnWriteArrayList<>();
        List<Thread> ts = new ArrayList<>();
        for (int t = 0; t < 3; t++) {
            Thread th = new Thread(() -> {
                for (int i = 0; i < 10000; i++) {
                    try {
                        r.put("tasks", "k" + i, Collections.singletonMap("i", i));
                    } catch (IllegalStateException closed) {
                        return;
                    } catch (Throwable e) {
                        unexpected.add(e);
                        return;
                    }
                }
            });
            th.start();
            ts.add(th);
        }
        Thread.sleep(50);
        r.close();
        for (Thread th : ts) th.join();
        assertTrue(unexpected.isEmpty(), unexpected.toString());
        try (Replica again = open("a.db")) {
            assertFalse(again.query("SELECT count(*) AS c FROM tasks").isEmpty());
        }
    }

    @Test
    void versionAndLogger() {
        assertNotNull(Cairn.version());
        assertThrows(IllegalArgumentException.class, () -> Cairn.setLogger(9, (l, m) -> { }));
        Cairn.setLogger(Cairn.LOG_INFO, (l, m) -> { });
        Cairn.setLogger(Cairn.LOG_INFO, null);
    }

    @Test
    void telemetryStreamsAppendWithQuotasAndPolicies() {
        try (Replica r = open("streams.db")) {
            Map<String, Object> reading = new LinkedHashMap<>();
            reading.put("temp", 21.5);
            reading.put("dev", "s1");
            reading.put("ok", true);
            AppendResult one = r.append("climate", reading);
            assertEquals(1L, one.firstSeq);
            assertEquals(2L, r.appendJson("climate", "{\"temp\":22}").lastSeq);
            List<Map<String, Object>> batch = new ArrayList<>();
            for (int i = 0; i < 5; i++) batch.add(Collections.singletonMap("n", i));
            AppendResult five = r.appendAll("climate", batch, new long[] {1, 2, 3, 4, 5});
            assertEquals(3L, five.firstSeq);
            assertEquals(7L, five.lastSeq);
            Map<String, Object> climate = r.streams().get("climate");
            assertEquals(7L, climate.get("records"));
            assertEquals("reject", climate.get("policy"));
            assertEquals(7L, ((Map<?, ?>) ((Map<?, ?>) r.status().get("streams")).get("climate"))
                    .get("records"));

            // Full: refused with EFULL (reject) or the oldest dropped and counted.
            r.configureStream("tiny", new StreamOptions().maxBytes(10));
            r.appendJson("tiny", "{\"v\":1}");
            r.appendJson("tiny", "{\"v\":2}");
            CairnException full = assertThrows(CairnException.class,
                    () -> r.appendJson("tiny", "{\"v\":3}"));
            assertEquals(CairnException.EFULL, full.code());
            assertEquals("EFULL", full.codeName());
            assertEquals(1L, r.streams().get("tiny").get("rejected"));
            r.configureStream("tiny", new StreamOptions().maxBytes(10).dropOldest(true).priority(4));
            assertEquals(1L, r.appendJson("tiny", "{\"v\":3}").dropped);
            Map<String, Object> tiny = r.streams().get("tiny");
            assertEquals(2L, tiny.get("records"));
            assertEquals(1L, tiny.get("dropped"));
            assertEquals(4L, tiny.get("priority"));

            // Bad input: nothing appended.
            assertEquals(CairnException.EINVAL, assertThrows(CairnException.class,
                    () -> r.append("climate", Collections.singletonMap("seq", 1))).code());
            assertEquals(CairnException.EINVAL, assertThrows(CairnException.class,
                    () -> r.append("bad name", reading)).code());
            assertThrows(IllegalArgumentException.class,
                    () -> r.append("climate", Collections.singletonMap("x", new Object())));
            assertThrows(IllegalArgumentException.class,
                    () -> r.appendAll("climate", batch, new long[] {1}));
            assertThrows(IllegalArgumentException.class,
                    () -> r.append("climate", Collections.singletonMap("t", Double.NaN)));
            assertThrows(IllegalArgumentException.class, () -> new StreamOptions().maxBytes(-1));
            assertEquals(7L, r.streams().get("climate").get("records"));
        }
    }
}
