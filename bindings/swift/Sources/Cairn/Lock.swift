import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A readers-writer lock (pthread_rwlock): many calls on a handle at once, its close alone.
final class ReadWriteLock: @unchecked Sendable {
    private let rw: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        rw = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
        rw.initialize(to: pthread_rwlock_t())
        precondition(pthread_rwlock_init(rw, nil) == 0, "pthread_rwlock_init failed")
    }

    deinit {
        pthread_rwlock_destroy(rw)
        rw.deinitialize(count: 1)
        rw.deallocate()
    }

    func shared<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_rdlock(rw)
        defer { pthread_rwlock_unlock(rw) }
        return try body()
    }

    func exclusive<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_wrlock(rw)
        defer { pthread_rwlock_unlock(rw) }
        return try body()
    }
}
