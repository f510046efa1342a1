import Foundation
import XCTest

@testable import Cairn

/// Real sync through a cairn-server over TLS that the test starts.
final class SyncTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try makeTempDir() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func testOfflineWritesConvergeAndLiveSyncNotifies() async throws {
        let server = try TestServer(dir: dir)
        let a = try Replica(path: dir.appendingPathComponent("a.db").path)
        let b = try Replica(path: dir.appendingPathComponent("b.db").path)
        let sa = try Sync(replica: a, options: server.options(token: try server.token("alice")))
        let sb = try Sync(replica: b, options: server.options(token: try server.token("bob")))
        let durable = Counter()
        try sa.onDurable { _ in durable.add() }
        try a.put("tasks", "t1", ["title": "from a"])
        try a.increment("stats", "s", "hits", by: 5)
        try b.increment("stats", "s", "hits", by: 7)
        XCTAssertEqual(try sa.status().state, .offline)
        XCTAssertEqual(try sa.status().pendingOps, 2)
        try sa.syncOnce(timeoutMs: 20000)
        XCTAssertEqual(durable.value, 1)
        // b's telemetry goes up in the same exchange and leaves b.
        try b.append("climate", ["temp": 20.5])
        try b.append("climate", ["temp": 21.0])
        XCTAssertEqual(try sb.status().pendingRecords, 2)
        try sb.syncOnce(timeoutMs: 20000)
        XCTAssertEqual(try sb.status().pendingRecords, 0)
        XCTAssertEqual(try sb.status().recordsUploaded, 2)
        XCTAssertEqual(try b.streams()["climate"]?["uploaded"] as? Int, 2)
        try sa.syncOnce(timeoutMs: 20000)
        XCTAssertEqual(try a.digest(), try b.digest())
        XCTAssertEqual(try b.get("stats", "s")?["hits"], .int(12))
        XCTAssertEqual(try sa.status().pendingOps, 0)
        XCTAssertNil(try sa.status().lastError)

        // Live sync: b's change stream hears of a's write.
        let states = Recorder<SyncStatus.State>()
        try sb.onStatus { states.add($0.state) }
        let changes = try b.changes()
        try sb.start()
        XCTAssertThrowsError(try sb.start()) { e in XCTAssertEqual((e as? CairnError)?.code, CairnError.busy) }
        try a.put("tasks", "t2", ["title": "live"])
        try sa.syncOnce(timeoutMs: 20000)
        var heard = false
        for await c in changes where !c.local && c.keys.contains("t2") {
            heard = true
            break
        }
        XCTAssertTrue(heard)
        XCTAssertEqual(try b.get("tasks", "t2")?["title"], "live")
        XCTAssertTrue(states.values.contains(.connecting), "\(states.values)")
        // A renewed token (two days, not one): the live session takes it and goes on.
        let firstExpiry = try XCTUnwrap(try sb.status().tokenExpiresMs)
        try sb.setToken(try server.token("bob", ttlSeconds: 2 * 86400))
        for _ in 0..<2000 where try sb.status().tokenExpiresMs == firstExpiry {
            Thread.sleep(forTimeInterval: 0.01)
        }
        XCTAssertGreaterThan(try XCTUnwrap(try sb.status().tokenExpiresMs), firstExpiry + 80000 * 1000)
        try a.put("tasks", "t3", ["title": "after renewal"])
        try sa.syncOnce(timeoutMs: 20000)
        for _ in 0..<2000 where try b.get("tasks", "t3") == nil {
            Thread.sleep(forTimeInterval: 0.01)
        }
        XCTAssertEqual(try b.get("tasks", "t3")?["title"], "after renewal")
        XCTAssertEqual(try sb.status().reconnects, 0)
        try sb.networkChanged()
        try sb.stop()
        sa.close()
        XCTAssertThrowsError(try sa.status())
        sb.close()
    }

    func testHandlersMayCallTheSyncAndClosingTheReplicaClosesIt() throws {
        let server = try TestServer(dir: dir)
        let r = try Replica(path: dir.appendingPathComponent("r.db").path)
        let s = try Sync(replica: r, options: server.options(token: try server.token("x")))
        let seen = Recorder<String>()
        try s.onStatus { _ in
            // Calls back into the sync from its own thread, also while it closes.
            if let st = try? s.status() { seen.add(st.state.rawValue) } else { seen.add("closed") }
        }
        try s.start()
        try r.put("notes", "n1", ["x": 1])
        for _ in 0..<500 where try s.status().pendingOps > 0 { Thread.sleep(forTimeInterval: 0.01) }
        r.close()  // closes the live sync first
        XCTAssertThrowsError(try s.status()) { e in XCTAssertEqual((e as? CairnError)?.code, CairnError.closed) }
        XCTAssertThrowsError(try r.get("notes", "n1"))
        XCTAssertGreaterThanOrEqual(seen.values.count, 2, "\(seen.values)")
    }

    func testRefusedWritesAreReportedAndUndone() throws {
        let server = try TestServer(dir: dir)
        let r = try Replica(path: dir.appendingPathComponent("r.db").path)
        let s = try Sync(replica: r, options: server.options(token: try server.token("dave", write: "notes")))
        // The refusal is told with the write's receipt, before the watermark that covers it
        // (docs/c-api.md "Write receipts").
        let told = Recorder<String>()
        try s.onRefused { told.add("refused \($0.firstSeq)..\($0.lastSeq) \($0.code == CairnError.permission)") }
        try s.onDurable { told.add("durable \($0)") }
        XCTAssertEqual(try r.put("notes", "n1", ["x": 1]), 1)
        XCTAssertEqual(try r.put("tasks", "t1", ["x": 1]), 2)  // dave may not write tasks
        try s.syncOnce(timeoutMs: 20000)
        XCTAssertEqual(try s.status().txnsRefused, 1)
        XCTAssertEqual(told.values, ["refused 2..2 true", "durable 1"])
        XCTAssertNil(try r.get("tasks", "t1"))
        let rejected = try r.rejected()
        XCTAssertEqual(rejected.count, 1)
        XCTAssertEqual(rejected.first?["error"] as? String, "EPERM")
        XCTAssertEqual(try r.get("notes", "n1")?["x"], .int(1))
    }

    func testWrongCaFailsCleanly() throws {
        let server = try TestServer(dir: dir)
        let r = try Replica(path: dir.appendingPathComponent("r.db").path)
        try r.put("notes", "n1", ["x": 1])
        var o = server.options(token: try server.token("x"))
        o.caFile = dir.appendingPathComponent("other_ca.pem").path
        let bad = try Sync(replica: r, options: o)
        XCTAssertThrowsError(try bad.syncOnce(timeoutMs: 20000)) { e in
            XCTAssertEqual((e as? CairnError)?.code, CairnError.network)
        }
        XCTAssertNotNil(try bad.status().lastError)
        XCTAssertThrowsError(try Sync(replica: r, options: Sync.Options(server: "no-port")))
        XCTAssertEqual(try r.status()["pending_ops"] as? Int, 1)
    }
}

final class Recorder<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    func add(_ x: T) { lock.lock(); items.append(x); lock.unlock() }
    var values: [T] { lock.lock(); defer { lock.unlock() }; return items }
}
