#include "store/stream_store.h"

namespace cairn::store {

const char* const kStreamSchema = R"sql(
CREATE TABLE IF NOT EXISTS cairn_streams(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, max_bytes INTEGER NOT NULL,
  max_age_ms INTEGER NOT NULL, policy INTEGER NOT NULL, priority INTEGER NOT NULL,
  last_seq INTEGER NOT NULL, records INTEGER NOT NULL, bytes INTEGER NOT NULL,
  dropped INTEGER NOT NULL, rejected INTEGER NOT NULL, uploaded INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cairn_stream_records(
  key INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, body BLOB NOT NULL);
)sql";

namespace {

// A record's key: its stream's id in the high bits, its seq in the low kSeqBits. One integer
// key makes an append a rowid insert (no composite-key comparison), and a stream's records a
// key range in seq order.
constexpr int kSeqBits = 44;
constexpr uint64_t kMaxRecordSeq = (uint64_t{1} << kSeqBits) - 1;
// The last id whose successor's key (the end of its range) still fits in a signed 64-bit key.
constexpr int64_t kMaxStreamId = (int64_t{1} << (63 - kSeqBits)) - 2;
int64_t Key(int64_t stream, uint64_t seq) {
  return static_cast<int64_t>((static_cast<uint64_t>(stream) << kSeqBits) | seq);
}

constexpr const char* kColumns =
    "id, name, max_bytes, max_age_ms, policy, priority, last_seq, records, bytes, dropped, "
    "rejected, uploaded";

Status Prep(Db* db, Stmt* s, const char* sql) {
  if (s->valid()) return Status::OK();
  CAIRN_ASSIGN_OR_RETURN(*s, db->Prepare(sql));
  return Status::OK();
}

}  // namespace

Status StreamStore::Check() const {
  if (read_only_) return Status(Code::kEREADONLY, "the replica is open read-only");
  if (!enabled_) return Status(Code::kEINTERNAL, "the replica file has no stream tables");
  return Status::OK();
}

Result<std::optional<StreamStore::Row>> StreamStore::Find(const std::string& name) {
  static const std::string sql = std::string("SELECT ") + kColumns +
                                 " FROM cairn_streams WHERE name = ?";
  CAIRN_RETURN_IF_ERROR(Prep(db_, &find_, sql.c_str()));
  find_.BindText(1, name);
  std::optional<Row> out;
  CAIRN_RETURN_IF_ERROR(find_.ForEachRow([&] {
    Row r;
    r.id = find_.Int(0);
    r.info.name = std::string(find_.Text(1));
    r.info.config.max_bytes = U(find_.Int(2));
    r.info.config.max_age_ms = find_.Int(3);
    r.info.config.policy = static_cast<StreamPolicy>(find_.Int(4));
    r.info.config.priority = static_cast<int32_t>(find_.Int(5));
    r.info.last_seq = U(find_.Int(6));
    r.info.records = U(find_.Int(7));
    r.info.bytes = U(find_.Int(8));
    r.info.dropped = U(find_.Int(9));
    r.info.rejected = U(find_.Int(10));
    r.info.uploaded = U(find_.Int(11));
    out = std::move(r);
    return Status::OK();
  }));
  return out;
}

Status StreamStore::PutStream(const std::string& name, const StreamConfig& config,
                              bool replace) {
  // The server keeps each stream in a table named as it, and SQL names ignore case: two names
  // differing only in case would share a table and take each other's records for copies.
  CAIRN_ASSIGN_OR_RETURN(Stmt clash, db_->Prepare(
      "SELECT name FROM cairn_streams WHERE name = ?1 COLLATE NOCASE AND name <> ?1"));
  clash.BindText(1, name);
  CAIRN_ASSIGN_OR_RETURN(bool clashes, clash.Step());
  if (clashes) {
    return Status::Invalid("stream name '" + name + "' differs only in case from the stream '" +
                           std::string(clash.Text(0)) +
                           "' (a server keeps each stream in a table named as it)");
  }
  clash = Stmt();
  Stmt* st = replace ? &upsert_ : &insert_;
  CAIRN_RETURN_IF_ERROR(Prep(db_, st, replace
      ? "INSERT INTO cairn_streams(name, max_bytes, max_age_ms, policy, priority, last_seq, "
        "records, bytes, dropped, rejected, uploaded) VALUES (?,?,?,?,?,0,0,0,0,0,0) "
        "ON CONFLICT(name) DO UPDATE SET max_bytes = excluded.max_bytes, "
        "max_age_ms = excluded.max_age_ms, policy = excluded.policy, "
        "priority = excluded.priority"
      : "INSERT OR IGNORE INTO cairn_streams(name, max_bytes, max_age_ms, policy, priority, "
        "last_seq, records, bytes, dropped, rejected, uploaded) VALUES (?,?,?,?,?,0,0,0,0,0,0)"));
  st->BindText(1, name);
  st->BindInt(2, I(config.max_bytes));
  st->BindInt(3, config.max_age_ms);
  st->BindInt(4, static_cast<int64_t>(config.policy));
  st->BindInt(5, config.priority);
  CAIRN_RETURN_IF_ERROR(st->Run());
  // (Not sqlite3_last_insert_rowid: an update inserts nothing, and records' keys are rowids.)
  CAIRN_ASSIGN_OR_RETURN(Stmt id, db_->Prepare("SELECT id FROM cairn_streams WHERE name = ?"));
  id.BindText(1, name);
  CAIRN_ASSIGN_OR_RETURN(bool found, id.Step());
  if (found && id.Int(0) > kMaxStreamId) {
    return Status::Invalid("too many streams (ids up to " + std::to_string(kMaxStreamId) + ")");
  }
  return Status::OK();
}

Status StreamStore::Configure(const std::string& name, const StreamConfig& config) {
  CAIRN_RETURN_IF_ERROR(Check());
  CAIRN_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db_));
  CAIRN_RETURN_IF_ERROR(PutStream(name, config, /*replace=*/true));
  return txn->Commit();
}

