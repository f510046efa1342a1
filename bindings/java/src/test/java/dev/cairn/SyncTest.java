package dev.cairn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Real sync through a cairn-server over TLS that the test starts. */
class SyncTest {
    @TempDir Path dir;

    @Test
    void offlineWritesConvergeAndLiveSyncNotifies() throws Exception {
        try (TestServer server = new TestServer(dir);
                Replica a = Replica.open(dir.resolve("a.db").toString());
                Replica b = Replica.open(dir.resolve("b.db").toString())) {
            Sync sa = new Sync(a, server.options(server.token("alice", null)));
            Sync sb = new Sync(b, server.options(server.token("bob", null)));
            AtomicLong durable = new AtomicLong();
            sa.setDurableListener(durable::set);
            List<String> logged = new CopyOnWriteArrayList<>();
            Cairn.setLogger(Cairn.LOG_INFO, (level, message) -> logged.add(message));
            // Offline, with a conflict on a counter and a field.
            a.put("tasks", "t1", Collections.singletonMap("title", "from a"));
            a.increment("stats", "s", "hits", 5);
            b.increment("stats", "s", "hits", 7);
            assertEquals(SyncStatus.State.OFFLINE, sa.status().state);
            assertEquals(2, sa.status().pendingOps);
            sa.syncOnce(20000);
            assertEquals(2L, durable.get());
            assertTrue(logged.stream().anyMatch(m -> m.startsWith("sync: connected to")), logged.toString());
            Cairn.setLogger(Cairn.LOG_INFO, null);
            // b's telemetry goes up in the same exchange and leaves b.
            b.appendJson("climate", "{\"temp\":20.5}");
            b.appendJson("climate", "{\"temp\":21}");
            assertEquals(2, sb.status().pendingRecords);
            sb.syncOnce(20000);
            assertEquals(0, sb.status().pendingRecords);
            assertEquals(2, sb.status().recordsUploaded);
            assertEquals(2L, b.streams().get("climate").get("uploaded"));
            sa.syncOnce(20000);
            assertEquals(a.digest(), b.digest());
            assertEquals(12L, b.get("stats", "s").get("hits"));
            assertEquals(0, sa.status().pendingOps);
            assertEquals(null, sa.status().lastError);

            // Live sync: b hears of a's write through its change listener, on the sync thread.
            CountDownLatch heard = new CountDownLatch(1);
            List<String> threads = new CopyOnWriteArrayList<>();
            List<SyncStatus.State> states = new CopyOnWriteArrayList<>();
            sb.setStatusListener(s -> states.add(s.state));
            b.addChangeListener((coll, keys, local) -> {
                if (!local && coll.equals("tasks") && keys.contains("t2")) {
                    threads.add(Thread.currentThread().getName());
                    heard.countDown();
                }
            });
            sb.start();
            assertThrows(CairnException.class, sb::start);
            a.put("tasks", "t2", Collections.singletonMap("title", "live"));
            sa.syncOnce(20000);
            assertTrue(heard.await(20, TimeUnit.SECONDS), "b never heard of t2");
            assertEquals("live", b.get("tasks", "t2").get("title"));
            assertTrue(states.contains(SyncStatus.State.CONNECTING), states.toString());
            // A renewed token (valid for two days, not one): the live session takes it and goes on.
            Long firstExpiry = sb.status().tokenExpiresMs;
            assertTrue(firstExpiry != null && firstExpiry > System.currentTimeMillis(), "" + firstExpiry);
            sb.setToken(server.token("bob", null, 2 * 86400));
            for (int i = 0; i < 2000 && firstExpiry.equals(sb.status().tokenExpiresMs); i++) Thread.sleep(10);
            assertTrue(sb.status().tokenExpiresMs > firstExpiry + 80000 * 1000L, sb.status().toString());
            a.put("tasks", "t3", Collections.singletonMap("title", "after renewal"));
            sa.syncOnce(20000);
            for (int i = 0; i < 2000 && b.get("tasks", "t3") == null; i++) Thread.sleep(10);
            assertEquals("after renewal", b.get("tasks", "t3").get("title"));
            assertEquals(0, sb.status().reconnects);
            assertThrows(NullPointerException.class, () -> sb.setToken(null));
            sb.networkChanged();
            sb.stop();
            sb.stop();
            sa.close();
            sb.close();
            assertThrows(IllegalStateException.class, sa::status);
        }
    }

