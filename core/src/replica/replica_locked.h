// Shared by the translation units of cairn::Replica (replica.cc: the app's API;
// replica_export.cc; replica_query.cc; replica_sync.cc: what the sync engine reaches;
// replica_streams.cc): Replica::Locked holds the replica's lock and, on release, a scope that
// committed delivers the changes to the change listeners.
#ifndef CAIRN_REPLICA_REPLICA_LOCKED_H_
#define CAIRN_REPLICA_REPLICA_LOCKED_H_

#include <functional>
#include <string_view>

#include "protocol/batch_codec.h"
#include "replica/replica.h"
#include "store/replica_store.h"

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

// The ops of an OpBatch frame the file keeps (an outbox row, its superseded ops), verified first.
inline Status DecodeOutboxOps(std::string_view blob, const std::function<Status(const Op&)>& fn) {
  return protocol::DecodeBatchFrame(blob, "outbox entry", fn);
}
// The same, `first` seeing the row's batch before any op is decoded (protocol::DecodeBatchFrame).
inline Status DecodeOutboxOps(std::string_view blob,
                              const std::function<Status(const wire::OpBatch&)>& first,
                              const std::function<Status(const Op&)>& fn) {
  return protocol::DecodeBatchFrame(blob, "outbox entry", first, fn);
}

}  // namespace cairn

#endif  // CAIRN_REPLICA_REPLICA_LOCKED_H_
