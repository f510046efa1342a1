// StreamStore: the telemetry streams of a replica file (docs/storage-format.md "Streams"): per
// stream its settings and counters (cairn_streams) and its queued records
// (cairn_stream_records, by stream and seq). Records are appended under the stream's quota and
// policy, read in seq order for upload and deleted once a server acknowledged them. No merge:
// a record is stored once and sent as it is.
//
// Every call is its own transaction (BEGIN IMMEDIATE ... COMMIT); the file's settings make a
// committed append durable (synchronous=FULL). Nothing is cached between calls, so other
// connections to the file (the `cairn` tool beside an app) are seen. Not thread-safe: one
// thread at a time (cairn::Replica holds the lock).
#ifndef CAIRN_STORE_STREAM_STORE_H_
#define CAIRN_STORE_STREAM_STORE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "oplog/record.h"
#include "store/sqlite.h"

namespace cairn::store {

// What storage format 5 added (ReplicaStore's migration chain runs it).
extern const char* const kStreamSchema;

class StreamStore {
 public:
  // `db` must outlive the store; `enabled`: the file has the stream tables (format 5);
  // `read_only`: no writes (EREADONLY).
  StreamStore(Db* db, bool enabled, bool read_only)
      : db_(db), enabled_(enabled), read_only_(read_only) {}

  // Creates the stream or changes its settings (queued records stay; the next append applies
  // the new limits).
  Status Configure(const std::string& name, const StreamConfig& config);
  // Appends `records` (at least one) to `name`, creating the stream with default settings when
  // it does not exist. All or nothing: EFULL when they do not fit under kReject (the stream's
  // rejected count grows by their number; nothing else changes), or when one is larger than
  // max_bytes. `now_ms` judges the age limit and stamps records without a timestamp.
  Result<AppendResult> Append(const std::string& name, const std::vector<NewRecord>& records,
                              int64_t now_ms);
  // Every stream, by name; oldest_ts_ms filled in.
  Result<std::vector<StreamInfo>> List();
  // Queued records of `name` with seq > after_seq, in seq order, at most max_records and (past
  // the first) max_bytes of bodies.
  Status Read(const std::string& name, uint64_t after_seq, size_t max_records, size_t max_bytes,
              const std::function<Status(uint64_t seq, int64_t ts_ms, std::string_view body)>& fn);
  // A server made every record of `name` up to `through` durable: they leave the queue.
  // Returns how many left (0 when they were gone already).
  Result<uint64_t> Ack(const std::string& name, uint64_t through);
  // Queued records of every stream (what a sync still has to upload).
  Result<uint64_t> QueuedRecords();

 private:
  struct Row {
    int64_t id = 0;
    StreamInfo info;
  };
  Status Check() const;
  // Creates the stream with `config`; when it exists, replaces its settings or (!replace)
  // leaves it as it is.
  Status PutStream(const std::string& name, const StreamConfig& config, bool replace);
  Result<std::optional<Row>> Find(const std::string& name);
  // Drops the oldest records while `more` says so (given the next one's ts and size); returns
  // how many, and subtracts them from `row`.
  Result<uint64_t> DropOldest(Row* row, const std::function<bool(int64_t ts, uint64_t size)>& more);
  Status SaveCounters(const Row& row);

  Db* db_;
  bool enabled_;
  bool read_only_;
  Stmt find_, insert_, upsert_, save_, put_record_, oldest_, read_;
};

}  // namespace cairn::store

#endif  // CAIRN_STORE_STREAM_STORE_H_
