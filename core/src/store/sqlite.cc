#include "store/sqlite.h"

#include <cctype>

namespace cairn::store {

static Code CodeForSqlite(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Code::kEBUSY;
    case SQLITE_NOMEM:
      return Code::kENOMEM;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
      return Code::kEIO;
    case SQLITE_CORRUPT:
      return Code::kECORRUPT;
    case SQLITE_NOTADB:
      return Code::kENOTREPLICA;
    case SQLITE_READONLY:
      return Code::kEREADONLY;
    default:
      return Code::kERROR;
  }
}

std::string_view Stmt::Text(int i) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_.get(), i));
  return p ? std::string_view(p, static_cast<size_t>(sqlite3_column_bytes(stmt_.get(), i)))
           : std::string_view();
}

std::string_view Stmt::Blob(int i) const {
  const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_.get(), i));
  return p ? std::string_view(p, static_cast<size_t>(sqlite3_column_bytes(stmt_.get(), i)))
           : std::string_view();
}

Result<bool> Stmt::Step() {
  int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  Status st = db_->Error("step", rc);
  sqlite3_reset(stmt_.get());
  return st;
}

Status Stmt::ForEachRow(const std::function<Status()>& row) {
  Status st;
  for (;;) {
    auto r = Step();
    if (!r.ok()) {
      st = r.status();
      break;
    }
    if (!r.value()) break;
    st = row();
    if (!st.ok()) break;
  }
  Reset();
  return st;
}

Status Stmt::Run() {
  return ForEachRow([] { return Status::OK(); });
}

Db::~Db() {
  if (db_) sqlite3_close_v2(db_);
}

Status Db::Open(const std::string& path, int flags) {
  int rc = sqlite3_open_v2(path.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status st = Error("open " + path, rc);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    return st;
  }
  sqlite3_extended_result_codes(db_, 1);
  return Status::OK();
}

Status Db::Close() {
  if (!db_) return Status::OK();
  int rc = sqlite3_close(db_);
  if (rc != SQLITE_OK) return Error("close", rc);
  db_ = nullptr;
  return Status::OK();
}

Status Db::Error(std::string_view what, int rc) const {
  std::string msg(what);
  msg += ": ";
  msg += db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  return Status(CodeForSqlite(rc), std::move(msg));
}

Status Db::Exec(const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return Status(CodeForSqlite(rc), msg);
  }
  return Status::OK();
}

Result<Stmt> Db::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) return Error("prepare", rc);
  return Stmt(this, stmt);
}

namespace {

// Denies everything a read-only query has no business doing.
int QueryAuthorizer(void*, int action, const char*, const char*, const char*, const char*) {
  switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_FUNCTION:
    case SQLITE_RECURSIVE:
      return SQLITE_OK;
    default:
      return SQLITE_DENY;
  }
}

}  // namespace

Result<Stmt> Db::PrepareReadOnlyQuery(const std::string& sql, size_t params) {
  sqlite3_stmt* raw = nullptr;
  const char* tail = nullptr;
  sqlite3_set_authorizer(db_, QueryAuthorizer, nullptr);
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &raw, &tail);
  sqlite3_set_authorizer(db_, nullptr, nullptr);
  Stmt stmt(this, raw);
  if (rc == SQLITE_AUTH) {
    return Status(Code::kEREADONLY,
                  "query must be a read-only SELECT: " + std::string(sqlite3_errmsg(db_)));
  }
  if (rc != SQLITE_OK) return Error("query", rc);
  if (raw == nullptr) return Status::Invalid("empty query");
  for (; tail && *tail; tail++) {
    if (!std::isspace(static_cast<unsigned char>(*tail)) && *tail != ';') {
      return Status::Invalid("query must be a single statement");
    }
  }
  if (!sqlite3_stmt_readonly(raw)) {
    return Status(Code::kEREADONLY, "query must be a read-only SELECT");
  }
  if (static_cast<size_t>(sqlite3_bind_parameter_count(raw)) != params) {
    return Status::Invalid("the query has " + std::to_string(sqlite3_bind_parameter_count(raw)) +
                           " parameters, " + std::to_string(params) + " given");
  }
  return stmt;
}

Result<std::unique_ptr<Txn>> Txn::Begin(Db* db, bool immediate) {
  CAIRN_RETURN_IF_ERROR(db->Exec(immediate ? "BEGIN IMMEDIATE" : "BEGIN"));
  return std::unique_ptr<Txn>(new Txn(db));
}

Txn::~Txn() {
  if (!done_) (void)db_->Exec("ROLLBACK");
}

Status Txn::Commit() {
  CAIRN_RETURN_IF_ERROR(db_->Exec("COMMIT"));
  done_ = true;
  return Status::OK();
}


}  // namespace cairn::store
