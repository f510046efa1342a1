import Foundation
import XCTest

@testable import Cairn

final class ReplicaTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try makeTempDir() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    // Write receipts (docs/c-api.md "Write receipts"): the seq of each write's last op; a
    // refused write takes none.
    func testWritesReturnTheirReceipts() throws {
        let r = try Replica(path: path("receipts.db"))
        XCTAssertEqual(try r.put("t", "k", ["a": 1, "b": 2]), 2)
        XCTAssertEqual(try r.increment("t", "k", "n", by: 1), 3)
        XCTAssertThrowsError(try r.put("bad name", "k", ["a": 1]))
        XCTAssertEqual(try r.delete("t", "k"), 4)
        XCTAssertEqual(try r.write(WriteBatch().set("t", "j", "a", 1).delete("t", "k")), 6)
    }

    func testPutGetTypedValuesAndReopen() throws {
        var id = ""
        do {
            let r = try Replica(path: path("a.db"))
            id = try r.id
            XCTAssertEqual(id.count, 32)
            try r.put("tasks", "t1", [
                "title": "héllo 😀 wörld", "n": 42, "ratio": 0.25, "whole": 1.0, "done": true,
                "blob": .bytes([0, 1, 255]), "nothing": nil, "nul": "a\u{0}b",
                "min": .int(Int64.min), "max": .int(Int64.max),
            ])
            try r.increment("tasks", "t1", "views", by: 3)
            try r.increment("tasks", "t1", "views", by: -1)
            let doc = try XCTUnwrap(try r.get("tasks", "t1"))
            XCTAssertEqual(doc["title"], "héllo 😀 wörld")
            XCTAssertEqual(doc["n"], .int(42))
            XCTAssertEqual(doc["ratio"], .double(0.25))
            XCTAssertEqual(doc["whole"], .double(1.0))  // a double stays a double
            XCTAssertEqual(doc["done"], .bool(true))
            XCTAssertEqual(doc["blob"], .bytes([0, 1, 255]))
            XCTAssertEqual(doc["nothing"], .null)
            XCTAssertEqual(doc["nul"], .string("a\u{0}b"))
            XCTAssertEqual(doc["min"], .int(Int64.min))
            XCTAssertEqual(doc["max"], .int(Int64.max))
            XCTAssertEqual(doc["views"], .int(2))
            XCTAssertNil(try r.get("tasks", "missing"))
            try r.delete("tasks", "t1")
            XCTAssertNil(try r.get("tasks", "t1"))
            try r.put("notes", "n1", ["a": 1])
            r.close()
        }
        let again = try Replica(path: path("a.db"))
        XCTAssertEqual(try again.id, id)
        XCTAssertEqual(try again.get("notes", "n1"), ["a": .int(1)])
        XCTAssertEqual(try again.digest().count, 64)
        XCTAssertEqual(try again.status()["pending_ops"] as? Int, 14)  // 10 fields, 2 increments, a delete, 1 field
    }

    func testTransactionsAreAtomicAndErrorsCarryTheCode() throws {
        let r = try Replica(path: path("a.db"))
        let b = WriteBatch()
        b.set("tasks", "t1", "title", "one").increment("tasks", "t1", "n", by: 5).set("tasks", "t2", "title", "two")
        try r.write(b)
        let before = try r.digest()
        let bad = WriteBatch()
        bad.set("tasks", "t3", "title", "three").set("tasks", "t3", "bad name", 1)
        XCTAssertThrowsError(try r.write(bad)) { e in
            let err = e as? CairnError
            XCTAssertEqual(err?.code, CairnError.invalidArgument)
            XCTAssertTrue(err?.message.contains("bad name") ?? false, "\(String(describing: err))")
        }
        XCTAssertEqual(try r.digest(), before)
        XCTAssertNil(try r.get("tasks", "t3"))
        XCTAssertThrowsError(try r.write(WriteBatch()))
        XCTAssertThrowsError(try r.put("bad name", "k", ["x": 1]))
        XCTAssertThrowsError(try r.put("tasks", "", ["x": 1]))
        XCTAssertThrowsError(try r.put("tasks", "k", ["x": .string(String(repeating: "x", count: 5 << 20))])) { e in
            XCTAssertEqual((e as? CairnError)?.code, CairnError.invalidArgument)
        }
        XCTAssertThrowsError(try r.importFile(path("none.cex"))) { e in
            XCTAssertEqual((e as? CairnError)?.code, CairnError.io)
        }
        XCTAssertEqual(try r.digest(), before)
        XCTAssertThrowsError(try Replica(path: path("absent.db"), create: false))
    }

    func testQueriesWithParameters() throws {
        let r = try Replica(path: path("a.db"))
        for i in 0..<5 { try r.put("tasks", "t\(i)", ["n": .int(Int64(i)), "name": .string("task \(i)")]) }
        let rows = try r.query("SELECT key, n FROM tasks WHERE n >= ? AND name LIKE ? ORDER BY n", [3, "task%"])
        XCTAssertEqual(rows, [["key": "t3", "n": 3], ["key": "t4", "n": 4]])
        XCTAssertEqual(try r.query("SELECT ? AS b", [.bytes([7, 8])]), [["b": .bytes([7, 8])]])
        XCTAssertThrowsError(try r.query("DELETE FROM tasks")) { e in
            XCTAssertEqual((e as? CairnError)?.code, CairnError.readOnly)
        }
        XCTAssertThrowsError(try r.query("SELECT ?", [1, 2]))
        XCTAssertEqual(try r.query("SELECT count(*) AS c FROM tasks"), [["c": 5]])
    }

    func testClosedHandleThrows() throws {
        let r = try Replica(path: path("a.db"))
        r.close()
        r.close()
        XCTAssertThrowsError(try r.id) { e in XCTAssertEqual((e as? CairnError)?.code, CairnError.closed) }
        XCTAssertThrowsError(try r.get("tasks", "t1"))
        XCTAssertThrowsError(try r.query("SELECT 1"))
        XCTAssertThrowsError(try r.changes())
    }

    func testChangesStream() async throws {
        let a = try Replica(path: path("a.db"))
        let b = try Replica(path: path("b.db"))
        let stream = try a.changes()
        let b1 = WriteBatch()
        b1.set("tasks", "t2", "x", 1).set("notes", "n1", "x", 1).set("tasks", "t1", "x", 1)
        try a.write(b1)
        XCTAssertThrowsError(try a.put("tasks", "t9", ["bad name": 1]))
        try b.put("notes", "from-b", ["x": 1])
        try b.export(to: path("b.cex"))
        XCTAssertEqual(try a.importFile(path("b.cex")), 1)
        var seen: [Change] = []
        for await c in stream {
            seen.append(c)
            if seen.count == 3 { break }
        }
        XCTAssertEqual(seen, [
            Change(collection: "notes", keys: ["n1"], local: true),
            Change(collection: "tasks", keys: ["t1", "t2"], local: true),
            Change(collection: "notes", keys: ["from-b"], local: false),
        ])
        // Closing the replica ends a stream still open.
        let open = try a.changes()
        a.close()
        var after = 0
        for await _ in open { after += 1 }
        XCTAssertEqual(after, 0)
    }

    func testSeveralThreadsAtOnce() throws {
        let r = try Replica(path: path("a.db"))
        let failures = Counter()
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            for i in 0..<50 {
                do {
                    try r.increment("stats", "s", "hits", by: 1)
                    try r.put("tasks", "\(t)-\(i)", ["i": .int(Int64(i))])
                    _ = try r.query("SELECT count(*) FROM tasks")
                } catch {
                    failures.add()
                }
            }
        }
        XCTAssertEqual(failures.value, 0)
        XCTAssertEqual(try r.get("stats", "s")?["hits"], .int(200))
        XCTAssertEqual(try r.query("SELECT count(*) AS c FROM tasks"), [["c": 200]])
        // Closing while other threads write: they get `closed`, nothing crashes.
        let closedErrors = Counter()
        let group = DispatchGroup()
        for t in 0..<3 {
            DispatchQueue.global().async(group: group) {
                for i in 0..<5000 {
                    do { try r.put("more", "\(t)-\(i)", ["i": 1]) } catch {
                        if (error as? CairnError)?.code == CairnError.closed { closedErrors.add() }
                        return
                    }
                }
            }
        }
        Thread.sleep(forTimeInterval: 0.05)
        r.close()
        group.wait()
        XCTAssertGreaterThan(closedErrors.value, 0)
    }

    func testTelemetryStreamsAppendWithQuotasAndPolicies() throws {
        let r = try Replica(path: path("streams.db"))
        let first = try r.append("climate", ["temp": 21.0, "dev": "s1", "ok": true] as Fields)
        XCTAssertEqual(first, AppendResult(firstSeq: 1, lastSeq: 1, dropped: 0))
        let batch = try r.append("climate", records: [["n": 1], ["n": 2], ["n": 3]] as [Fields],
                                 timestampsMs: [10, 20, 30])
        XCTAssertEqual(batch.firstSeq, 2)
        XCTAssertEqual(batch.lastSeq, 4)
        var climate = try XCTUnwrap(try r.streams()["climate"])
        XCTAssertEqual(climate["records"] as? Int, 4)
        XCTAssertEqual(climate["policy"] as? String, "reject")
        // Full: refused (reject), then the oldest dropped and counted.
        try r.configureStream("tiny", StreamOptions(maxBytes: 10))
        try r.append("tiny", ["v": 1])
        try r.append("tiny", ["v": 2])
        XCTAssertThrowsError(try r.append("tiny", ["v": 3])) { e in
            XCTAssertEqual((e as? CairnError)?.code, CairnError.full)
        }
        try r.configureStream("tiny", StreamOptions(maxBytes: 10, dropOldest: true, priority: 2))
        XCTAssertEqual(try r.append("tiny", ["v": 3]).dropped, 1)
        let tiny = try XCTUnwrap(try r.streams()["tiny"])
        XCTAssertEqual(tiny["rejected"] as? Int, 1)
        XCTAssertEqual(tiny["dropped"] as? Int, 1)
        XCTAssertEqual(tiny["priority"] as? Int, 2)
        // Bad input: nothing appended.
        XCTAssertThrowsError(try r.append("climate", ["seq": 1])) { e in
            XCTAssertEqual((e as? CairnError)?.code, CairnError.invalidArgument)
        }
        XCTAssertThrowsError(try r.append("climate", ["t": Value.double(Double.nan)]))
        XCTAssertThrowsError(try r.append("climate", records: [["n": 1]], timestampsMs: []))
        climate = try XCTUnwrap(try r.streams()["climate"])
        XCTAssertEqual(climate["records"] as? Int, 4)
        // A whole double stays a double on its way through JSON.
        XCTAssertEqual(try JSON.exactText(["d": 2.0]), "{\"d\":2.0}")
        XCTAssertEqual(try JSON.exactText(["i": 2]), "{\"i\":2}")
        XCTAssertEqual(try JSON.exactText(["s": "a\"b"]), "{\"s\":\"a\\\"b\"}")
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
