// Encoding of telemetry records into a StreamBatch and back (docs/protocol.md "Streams").
// Field names are sent once per batch; a record costs its seq gap (1 byte when consecutive), its
// timestamp delta, a field count and, per field, an index byte plus its tagged value.
#ifndef CAIRN_PROTOCOL_STREAM_CODEC_H_
#define CAIRN_PROTOCOL_STREAM_CODEC_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/result.h"
#include "base/status.h"
#include "cairn_generated.h"
#include "oplog/op.h"

namespace cairn::protocol {

// Collects one stream's records, in increasing seq order, into a StreamBatch. Not thread-safe.
class StreamEncoder {
 public:
  explicit StreamEncoder(std::string stream) : stream_(std::move(stream)) {}
  // Adds a record from its local body (oplog/record.h). Corrupt for a malformed body (nothing
  // added); Invalid when `seq` does not follow the previous record's. A record must not name a
  // field twice ignoring case (ValidateRecord).
  Status Add(uint64_t seq, int64_t ts_ms, std::string_view body);
  size_t record_count() const { return count_; }
  bool empty() const { return count_ == 0; }
  uint64_t first_seq() const { return first_seq_; }
  uint64_t last_seq() const { return last_seq_; }
  // Appends the batch as one length-prefixed Frame to `out`.
  void FinishFrame(std::string* out) const;

 private:
  std::string stream_;
  std::string records_;
  size_t count_ = 0;
  uint64_t first_seq_ = 0, last_seq_ = 0;
  int64_t base_ts_ = 0, last_ts_ = 0;
  std::vector<std::string> fields_;                         // as first spelled
  std::unordered_map<std::string, uint32_t> field_index_;  // by lowercase name
  std::vector<std::pair<std::string_view, std::string_view>> scratch_;  // one record's fields
  std::string name_;  // scratch
};

// One decoded record: its fields as (index into the batch's names, value).
struct StreamRecord {
  uint64_t seq = 0;
  int64_t ts_ms = 0;
  std::vector<std::pair<uint32_t, Value>> fields;
};

// Decodes and validates a StreamBatch: the stream's name, every field name (the stream rules of
// oplog/record.h, no two equal but for case), seqs increasing, each record's fields (at least
// one, no index twice, strings UTF-8), the record count. Calls `fn` for each record in order;
// stops at the first error (Invalid, Corrupt, or what `fn` returns). Nothing is assumed beyond
// the Verifier having passed.
Status DecodeStreamBatch(const wire::StreamBatch& batch, uint32_t max_records,
                         const std::function<Status(const StreamRecord&)>& fn);
// The part of those checks that needs no record: the names, the count, the first seq.
Status CheckStreamBatchHeader(const wire::StreamBatch& batch, uint32_t max_records);
// Those header checks, then the batch's stream name: "" when the batch holds no record (a
// server has nothing to store). What both server stores do first with a batch.
Result<std::string> StreamBatchName(const wire::StreamBatch& batch, uint32_t max_records);

}  // namespace cairn::protocol

#endif  // CAIRN_PROTOCOL_STREAM_CODEC_H_