Result<uint64_t> StreamStore::DropOldest(
    Row* row, const std::function<bool(int64_t ts, uint64_t size)>& more) {
  CAIRN_RETURN_IF_ERROR(Prep(db_, &oldest_,
      "SELECT key, ts_ms, length(body) FROM cairn_stream_records WHERE key > ? AND key < ? "
      "ORDER BY key"));
  oldest_.BindInt(1, Key(row->id, 0));
  oldest_.BindInt(2, Key(row->id + 1, 0));
  uint64_t n = 0, bytes = 0, through = 0;
  bool enough = false;
  Status st = oldest_.ForEachRow([&] {
    const uint64_t size = U(oldest_.Int(2));
    if (!more(oldest_.Int(1), size)) {
      enough = true;
      return Status(Code::kEBUSY, "enough");  // stops the scan
    }
    through = U(oldest_.Int(0) - Key(row->id, 0));
    n++;
    bytes += size;
    return Status::OK();
  });
  if (!st.ok() && !enough) return st;
  if (n == 0) return n;
  CAIRN_ASSIGN_OR_RETURN(Stmt del, db_->Prepare(
      "DELETE FROM cairn_stream_records WHERE key > ? AND key <= ?"));
  del.BindInt(1, Key(row->id, 0));
  del.BindInt(2, Key(row->id, through));
  CAIRN_RETURN_IF_ERROR(del.Run());
  row->info.records -= n;
  row->info.bytes -= bytes;
  row->info.dropped += n;
  return n;
}

Status StreamStore::SaveCounters(const Row& row) {
  CAIRN_RETURN_IF_ERROR(Prep(db_, &save_,
      "UPDATE cairn_streams SET last_seq = ?, records = ?, bytes = ?, dropped = ?, "
      "rejected = ?, uploaded = ? WHERE id = ?"));
  save_.BindInt(1, I(row.info.last_seq));
  save_.BindInt(2, I(row.info.records));
  save_.BindInt(3, I(row.info.bytes));
  save_.BindInt(4, I(row.info.dropped));
  save_.BindInt(5, I(row.info.rejected));
  save_.BindInt(6, I(row.info.uploaded));
  save_.BindInt(7, row.id);
  return save_.Run();
}

