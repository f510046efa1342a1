import Foundation

/// A C handle shared by calls from any thread. Closing refuses new calls at once (they throw
/// `CairnError.closed`, also those a callback makes while the close waits) and then waits for
/// the calls in progress, so the handle is freed only when nothing uses it. (A readers-writer
/// lock would deadlock here: a callback's call would queue behind the waiting close.)
final class NativeHandle: @unchecked Sendable {
    private let what: String
    private let cond = NSCondition()
    private var value: OpaquePointer?
    private var calls = 0
    private var closing = false

    init(_ what: String, _ value: OpaquePointer) {
        self.what = what
        self.value = value
    }

    /// Runs `body` with the handle, held open for the call.
    func use<T>(_ body: (OpaquePointer) throws -> T) throws -> T {
        cond.lock()
        guard !closing, let h = value else {
            cond.unlock()
            throw CairnError.closedHandle(what)
        }
        calls += 1
        cond.unlock()
        defer {
            cond.lock()
            calls -= 1
            if calls == 0 { cond.broadcast() }
            cond.unlock()
        }
        return try body(h)
    }

    /// Starts closing; false when it was already closing or closed.
    func markClosing() -> Bool {
        cond.lock()
        defer { cond.unlock() }
        if closing { return false }
        closing = true
        return true
    }

    /// After markClosing: waits for the calls in progress, returns the handle to free.
    func awaitIdle() -> OpaquePointer? {
        cond.lock()
        defer { cond.unlock() }
        while calls > 0 { cond.wait() }
        let h = value
        value = nil
        return h
    }
}
