// Test support: a SQLite VFS over the default one that fails chosen writes and syncs, the way a
// failing device or a full disk does. Install() makes it the process's default VFS, so every
// database the engine opens afterwards goes through it; with no fault armed it only counts.
#ifndef CAIRN_TESTS_SUPPORT_FAULT_VFS_H_
#define CAIRN_TESTS_SUPPORT_FAULT_VFS_H_

#include <cstdint>

namespace cairn::testing {

enum class StorageFault {
  kIoError,      // writes fail with SQLITE_IOERR_WRITE, syncs with SQLITE_IOERR_FSYNC
  kIoErrorOnce,  // the same, for the n-th write or sync only (a transient error)
  kDiskFull,     // writes fail with SQLITE_FULL; syncs succeed
};

class FaultVfs {
 public:
  // Registers the VFS "cairn-fault" as the default (the first call; later calls return it).
  static FaultVfs& Install();

  // From the n-th write or sync on (1: the next one), every write and sync fails with `fault`
  // until Clear() (a full disk stays full), or only the n-th for kIoErrorOnce. Resets the
  // counters.
  void FailFrom(int64_t n, StorageFault fault);
  // No fault; counters reset.
  void Clear();
  // Writes and syncs seen, and how many of them failed, since FailFrom or Clear.
  int64_t operations() const;
  int64_t failures() const;

 private:
  FaultVfs() = default;
};

}  // namespace cairn::testing

#endif  // CAIRN_TESTS_SUPPORT_FAULT_VFS_H_
