// Thin RAII over libpq for the PostgreSQL server store (server/pg_server_store.h): a connection,
// results, and parameters sent and columns read in binary (bigint as 8 bytes, bytea as is), so
// nothing is escaped or parsed as text. Every libpq error becomes a Status carrying
// PQerrorMessage / the server's message. Not thread-safe: one thread per connection.
#ifndef CAIRN_SERVER_PG_PG_H_
#define CAIRN_SERVER_PG_PG_H_

#include <libpq-fe.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace cairn::server::pg {

// A parameter: a bigint, a bytea or a text (binary format, typed).
class Param {
 public:
  Param(int64_t v);               // NOLINT: implicit by design (a call lists its parameters)
  Param(uint64_t v);              // NOLINT: stored as bigint (a cursor, a seq)
  static Param Double(double v);  // double precision
  static Param Bool(bool v);
  static Param Null();  // NULL, of whatever type the statement needs
  static Param Bytes(std::string_view b);
  static Param Text(std::string_view t);

 private:
  friend class Conn;
  Param() = default;
  unsigned int type_ = 0;  // an Oid (0: NULL, unknown type)
  bool null_ = false;
  std::string owned_;  // a bigint's or a double's 8 big-endian bytes, a bool's byte
  std::string_view data_;
};

class Rows {
 public:
  Rows() = default;
  explicit Rows(PGresult* r) : r_(r) {}
  int size() const { return r_ ? PQntuples(r_.get()) : 0; }
  // The command tag ("COMMIT", "ROLLBACK", "INSERT 0 1", ...).
  std::string_view command() const { return r_ ? PQcmdStatus(r_.get()) : ""; }
  bool IsNull(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }
  int64_t Int(int row, int col) const;             // a bigint column
  std::string_view Bytes(int row, int col) const;  // bytea or text, as stored

 private:
  friend class Conn;
  struct Clear {
    void operator()(PGresult* r) const { PQclear(r); }
  };
  std::unique_ptr<PGresult, Clear> r_;
};

class Conn {
 public:
  // Connects with a libpq connection string ("postgresql://user@host:port/db?..." or
  // "host=... dbname=..."): ENETWORK when the server cannot be reached or refuses.
  static Result<std::unique_ptr<Conn>> Connect(const std::string& conninfo);
  ~Conn();
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Runs one statement with its parameters ($1, $2, ...); rows in binary.
  Result<Rows> Exec(const char* sql, std::initializer_list<Param> params = {});
  Result<Rows> Exec(const std::string& sql, const std::vector<Param>& params);
  // Runs one statement without parameters; rows as text (what psql shows).
  Result<Rows> Query(const std::string& sql);
  // Runs statements without parameters (several, separated by ';').
  Status ExecScript(const char* sql);
  // Runs `copy` (COPY ... FROM STDIN) with `data`, in the COPY's text format, as its input.
  Status CopyIn(const std::string& copy, std::string_view data);
  // The socket to poll for notifications (LISTEN), and what arrived: their count, their
  // payloads dropped (the store re-reads its log). EIO when the connection broke.
  int socket() const { return PQsocket(conn_); }
  Result<int> TakeNotifications();
  bool ok() const { return PQstatus(conn_) == CONNECTION_OK; }
  // The SQLSTATE of the last failed statement ("" if it had none).
  const std::string& last_sqlstate() const { return last_sqlstate_; }

 private:
  explicit Conn(PGconn* c) : conn_(c) {}
  Result<Rows> Run(const char* sql, const Param* params, size_t count);
  Status Error(std::string_view what, const PGresult* r) const;
  PGconn* conn_;
  mutable std::string last_sqlstate_;
};

// The connection in `conn`, made anew from `url` when there is none or it broke.
Result<Conn*> Reconnected(std::unique_ptr<Conn>* conn, const std::string& url);

// BEGIN (READ COMMITTED) ... COMMIT on a connection; rolled back by the destructor unless committed
// (a failed statement has aborted it anyway).
class Txn {
 public:
  explicit Txn(Conn* db) : db_(db) {}
  ~Txn();
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  // READ COMMITTED, or REPEATABLE READ (one snapshot for every statement).
  Status Begin(bool repeatable_read = false);
  Status Commit();
  // Another connection, for a Begin that failed on a broken one (REQUIRES: not begun).
  void Rebind(Conn* db) { db_ = db; }

 private:
  Conn* db_;
  bool open_ = false;
};

}  // namespace cairn::server::pg

#endif  // CAIRN_SERVER_PG_PG_H_
