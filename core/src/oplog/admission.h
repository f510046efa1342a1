// Admission: which received ops a receiver applies, which it already has, and which mean the
// sender is broken; when a unit that assumes ops the receiver lacks is held back; when a repeated
// op is not the op received under its seq (a fork). docs/crdt-semantics.md "Admission" states the
// rules; this is their one home, for every path that receives ops: a server batch
// (SyncAccess::ApplyServerBatch), an export file (Replica::ImportLocked), a push (the server's
// SortPush) and the drain of held-back units (ReplicaStore::DrainPending).
//
// A receiver keeps, per origin, a watermark `through`: it has that origin's ops 1..through (or
// knows it never will get the ones left out for it). Everything here is pure: callers look the
// watermarks up and store the new ones.
#ifndef CAIRN_OPLOG_ADMISSION_H_
#define CAIRN_OPLOG_ADMISSION_H_

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include "base/result.h"
#include "oplog/op.h"

namespace cairn::admission {

// What a received op is to its receiver.
enum class Seq {
  kNew,        // to apply
  kDuplicate,  // at or below the receiver's watermark before the unit: it has the op
};

// Whether a unit that assumes its receiver has an origin's ops through `from` can be applied by
// one that has them through `through`. When not, the unit is held back whole (an import, a
// staged unit) or, from a server that should know better, refused as damage.
inline bool AssumptionMet(uint64_t from, uint64_t through) { return from <= through; }

// Whether a receiver with watermark `through` has op `seq` (or has accounted for it).
inline bool Has(uint64_t through, uint64_t seq) { return seq <= through; }

// One origin's ops as one unit (a batch, a push, a file) brings them, in the order it brings
// them. Two shapes:
//  - contiguous (nothing declared): the ops follow each other, seq after seq. An op at or below
//    the watermark is a duplicate; one above it that the unit brought already is a repeat, and
//    one further on than the next leaves a gap (both ECORRUPT: no sender does that);
//  - declared (Declare): the unit brings ops in (from, to] in increasing order, not necessarily
//    all of them (the sender leaves out what the receiver may not see, or never had); an op
//    outside the range or out of order is ECORRUPT.
class OriginSeq {
 public:
  OriginSeq(const ReplicaId& origin, uint64_t through)
      : origin_(origin), through_(through), last_(through) {}

  // Declares the range (from, to]. ECORRUPT when from > to, to > kMaxSeq, declared twice, or
  // after an op of the unit was classified (it would be counted again).
  Status Declare(uint64_t from, uint64_t to);
  bool declared() const { return declared_; }
  uint64_t declared_from() const { return from_; }
  uint64_t declared_to() const { return to_; }
  // The declared range assumes the receiver has the ops through `from`.
  bool assumption_met() const { return !declared_ || AssumptionMet(from_, through_); }

  // Classifies the next op of the unit.
  Result<Seq> Next(uint64_t seq);

  // The receiver's watermark before the unit, and once the whole unit is applied.
  uint64_t through() const { return through_; }
  uint64_t through_after() const { return declared_ ? std::max(through_, to_) : last_; }
  // The last seq seen (the watermark before the unit until an op was seen).
  uint64_t last() const { return last_; }

 private:
  std::string Name(uint64_t seq) const;

  ReplicaId origin_;
  uint64_t through_;
  uint64_t last_;
  bool declared_ = false;
  bool seen_ = false;  // Next was called
  uint64_t from_ = 0, to_ = 0;
};

// EFORKED when the op a sender repeats under `seq` (stamped `sent`) is not the one the receiver
// received under that seq (`held`, its stamp, when the receiver still holds it): the origin's
// history forked (a file restored from a backup or copied to another device wrote new ops under
// seqs it had used). Taking the op for a duplicate would drop it.
Status CheckFork(const ReplicaId& origin, uint64_t seq, Hlc sent, std::optional<Hlc> held);

}  // namespace cairn::admission

#endif  // CAIRN_OPLOG_ADMISSION_H_
