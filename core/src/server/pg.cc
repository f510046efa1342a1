#include "server/pg.h"

#include <cstring>
#include <vector>

namespace cairn::server::pg {

namespace {

// Type Oids (pg_type.h; stable across PostgreSQL releases).
constexpr unsigned int kByteaOid = 17, kInt8Oid = 20, kTextOid = 25;

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
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (c == nullptr) return Status(Code::kENOMEM, "PostgreSQL: cannot allocate a connection");
  std::unique_ptr<Conn> conn(new Conn(c));
  if (PQstatus(c) != CONNECTION_OK) {
    return Status(Code::kENETWORK, "PostgreSQL: cannot connect: " + Trimmed(PQerrorMessage(c)));
  }
  // Notices (e.g. "relation already exists, skipping") are not errors: not printed.
  PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);
  return conn;
}

Conn::~Conn() { PQfinish(conn_); }

Status Conn::Error(std::string_view what, const PGresult* r) const {
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  std::string message = "PostgreSQL: " + std::string(what) + ": " +
                        Trimmed(r ? PQresultErrorMessage(r) : PQerrorMessage(conn_));
  if (PQstatus(conn_) != CONNECTION_OK) return Status(Code::kENETWORK, message);
  if (state != nullptr) {
    // Class 08: connection exception; 40001 / 40P01: serialization failure, deadlock (a retry
    // succeeds); 53: insufficient resources; 57P: the server shutting down.
    if (std::strncmp(state, "08", 2) == 0 || std::strncmp(state, "57P", 3) == 0) {
      return Status(Code::kENETWORK, message);
    }
    if (std::strcmp(state, "40001") == 0 || std::strcmp(state, "40P01") == 0) {
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
  std::vector<unsigned int> types;
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  for (const Param& p : params) {
    types.push_back(p.type_);
    std::string_view v = p.type_ == kInt8Oid ? std::string_view(p.owned_) : p.data_;
    values.push_back(v.data());
    lengths.push_back(static_cast<int>(v.size()));
    formats.push_back(1);
  }
  Rows rows(PQexecParams(conn_, sql, static_cast<int>(params.size()), types.data(),
                         values.data(), lengths.data(), formats.data(), /*resultFormat=*/1));
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

std::string QuoteIdent(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace cairn::server::pg
