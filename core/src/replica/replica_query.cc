// cairn::Replica: the SQL query gateway (read-only SQL over the materialized tables,
// docs/storage-format.md).
#include "replica/replica.h"
#include "replica/replica_locked.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "base/coding.h"
#include "base/killpoint.h"
#include "base/strings.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"

namespace cairn {

// Denies everything a read-only query has no business doing.
static int QueryAuthorizer(void*, int action, const char*, const char*, const char*, const char*) {
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

Status Replica::Query(const std::string& sql, const std::vector<Value>& params,
                      const std::function<Status(const std::string&)>& row) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  sqlite3* db = store_->db()->raw();
  sqlite3_stmt* raw = nullptr;
  const char* tail = nullptr;
  sqlite3_set_authorizer(db, QueryAuthorizer, nullptr);
  int rc = sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &raw, &tail);
  sqlite3_set_authorizer(db, nullptr, nullptr);
  store::Stmt stmt(store_->db(), raw);
  if (rc == SQLITE_AUTH) {
    return Status(Code::kEREADONLY, "query must be a read-only SELECT: " +
                                        std::string(sqlite3_errmsg(db)));
  }
  if (rc != SQLITE_OK) return store_->db()->Error("query", rc);
  if (raw == nullptr) return Status::Invalid("empty query");
  for (; tail && *tail; tail++) {
    if (!std::isspace(static_cast<unsigned char>(*tail)) && *tail != ';') {
      return Status::Invalid("query must be a single statement");
    }
  }
  if (!sqlite3_stmt_readonly(raw)) {
    return Status(Code::kEREADONLY, "query must be a read-only SELECT");
  }
  if (static_cast<size_t>(sqlite3_bind_parameter_count(raw)) != params.size()) {
    return Status::Invalid("the query has " + std::to_string(sqlite3_bind_parameter_count(raw)) +
                           " parameters, " + std::to_string(params.size()) + " given");
  }
  for (size_t i = 0; i < params.size(); i++) {
    store::BindSqlValue(&stmt, static_cast<int>(i) + 1, params[i]);  // as the tables hold them
  }
  int n = stmt.ColumnCount();
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool has, stmt.Step());
    if (!has) break;
    Json obj = Json::object();
    for (int i = 0; i < n; i++) {
      Json& v = obj[stmt.ColumnName(i)];
      switch (stmt.ColumnType(i)) {
        case SQLITE_INTEGER:
          v = stmt.Int(i);
          break;
        case SQLITE_FLOAT:
          v = stmt.Double(i);
          break;
        case SQLITE_TEXT:
          v = std::string(stmt.Text(i));
          break;
        case SQLITE_BLOB:
          v = ValueToJson(Value::Bytes(std::string(stmt.Blob(i))));
          break;
        default:
          v = nullptr;
      }
    }
    std::string line;
    try {
      line = CanonicalJson(obj);
    } catch (const Json::exception&) {
      return Status::Invalid("query result holds text that is not UTF-8");
    }
    CAIRN_RETURN_IF_ERROR(row(line));
  }
  return Status::OK();
}

}  // namespace cairn
