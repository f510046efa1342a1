// Replica::Locked, shared by the translation units of cairn::Replica (replica.cc,
// replica_streams.cc): holds the replica's lock; on release, a scope that committed delivers
// the changes to the change listeners.
#ifndef CAIRN_REPLICA_REPLICA_LOCKED_H_
#define CAIRN_REPLICA_REPLICA_LOCKED_H_

#include "replica/replica.h"

namespace cairn {

class Replica::Locked {
 public:
  explicit Locked(Replica* r) : r_(r) {
    r_->mu_.lock();
    commits_ = r_->store_ != nullptr ? r_->store_->commit_count() : 0;
  }
  // Only a scope that committed delivers: a reader never runs listeners.
  ~Locked() {
    const bool committed = r_->store_ != nullptr && r_->store_->commit_count() != commits_ &&
                           r_->store_->has_changes();
    r_->mu_.unlock();
    if (committed) r_->DeliverChanges();
  }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

 private:
  Replica* r_;
  uint64_t commits_ = 0;
};

}  // namespace cairn

#endif  // CAIRN_REPLICA_REPLICA_LOCKED_H_
