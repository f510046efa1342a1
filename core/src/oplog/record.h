// Telemetry stream records (docs/storage-format.md "Streams"): a record is an object of
// fields, stored and sent without merge. Its local encoding (the body kept in the replica file):
//   varint field count, then per field (names in bytewise order): varint name length, name,
//   tagged value (oplog/value_codec.h).
#ifndef CAIRN_OPLOG_RECORD_H_
#define CAIRN_OPLOG_RECORD_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "oplog/op.h"

namespace cairn {

// Columns every server-side stream table has (docs/protocol.md "Streams"); no field may take
// their names, in any case.
constexpr const char* kStreamColumns[] = {"origin", "seq", "ts_ms", "received_ms"};

// Stream names follow the collection-name rules (docs/crdt-semantics.md "Data model"); fields the
// field-name rules, minus "key" (streams have no document key), plus the stream columns above.
Status ValidateStreamName(std::string_view name);
Status ValidateStreamFieldName(std::string_view name);
// A record's fields: at least one, names valid, no two names equal but for case (they would
// share a column), strings UTF-8, doubles finite.
Status ValidateRecord(const Fields& fields);
// The largest body a record may have (so that any record fits in a frame with room to spare).
constexpr size_t kMaxRecordBytes = 1u << 20;

// Appends the body of a record with `fields` (REQUIRES: ValidateRecord passed) to `dst`.
void EncodeRecord(const Fields& fields, std::string* dst);
// Calls fn(name, value) for each field of a body in order. Corrupt for a malformed body.
Status DecodeRecord(std::string_view body,
                    const std::function<void(std::string_view, Value&&)>& fn);

// --- A replica's streams: settings, counters, appends (kept by store::StreamStore,
// docs/storage-format.md "Streams"; shown by the app API and the C API).

enum class StreamPolicy : int32_t {
  kReject = 0,      // a record that does not fit is refused (EFULL); the queue is kept
  kDropOldest = 1,  // the oldest records make room; they are counted as dropped
};
const char* StreamPolicyName(StreamPolicy p);  // "reject", "drop_oldest"

// A stream's settings. 0 = no limit of that kind.
struct StreamConfig {
  uint64_t max_bytes = 64u << 20;  // sum of the queued records' body sizes
  int64_t max_age_ms = 0;          // age of the oldest queued record
  StreamPolicy policy = StreamPolicy::kReject;
  int32_t priority = 0;  // higher uploads first
};

struct StreamInfo {
  std::string name;
  StreamConfig config;
  uint64_t last_seq = 0;                // the newest record's seq (seqs start at 1)
  uint64_t records = 0;                 // queued: not yet acknowledged by a server
  uint64_t bytes = 0;                   // their body sizes
  std::optional<int64_t> oldest_ts_ms;  // the oldest queued record's timestamp
  uint64_t dropped = 0;                 // removed by kDropOldest before upload
  uint64_t rejected = 0;                // refused by kReject (or larger than max_bytes)
  uint64_t uploaded = 0;                // acknowledged by a server
};

// One record to append: its timestamp (nullopt: the append's time) and its body
// (oplog/record.h).
struct NewRecord {
  std::optional<int64_t> ts_ms;
  std::string body;
};

struct AppendResult {
  uint64_t first_seq = 0, last_seq = 0;  // the seqs given to the stored records
  uint64_t dropped = 0;                  // records dropped to make room (kDropOldest)
};

}  // namespace cairn

#endif  // CAIRN_OPLOG_RECORD_H_
