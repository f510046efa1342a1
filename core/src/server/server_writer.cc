#include "server/server_writer.h"

#include "oplog/validate.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "server/session.h"

namespace cairn::server {

ServerWriter::ServerWriter(SessionHub::Impl* hub)
    : hub_(hub), clock_source_(hub), clock_(&clock_source_) {}

int64_t ServerWriter::StoreClock::NowMs() { return hub_->store->NowMs(); }

Result<ReplicaId> ServerWriter::Origin() {
  if (!origin_) {
    ReplicaId id;
    do {
      CAIRN_RETURN_IF_ERROR(port::SecureRandom(id.bytes.data(), id.bytes.size()));
    } while (IsReservedReplicaId(id) || id == hub_->store->id());
    origin_ = id;
    hub_->Log("the server's own writes (HTTP API, SQL inbox) of this process are made as origin " +
              id.Hex());
  }
  return *origin_;
}

Result<PushResult> ServerWriter::Write(std::vector<std::vector<Op>> txns, const AdmitFn& admit,
                                       TxnJudge* judge, PushExtras* extras) {
  ServerStore* store = hub_->store.get();
  CAIRN_ASSIGN_OR_RETURN(const ReplicaId origin, Origin());
  size_t total = 0;
  for (const std::vector<Op>& txn : txns) {
    if (txn.size() > kMaxTransactionOps) {
      return Status::Invalid("a transaction holds at most " + std::to_string(kMaxTransactionOps) +
                             " ops");
    }
    total += txn.size();
  }
  if (total > kMaxTransactionOps) {
    return Status::Invalid("a push holds at most " + std::to_string(kMaxTransactionOps) + " ops");
  }
  // Stamped after every op the server holds: a write made after reading a document
  // supersedes what was read (docs/backend.md "Writing").
  clock_.Observe(store->MaxHlc());
  uint64_t seq = store->state()->Through(origin);
  protocol::BatchEncoder enc;
  for (size_t t = 0; t < txns.size(); t++) {
    if (extras != nullptr && t < extras->inbox.size()) extras->inbox[t].second = seq + 1;
    for (size_t i = 0; i < txns[t].size(); i++) {
      Op& op = txns[t][i];
      op.id = OpId{clock_.Now(), origin, ++seq};
      op.continues_txn = i > 0;
      enc.Add(op);
    }
  }
  flatbuffers::FlatBufferBuilder fbb(enc.ops_bytes() + 1024);
  enc.Finish(&fbb);
  if (fbb.GetSize() > kMaxTransactionBytes) {
    return Status::Invalid("the write is larger than " + std::to_string(kMaxTransactionBytes) +
                           " bytes once encoded");
  }
  const auto* batch = flatbuffers::GetRoot<wire::Frame>(fbb.GetBufferPointer())->body_as_OpBatch();
  PushLimits limits;
  limits.max_ops = static_cast<uint32_t>(kMaxTransactionOps);
  limits.max_bytes = protocol::BatchBudget(hub_->options.conn.limits.max_frame_bytes);
  const uint64_t head_before = store->head();
  auto pushed = [&] {
    ScopedTimer timed(&hub_->metrics.store_seconds["apply_push"]);
    return store->ApplyPush(origin, *batch, limits, admit, judge, extras);
  }();
  if (pushed.ok()) hub_->CountPush(*pushed);
  if (store->head() != head_before) hub_->Committed(head_before, nullptr);
  return pushed;
}

}  // namespace cairn::server