Result<AppendResult> StreamStore::Append(const std::string& name,
                                         const std::vector<NewRecord>& records, int64_t now_ms) {
  CAIRN_RETURN_IF_ERROR(Check());
  if (records.empty()) return Status::Invalid("nothing to append");
  CAIRN_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db_));
  CAIRN_ASSIGN_OR_RETURN(std::optional<Row> found, Find(name));
  if (!found) {
    CAIRN_RETURN_IF_ERROR(PutStream(name, StreamConfig(), /*replace=*/false));
    CAIRN_ASSIGN_OR_RETURN(found, Find(name));
    if (!found) return Status(Code::kEINTERNAL, "stream '" + name + "' vanished");
  }
  Row& row = *found;
  const StreamConfig& cfg = row.info.config;
  uint64_t total = 0, largest = 0;
  for (const NewRecord& r : records) {
    total += r.body.size();
    largest = std::max<uint64_t>(largest, r.body.size());
  }
  // Refused: nothing stored, the refusal counted (and committed: the counter is the report).
  auto refuse = [&](const std::string& why) -> Status {
    row.info.rejected += records.size();
    CAIRN_RETURN_IF_ERROR(SaveCounters(row));
    CAIRN_RETURN_IF_ERROR(txn->Commit());
    return Status(Code::kEFULL, "stream '" + name + "' is full: " + why);
  };
  if (cfg.max_bytes > 0 && largest > cfg.max_bytes) {
    return refuse("a record of " + std::to_string(largest) + " bytes exceeds its quota of " +
                  std::to_string(cfg.max_bytes) + " bytes");
  }
  AppendResult result;
  const bool drop = cfg.policy == StreamPolicy::kDropOldest;
  if (cfg.max_age_ms > 0 && row.info.records > 0) {
    // Age is judged in seq order: the oldest records expire first.
    const int64_t cutoff = now_ms - cfg.max_age_ms;
    if (drop) {
      CAIRN_ASSIGN_OR_RETURN(uint64_t n, DropOldest(&row, [&](int64_t ts, uint64_t) {
        return ts < cutoff;
      }));
      result.dropped += n;
    } else {
      CAIRN_ASSIGN_OR_RETURN(Stmt first, db_->Prepare(
          "SELECT ts_ms FROM cairn_stream_records WHERE key > ? AND key < ? ORDER BY key "
          "LIMIT 1"));
      first.BindInt(1, Key(row.id, 0));
      first.BindInt(2, Key(row.id + 1, 0));
      CAIRN_ASSIGN_OR_RETURN(bool has, first.Step());
      const int64_t oldest = has ? first.Int(0) : now_ms;
      first = Stmt();
      if (oldest < cutoff) {
        return refuse("its oldest record is " + std::to_string(now_ms - oldest) +
                      " ms old (max_age_ms " + std::to_string(cfg.max_age_ms) +
                      "); new records are refused until older ones are uploaded");
      }
    }
  }
  size_t skip = 0;  // the batch's own first records, dropped (kDropOldest, a batch over quota)
  if (cfg.max_bytes > 0 && row.info.bytes + total > cfg.max_bytes) {
    if (!drop) {
      return refuse(std::to_string(row.info.bytes) + " of " + std::to_string(cfg.max_bytes) +
                    " bytes are queued; " + std::to_string(records.size()) + " record(s) of " +
                    std::to_string(total) + " bytes do not fit");
    }
    uint64_t need = row.info.bytes + total - cfg.max_bytes;
    CAIRN_ASSIGN_OR_RETURN(uint64_t n, DropOldest(&row, [&](int64_t, uint64_t size) {
      if (need == 0) return false;
      need -= std::min(need, size);
      return true;
    }));
    result.dropped += n;
    while (need > 0 && skip < records.size()) {
      need -= std::min<uint64_t>(need, records[skip].body.size());
      total -= records[skip].body.size();
      skip++;
    }
    row.info.dropped += skip;
    result.dropped += skip;
  }
  if (row.info.last_seq + (records.size() - skip) > kMaxRecordSeq) {
    return Status(Code::kEFULL, "stream '" + name + "' has used every seq (2^" +
                                    std::to_string(kSeqBits) + "); use another stream");
  }
  CAIRN_RETURN_IF_ERROR(Prep(db_, &put_record_,
      "INSERT INTO cairn_stream_records(key, ts_ms, body) VALUES (?,?,?)"));
  result.first_seq = row.info.last_seq + 1;
  for (size_t i = skip; i < records.size(); i++) {
    put_record_.BindInt(1, Key(row.id, ++row.info.last_seq));
    put_record_.BindInt(2, records[i].ts_ms.value_or(now_ms));
    put_record_.BindStaticBlob(3, records[i].body);
    // Reset without clearing the bindings: the next record binds every parameter again.
    Result<bool> stepped = put_record_.Step();
    sqlite3_reset(put_record_.raw());
    CAIRN_RETURN_IF_ERROR(stepped.status());
  }
  result.last_seq = row.info.last_seq;
  if (result.last_seq < result.first_seq) result.first_seq = result.last_seq = 0;
  row.info.records += records.size() - skip;
  row.info.bytes += total;
  CAIRN_RETURN_IF_ERROR(SaveCounters(row));
  CAIRN_RETURN_IF_ERROR(txn->Commit());
  return result;
}

