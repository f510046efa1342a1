#include "server/pg/pg.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace cairn::server::pg {

namespace {

// Type Oids (pg_type.h; stable across PostgreSQL releases).
constexpr unsigned int kBoolOid = 16, kByteaOid = 17, kInt8Oid = 20, kTextOid = 25,
                       kFloat8Oid = 701;

std::string BigEndian(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; i--) {
    out[static_cast<size_t>(i)] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return out;
}

std::string Trimmed(const char* s) {
  std::string m = s ? s : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

}  // namespace

Param::Param(int64_t v) : type_(kInt8Oid), owned_(BigEndian(static_cast<uint64_t>(v))) {}
Param::Param(uint64_t v) : type_(kInt8Oid), owned_(BigEndian(v)) {}

Param Param::Double(double v) {
  Param p;
  p.type_ = kFloat8Oid;
  uint64_t bits;
  static_assert(sizeof bits == sizeof v, "IEEE 754 double");
  std::memcpy(&bits, &v, sizeof bits);
  p.owned_ = BigEndian(bits);
  return p;
}

Param Param::Bool(bool v) {
  Param p;
  p.type_ = kBoolOid;
  p.owned_.assign(1, v ? '\1' : '\0');
  return p;
}

Param Param::Null() {
  Param p;
  p.null_ = true;
  return p;
}

Param Param::Bytes(std::string_view b) {
  Param p;
  p.type_ = kByteaOid;
  p.data_ = b;
  return p;
}

Param Param::Text(std::string_view t) {
  Param p;
  p.type_ = kTextOid;
  p.data_ = t;
  return p;
}

int64_t Rows::Int(int row, int col) const {
  const auto* p = reinterpret_cast<const unsigned char*>(PQgetvalue(r_.get(), row, col));
  if (PQgetlength(r_.get(), row, col) != 8) return 0;  // NULL (callers check IsNull)
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return static_cast<int64_t>(v);
}

std::string_view Rows::Bytes(int row, int col) const {
  return std::string_view(PQgetvalue(r_.get(), row, col),
                          static_cast<size_t>(PQgetlength(r_.get(), row, col)));
}

Result<std::unique_ptr<Conn>> Conn::Connect(const std::string& conninfo) {
  // Defaults for what the connection string leaves unset (it comes last, so it wins): a peer
  // that vanished (a cut network, a stalled server) is noticed in about half a minute, not the
  // two hours of TCP's defaults, and never while a lock is held for long.
  const char* const keywords[] = {"connect_timeout",     "keepalives",       "keepalives_idle",
                                  "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                                  "application_name",    "dbname",           nullptr};
  const char* const values[] = {
      "10", "1", "15", "5", "3", "30000", "cairn-server", conninfo.c_str(), nullptr};
  PGconn* c = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
  if (c == nullptr) return Status(Code::kENOMEM, "PostgreSQL: cannot allocate a connection");
  std::unique_ptr<Conn> conn(new Conn(c));
  if (PQstatus(c) != CONNECTION_OK) {
    return Status(Code::kENETWORK, "PostgreSQL: cannot connect: " + Trimmed(PQerrorMessage(c)));
  }
  // Notices (e.g. "relation already exists, skipping") are not errors: not printed.
  PQsetNoticeProcessor(
      c, [](void*, const char*) {}, nullptr);
  // Server-side limits, unless the role, the database or the connection string set their own:
  // a statement, a lock wait, a transaction left open by a stalled node (its locks freed).
  CAIRN_RETURN_IF_ERROR(
      conn->Exec("SELECT set_config(name, value, false) FROM (VALUES "
                 "('statement_timeout', '60s'), ('lock_timeout', '30s'), "
                 "('idle_in_transaction_session_timeout', '60s')) AS d(name, value) "
                 "WHERE current_setting(name) = '0'")
          .status());
  return conn;
}

Conn::~Conn() { PQfinish(conn_); }

Status Conn::Error(std::string_view what, const PGresult* r) const {
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  last_sqlstate_ = state ? state : "";
  // The statement, shortened (a batch's INSERT can be long).
  if (what.size() > 100) what = what.substr(0, 100);
  std::string message = "PostgreSQL: " + std::string(what) + ": " +
                        Trimmed(r ? PQresultErrorMessage(r) : PQerrorMessage(conn_));
  if (PQstatus(conn_) != CONNECTION_OK) return Status(Code::kENETWORK, message);
  if (state != nullptr) {
    // Class 08: connection exception; 40001 / 40P01: serialization failure, deadlock (a retry
    // succeeds); 53: insufficient resources; 57P: the server shutting down.
    if (std::strncmp(state, "08", 2) == 0 || std::strncmp(state, "57P", 3) == 0) {
      return Status(Code::kENETWORK, message);
    }
    // ... 55P03: a lock not granted in lock_timeout; 57014: statement_timeout (or a cancel).
    if (std::strcmp(state, "40001") == 0 || std::strcmp(state, "40P01") == 0 ||
        std::strcmp(state, "55P03") == 0 || std::strcmp(state, "57014") == 0) {
      return Status(Code::kEBUSY, message);
    }
    if (std::strncmp(state, "53", 2) == 0) return Status(Code::kEIO, message);
    if (std::strncmp(state, "22", 2) == 0 || std::strncmp(state, "23", 2) == 0) {
      return Status::Corrupt(message);
    }
  }
  return Status(Code::kEIO, message);
}

Result<Rows> Conn::Exec(const char* sql, std::initializer_list<Param> params) {
  return Run(sql, params.begin(), params.size());
}

Result<Rows> Conn::Exec(const std::string& sql, const std::vector<Param>& params) {
  return Run(sql.c_str(), params.data(), params.size());
}

Result<Rows> Conn::Run(const char* sql, const Param* params, size_t count) {
  std::vector<unsigned int> types(count);
  std::vector<const char*> values(count);
  std::vector<int> lengths(count), formats(count, 1);
  for (size_t i = 0; i < count; i++) {
    const Param& p = params[i];
    types[i] = p.type_;
    if (p.null_) continue;  // a NULL: no value
    std::string_view v = p.owned_.empty() ? p.data_ : std::string_view(p.owned_);
    values[i] = v.data();
    lengths[i] = static_cast<int>(v.size());
  }
  Rows rows(PQexecParams(conn_, sql, static_cast<int>(count), types.data(), values.data(),
                         lengths.data(), formats.data(), /*resultFormat=*/1));
  PGresult* r = rows.r_.get();
  const ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) return Error(sql, r);
  return rows;
}

Result<Rows> Conn::Query(const std::string& sql) {
  Rows rows(PQexec(conn_, sql.c_str()));
  PGresult* r = rows.r_.get();
  const ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) return Error(sql, r);
  return rows;
}

