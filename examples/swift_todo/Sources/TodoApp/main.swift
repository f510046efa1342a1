// Writes while offline, reacts to changes through an AsyncStream, syncs with a cairn-server and
// waits for another device's edit to arrive by live sync.
//   TodoApp DB_FILE HOST:PORT CA_FILE TOKEN [wait-for-KEY]
import Cairn
import Foundation

let args = CommandLine.arguments
guard args.count >= 5 else {
    FileHandle.standardError.write(Data("usage: TodoApp DB_FILE HOST:PORT CA_FILE TOKEN [wait-for-KEY]\n".utf8))
    exit(2)
}
let waitFor = args.count > 5 ? args[5] : nil

do {
    let db = try Replica(path: args[1])
    let changes = try db.changes()
    let me = String(try db.id.prefix(6))
    try db.write(WriteBatch()
        .set("todos", "from-swift", "title", .string("written by the Swift app \(me)"))
        .set("todos", "from-swift", "done", false))
    try db.increment("stats", "app", "opens", by: 1)
    print("pending before sync:", try db.status()["pending_ops"] ?? 0)

    var options = Sync.Options(server: args[2], token: args[4])
    options.caFile = args[3]
    options.serverName = "localhost"
    let sync = try Sync(replica: db, options: options)
    try sync.onStatus { print("sync status: \($0.state) (pending \($0.pendingOps))") }
    try sync.start()
    let deadline = Date().addingTimeInterval(30)
    var arrived = waitFor == nil
    for await change in changes {
        print(change.local ? "changed here:" : "synced in:   ", change.collection, change.keys)
        if let key = waitFor, !change.local, change.keys.contains(key) { arrived = true }
        if arrived || Date() > deadline { break }
    }
    guard arrived else {
        FileHandle.standardError.write(Data("no \(waitFor ?? "") within 30 s\n".utf8))
        exit(1)
    }
    for _ in 0..<300 where try sync.status().pendingOps > 0 { Thread.sleep(forTimeInterval: 0.1) }
    print("after sync:", try sync.status().state, "pending", try sync.status().pendingOps)
    try sync.stop()
    for row in try db.query("SELECT key, title FROM todos ORDER BY key") {
        print("todo \(row["key"].map { "\($0)" } ?? ""):", row["title"].map { "\($0)" } ?? "")
    }
    print("digest", try db.digest())
} catch {
    FileHandle.standardError.write(Data("TodoApp: \(error)\n".utf8))
    exit(3)
}