    @Test
    void callbacksMayCallTheSyncWhileItCloses() throws Exception {
        try (TestServer server = new TestServer(dir)) {
            Replica r = Replica.open(dir.resolve("r.db").toString());
            Sync s = new Sync(r, server.options(server.token("x", null)));
            List<SyncStatus.State> seen = new CopyOnWriteArrayList<>();
            List<Throwable> failures = new CopyOnWriteArrayList<>();
            s.setStatusListener(st -> {
                try {
                    seen.add(s.status().state);  // calls back into the sync from its own thread
                } catch (IllegalStateException closing) {
                    seen.add(null);
                } catch (Throwable t) {
                    failures.add(t);
                }
            });
            s.start();
            r.put("notes", "n1", Collections.singletonMap("x", 1));
            for (int i = 0; i < 500 && s.status().pendingOps > 0; i++) Thread.sleep(10);
            assertTimeoutPreemptively(java.time.Duration.ofSeconds(20), s::close);
            assertTrue(failures.isEmpty(), failures.toString());
            assertTrue(seen.size() >= 2, seen.toString());
            // Closing the replica closes a live sync made for it, then refuses calls on both.
            Sync live = new Sync(r, server.options(server.token("x", null)));
            live.start();
            r.close();
            assertThrows(IllegalStateException.class, live::status);
            assertThrows(IllegalStateException.class, () -> r.get("notes", "n1"));
        }
    }

    @Test
    void refusedWritesAreReportedAndUndone() throws Exception {
        try (TestServer server = new TestServer(dir);
                Replica r = Replica.open(dir.resolve("r.db").toString())) {
            try (Sync s = new Sync(r, server.options(server.token("dave", "notes")))) {
                // The refusal is told with the write's receipt, before the watermark that
                // covers it (docs/c-api.md "Write receipts").
                List<String> told = new CopyOnWriteArrayList<>();
                s.setRefusedListener((first, last, code, reason) ->
                        told.add("refused " + first + ".." + last + " " + Cairn.codeName(code)));
                s.setDurableListener(through -> told.add("durable " + through));
                assertEquals(1L, r.put("notes", "n1", Collections.singletonMap("x", 1)));
                // dave may not write tasks
                assertEquals(2L, r.put("tasks", "t1", Collections.singletonMap("x", 1)));
                s.syncOnce(20000);
                assertEquals(1, s.status().transactionsRefused);
                assertEquals(Arrays.asList("refused 2..2 EPERM", "durable 1"), told);
            }
            assertEquals(null, r.get("tasks", "t1"));
            List<Map<String, Object>> rejected = r.rejected();
            assertEquals(1, rejected.size());
            assertEquals("EPERM", rejected.get(0).get("error"));
            assertEquals(1L, r.get("notes", "n1").get("x"));
        }
    }

    @Test
    void wrongServerOrCaFailsCleanly() throws Exception {
        try (TestServer server = new TestServer(dir)) {
            Replica r = Replica.open(dir.resolve("r.db").toString());
            r.put("notes", "n1", Collections.singletonMap("x", 1));
            try (Sync bad = new Sync(r, server.options(server.token("x", null))
                    .caFile(dir.resolve("other_ca.pem").toString()))) {
                CairnException e = assertThrows(CairnException.class, () -> bad.syncOnce(20000));
                assertTrue(e.getMessage().toLowerCase().contains("certificate")
                        || e.codeName().equals("ENETWORK"), e.getMessage());
                assertTrue(bad.status().lastError != null);
            }
            assertThrows(CairnException.class, () -> new Sync(r, new Sync.Options("no-port")));
            assertEquals(1L, r.status().get("pending_ops"));
            // Closing the replica closes its syncs.
            Sync left = new Sync(r, server.options(server.token("x", null)));
            r.close();
            assertThrows(IllegalStateException.class, left::status);
        }
    }
}