Status Conn::ExecScript(const char* sql) {
  Rows rows(PQexec(conn_, sql));
  PGresult* r = rows.r_.get();
  const ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) return Error("script", r);
  return Status::OK();
}

Status Conn::CopyIn(const std::string& copy, std::string_view data) {
  {
    Rows started(PQexec(conn_, copy.c_str()));
    const PGresult* r = started.r_.get();
    if (r == nullptr || PQresultStatus(r) != PGRES_COPY_IN) return Error(copy, r);
  }
  // In parts (a call takes at most 2^31 - 1 bytes); a failed send ends the COPY as failed.
  constexpr size_t kPart = 1u << 20;
  int sent = 1;
  for (size_t at = 0; sent == 1 && at < data.size(); at += kPart) {
    const size_t n = std::min(kPart, data.size() - at);
    sent = PQputCopyData(conn_, data.data() + at, static_cast<int>(n));
  }
  const std::string lost = sent == 1 ? "" : Trimmed(PQerrorMessage(conn_));
  sent = PQputCopyEnd(conn_, lost.empty() ? nullptr : "the data could not be sent");
  Status st;
  if (sent != 1 || !lost.empty()) {
    st = Status(Code::kENETWORK, "PostgreSQL: " + copy + ": " +
                                     (lost.empty() ? Trimmed(PQerrorMessage(conn_)) : lost));
  }
  while (PGresult* raw = PQgetResult(conn_)) {
    Rows done(raw);
    const ExecStatusType rs = PQresultStatus(raw);
    if (st.ok() && rs != PGRES_COMMAND_OK) st = Error(copy, raw);
    if (rs == PGRES_COPY_IN) break;  // (the end could not be sent: the connection is broken)
  }
  return st;
}

Result<int> Conn::TakeNotifications() {
  if (PQconsumeInput(conn_) == 0) {
    return Status(Code::kENETWORK,
                  "PostgreSQL: notification connection lost: " + Trimmed(PQerrorMessage(conn_)));
  }
  int n = 0;
  while (PGnotify* note = PQnotifies(conn_)) {
    PQfreemem(note);
    n++;
  }
  return n;
}

Result<Conn*> Reconnected(std::unique_ptr<Conn>* conn, const std::string& url) {
  if (!*conn || !(*conn)->ok()) {
    conn->reset();
    CAIRN_ASSIGN_OR_RETURN(*conn, Conn::Connect(url));
  }
  return conn->get();
}

Txn::~Txn() {
  if (open_) (void)db_->ExecScript("ROLLBACK");
}

Status Txn::Begin(bool repeatable_read) {
  CAIRN_RETURN_IF_ERROR(db_->ExecScript(repeatable_read ? "BEGIN ISOLATION LEVEL REPEATABLE READ"
                                                        : "BEGIN ISOLATION LEVEL READ COMMITTED"));
  open_ = true;
  return Status::OK();
}

Status Txn::Commit() {
  open_ = false;
  CAIRN_ASSIGN_OR_RETURN(Rows done, db_->Query("COMMIT"));
  // COMMIT of a transaction a failed statement aborted succeeds, saying ROLLBACK.
  if (done.command() != "COMMIT") {
    return Status(Code::kEIO, "PostgreSQL: the transaction was rolled back, not committed");
  }
  return Status::OK();
}

}  // namespace cairn::server::pg