Result<std::vector<StreamInfo>> StreamStore::List() {
  std::vector<StreamInfo> out;
  if (!enabled_) return out;
  CAIRN_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db_, /*immediate=*/false));
  CAIRN_ASSIGN_OR_RETURN(Stmt names, db_->Prepare("SELECT name FROM cairn_streams ORDER BY name"));
  std::vector<std::string> all;
  CAIRN_RETURN_IF_ERROR(names.ForEachRow([&] {
    all.emplace_back(names.Text(0));
    return Status::OK();
  }));
  CAIRN_ASSIGN_OR_RETURN(Stmt first, db_->Prepare(
      "SELECT ts_ms FROM cairn_stream_records WHERE key > ? AND key < ? ORDER BY key LIMIT 1"));
  for (const std::string& name : all) {
    CAIRN_ASSIGN_OR_RETURN(std::optional<Row> row, Find(name));
    if (!row) continue;
    first.BindInt(1, Key(row->id, 0));
    first.BindInt(2, Key(row->id + 1, 0));
    CAIRN_RETURN_IF_ERROR(first.ForEachRow([&] {
      row->info.oldest_ts_ms = first.Int(0);
      return Status::OK();
    }));
    out.push_back(std::move(row->info));
  }
  names = Stmt();
  first = Stmt();
  CAIRN_RETURN_IF_ERROR(txn->Commit());
  return out;
}

Status StreamStore::Read(
    const std::string& name, uint64_t after_seq, size_t max_records, size_t max_bytes,
    const std::function<Status(uint64_t seq, int64_t ts_ms, std::string_view body)>& fn) {
  if (!enabled_) return Status::OK();
  CAIRN_ASSIGN_OR_RETURN(std::optional<Row> row, Find(name));
  if (!row) return Status::OK();
  CAIRN_RETURN_IF_ERROR(Prep(db_, &read_,
      "SELECT key, ts_ms, body FROM cairn_stream_records WHERE key > ? AND key < ? "
      "ORDER BY key LIMIT ?"));
  const int64_t base = Key(row->id, 0);
  read_.BindInt(1, Key(row->id, std::min(after_seq, kMaxRecordSeq)));
  read_.BindInt(2, Key(row->id + 1, 0));
  read_.BindInt(3, static_cast<int64_t>(std::min<uint64_t>(max_records, INT64_MAX)));
  size_t bytes = 0;
  bool full = false;
  Status st = read_.ForEachRow([&] {
    std::string_view body = read_.Blob(2);
    if (bytes > 0 && bytes + body.size() > max_bytes) {
      full = true;
      return Status(Code::kEBUSY, "batch full");  // stops the scan
    }
    bytes += body.size();
    return fn(U(read_.Int(0) - base), read_.Int(1), body);
  });
  return full ? Status::OK() : st;
}

Result<uint64_t> StreamStore::Ack(const std::string& name, uint64_t through) {
  CAIRN_RETURN_IF_ERROR(Check());
  CAIRN_ASSIGN_OR_RETURN(auto txn, Txn::Begin(db_));
  CAIRN_ASSIGN_OR_RETURN(std::optional<Row> row, Find(name));
  if (!row) return Status(Code::kENOTFOUND, "no stream '" + name + "'");
  if (through > row->info.last_seq) {
    return Status::Corrupt("acknowledgement of stream '" + name + "' through seq " +
                           std::to_string(through) + ", beyond its last seq " +
                           std::to_string(row->info.last_seq));
  }
  CAIRN_ASSIGN_OR_RETURN(Stmt count, db_->Prepare(
      "SELECT count(*), coalesce(sum(length(body)), 0) FROM cairn_stream_records "
      "WHERE key > ? AND key <= ?"));
  count.BindInt(1, Key(row->id, 0));
  count.BindInt(2, Key(row->id, through));
  CAIRN_ASSIGN_OR_RETURN(bool has, count.Step());
  const uint64_t n = has ? U(count.Int(0)) : 0, bytes = has ? U(count.Int(1)) : 0;
  count = Stmt();
  if (n == 0) return n;  // already acknowledged (or dropped): nothing to do
  CAIRN_ASSIGN_OR_RETURN(Stmt del, db_->Prepare(
      "DELETE FROM cairn_stream_records WHERE key > ? AND key <= ?"));
  del.BindInt(1, Key(row->id, 0));
  del.BindInt(2, Key(row->id, through));
  CAIRN_RETURN_IF_ERROR(del.Run());
  del = Stmt();
  row->info.records -= n;
  row->info.bytes -= bytes;
  row->info.uploaded += n;
  CAIRN_RETURN_IF_ERROR(SaveCounters(*row));
  CAIRN_RETURN_IF_ERROR(txn->Commit());
  return n;
}

Result<uint64_t> StreamStore::QueuedRecords() {
  if (!enabled_) return uint64_t{0};
  CAIRN_ASSIGN_OR_RETURN(Stmt st,
                         db_->Prepare("SELECT coalesce(sum(records), 0) FROM cairn_streams"));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? U(st.Int(0)) : 0;
}

}  // namespace cairn::store
