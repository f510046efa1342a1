// cairn::Replica: telemetry streams (docs/storage-format.md "Streams"). The store keeps them
// (store/stream_store.h); here records are validated, encoded and stamped, and the sync client
// reads and acknowledges them.
#include "oplog/record.h"
#include "protocol/stream_codec.h"
#include "replica/replica.h"
#include "replica/replica_locked.h"
#include "replica/sync_access.h"

namespace cairn {

Status RecordBatch::Add(const Fields& fields, std::optional<int64_t> ts_ms) {
  CAIRN_RETURN_IF_ERROR(ValidateRecord(fields));
  NewRecord r;
  r.ts_ms = ts_ms;
  EncodeRecord(fields, &r.body);
  if (r.body.size() > kMaxRecordBytes) {
    return Status::Invalid("a record of " + std::to_string(r.body.size()) +
                           " bytes exceeds the limit of " + std::to_string(kMaxRecordBytes));
  }
  records_.push_back(std::move(r));
  return Status::OK();
}

Json StreamJson(const StreamInfo& s, int64_t now_ms) {
  return Json{{"bytes", s.bytes},
              {"dropped", s.dropped},
              {"last_seq", s.last_seq},
              {"max_age_ms", s.config.max_age_ms},
              {"max_bytes", s.config.max_bytes},
              {"oldest_age_ms",
               s.oldest_ts_ms ? Json(std::max<int64_t>(0, now_ms - *s.oldest_ts_ms)) : Json()},
              {"policy", StreamPolicyName(s.config.policy)},
              {"priority", s.config.priority},
              {"records", s.records},
              {"rejected", s.rejected},
              {"uploaded", s.uploaded}};
}

int64_t Replica::NowMs() const {
  return static_cast<int64_t>(static_cast<uint64_t>(clock_source_->NowMs()) +
                              static_cast<uint64_t>(clock_->offset_ms()));
}

Status Replica::ConfigureStream(const std::string& stream, const StreamConfig& config) {
  CAIRN_RETURN_IF_ERROR(ValidateStreamName(stream));
  if (config.max_age_ms < 0) return Status::Invalid("max_age_ms must not be negative");
  if (config.policy != StreamPolicy::kReject && config.policy != StreamPolicy::kDropOldest) {
    return Status::Invalid("unknown stream policy " +
                           std::to_string(static_cast<int32_t>(config.policy)));
  }
  if (config.max_bytes > static_cast<uint64_t>(INT64_MAX)) {
    return Status::Invalid("max_bytes is too large");
  }
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  return store_->streams()->Configure(stream, config);
}

Result<AppendResult> Replica::Append(const std::string& stream, const Fields& fields) {
  RecordBatch batch;
  CAIRN_RETURN_IF_ERROR(batch.Add(fields));
  return Append(stream, batch);
}

Result<AppendResult> Replica::Append(const std::string& stream, const RecordBatch& batch) {
  CAIRN_RETURN_IF_ERROR(ValidateStreamName(stream));
  if (batch.empty()) return Status::Invalid("an empty record batch");
  Result<AppendResult> r = [&]() -> Result<AppendResult> {
    Locked lock(this);
    CAIRN_RETURN_IF_ERROR(CheckOpen());
    return store_->streams()->Append(stream, batch.records(), NowMs());
  }();
  if (r.ok()) NotifyWritten();
  return r;
}

Result<std::vector<StreamInfo>> Replica::Streams() {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  return store_->streams()->List();
}

Status SyncAccess::ReadStream(const std::string& stream, uint64_t after_seq, size_t max_records,
                              size_t max_bytes, protocol::StreamEncoder* enc) {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  return r_->store_->streams()->Read(
      stream, after_seq, max_records, max_bytes,
      [&](uint64_t seq, int64_t ts, std::string_view body) { return enc->Add(seq, ts, body); });
}

Result<uint64_t> SyncAccess::AckStream(const std::string& stream, uint64_t through) {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  return r_->store_->streams()->Ack(stream, through);
}

Result<uint64_t> SyncAccess::QueuedRecords() {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  return r_->store_->streams()->QueuedRecords();
}

}  // namespace cairn
