// Thin RAII over the SQLite C API: Db (a connection), Stmt (a prepared statement, reset after
// each use) and Txn (BEGIN IMMEDIATE ... COMMIT, rolled back by the destructor unless committed).
// Every SQLite error becomes a Status whose message carries sqlite3_errmsg. Not thread-safe: a
// Db and its statements are used by one thread at a time.
#ifndef CAIRN_STORE_SQLITE_H_
#define CAIRN_STORE_SQLITE_H_

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"

namespace cairn::store {

class Db;

class Stmt {
 public:
  Stmt() = default;
  Stmt(Db* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  bool valid() const { return stmt_ != nullptr; }

  // Binders take 1-based indexes, as sqlite3_bind_*. Text and blobs are copied (SQLITE_TRANSIENT)
  // unless BindStatic* is used, which requires the data to outlive the next Step/Reset.
  void BindInt(int i, int64_t v) { sqlite3_bind_int64(stmt_.get(), i, v); }
  void BindDouble(int i, double v) { sqlite3_bind_double(stmt_.get(), i, v); }
  void BindNull(int i) { sqlite3_bind_null(stmt_.get(), i); }
  void BindText(int i, std::string_view s) {
    sqlite3_bind_text64(stmt_.get(), i, s.data(), s.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  }
  void BindBlob(int i, std::string_view s) {
    sqlite3_bind_blob64(stmt_.get(), i, s.data(), s.size(), SQLITE_TRANSIENT);
  }
  void BindStaticText(int i, std::string_view s) {
    sqlite3_bind_text64(stmt_.get(), i, s.data(), s.size(), SQLITE_STATIC, SQLITE_UTF8);
  }
  void BindStaticBlob(int i, std::string_view s) {
    sqlite3_bind_blob64(stmt_.get(), i, s.data(), s.size(), SQLITE_STATIC);
  }

  // Steps once: true when a row is available, false when done; errors as Status.
  Result<bool> Step();
  // Steps through every row, calling `row` for each (it reads the columns); stops at the first
  // error, SQLite's or the callback's. Resets the statement in every case.
  Status ForEachRow(const std::function<Status()>& row);
  // Runs to completion, ignoring rows, then resets.
  Status Run();
  void Reset() {
    sqlite3_reset(stmt_.get());
    sqlite3_clear_bindings(stmt_.get());
  }

  int ColumnCount() const { return sqlite3_column_count(stmt_.get()); }
  int ColumnType(int i) const { return sqlite3_column_type(stmt_.get(), i); }
  const char* ColumnName(int i) const { return sqlite3_column_name(stmt_.get(), i); }
  int64_t Int(int i) const { return sqlite3_column_int64(stmt_.get(), i); }
  double Double(int i) const { return sqlite3_column_double(stmt_.get(), i); }
  bool IsNull(int i) const { return ColumnType(i) == SQLITE_NULL; }
  std::string_view Text(int i) const;
  std::string_view Blob(int i) const;
  sqlite3_stmt* raw() const { return stmt_.get(); }

 private:
  struct Finalizer {
    void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
  };
  Db* db_ = nullptr;
  std::unique_ptr<sqlite3_stmt, Finalizer> stmt_;
};

class Db {
 public:
  Db() = default;
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // flags as sqlite3_open_v2 (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, ...).
  Status Open(const std::string& path, int flags);
  // Closes; fails with EBUSY (and stays open) if statements are still alive.
  Status Close();
  bool is_open() const { return db_ != nullptr; }

  Status Exec(const std::string& sql);
  Result<Stmt> Prepare(std::string_view sql);
  // The current error as a Status with `what` as context.
  Status Error(std::string_view what, int rc) const;
  // A statement from outside (the app's SQL, docs/c-api.md "Queries") that may only read:
  // EREADONLY for one that would write or touch anything but reading tables and calling
  // functions (an authorizer denies the rest while it is prepared), EINVAL for none, more than
  // one statement, or a parameter count other than `params`.
  Result<Stmt> PrepareReadOnlyQuery(const std::string& sql, size_t params);
  int64_t Changes() const { return sqlite3_changes64(db_); }
  int64_t LastInsertRowid() const { return sqlite3_last_insert_rowid(db_); }
  void SetBusyTimeout(int ms) { sqlite3_busy_timeout(db_, ms); }
  sqlite3* raw() const { return db_; }

 private:
  sqlite3* db_ = nullptr;
};

// BEGIN IMMEDIATE (the write lock is taken at once, so a busy database fails here, not mid-way).
class Txn {
 public:
  static Result<std::unique_ptr<Txn>> Begin(Db* db, bool immediate = true);
  ~Txn();
  Status Commit();

 private:
  explicit Txn(Db* db) : db_(db) {}
  Db* db_;
  bool done_ = false;
};

// SQLite and PostgreSQL integers are signed 64-bit; seqs, cursors and clocks are unsigned and
// stored as the same 64 bits (docs/storage-format.md).
inline int64_t I(uint64_t v) { return static_cast<int64_t>(v); }
inline uint64_t U(int64_t v) { return static_cast<uint64_t>(v); }

}  // namespace cairn::store

#endif  // CAIRN_STORE_SQLITE_H_
