// StreamTables: where cairn-server keeps telemetry records (docs/protocol.md "Streams"):
// its own SQLite file beside the server's (--streams, default `<db>.streams`), one table per
// stream, named as the stream, that anyone may query with SQL:
//   origin TEXT (the sending replica's id, hex), seq INTEGER (its seq in that stream),
//   ts_ms INTEGER (the device's timestamp), received_ms INTEGER (the server's, at the batch),
//   then one column per field ever sent to the stream (added as they appear; NULL where a
//   record lacks it). PRIMARY KEY (origin, seq): a record sent twice is stored once.
// A file of its own keeps telemetry volume out of the document store (its snapshots, its
// backups) and lets it be archived or truncated on its own.
// Not thread-safe: the server's loop thread only.
#ifndef CAIRN_SERVER_STREAM_TABLES_H_
#define CAIRN_SERVER_STREAM_TABLES_H_

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "cairn_generated.h"
#include "oplog/op.h"
#include "store/sqlite.h"

namespace cairn::server {

struct StreamStoreResult {
  uint64_t through = 0;     // the batch's last seq: every record up to it is durable
  uint64_t stored = 0;      // records new to the table
  uint64_t duplicates = 0;  // records it already had (a retry after a lost ack)
};

// Where the server stores telemetry records: StreamTables (SQLite, below) or, with a PostgreSQL
// store, tables in that database shared by every node (server/pg/pg_stream_tables.h).
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  // Stores a batch of `origin`'s records atomically (all or nothing): EINVAL or ECORRUPT for a
  // batch that breaks the rules (protocol/stream_codec.h), that names a stream differing only in
  // case from an existing table, or whose table or columns cannot be made; nothing stored.
  virtual Result<StreamStoreResult> Store(const ReplicaId& origin,
                                          const wire::StreamBatch& batch, int64_t now_ms,
                                          uint32_t max_records) = 0;
};

class StreamTables final : public StreamSink {
 public:
  // Opens (creating) the file at `path`.
  static Result<std::unique_ptr<StreamTables>> Open(const std::string& path);
  Result<StreamStoreResult> Store(const ReplicaId& origin, const wire::StreamBatch& batch,
                                  int64_t now_ms, uint32_t max_records) override;

 private:
  struct Table {
    std::string name;                                      // as created
    std::unordered_map<std::string, std::string> columns;  // lower-case name -> column name
  };
  StreamTables() = default;
  Result<int64_t> SchemaVersion();
  Result<Table*> EnsureTable(const std::string& name);
  Status EnsureColumn(const std::string& stream, Table* t, const std::string& field,
                      std::string* column);

  store::Db db_;
  std::map<std::string, Table> tables_;  // by lower-case name: what exists, as of schema_version_
  int64_t schema_version_ = -1;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_STREAM_TABLES_H_
