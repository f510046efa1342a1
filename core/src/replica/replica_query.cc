// cairn::Replica: the SQL query gateway (read-only SQL over the materialized tables,
// docs/storage-format.md).
#include "replica/replica.h"
#include "replica/replica_locked.h"

#include "store/sqlite.h"

namespace cairn {

Status Replica::Query(const std::string& sql, const std::vector<Value>& params,
                      const std::function<Status(const std::string&)>& row) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  CAIRN_ASSIGN_OR_RETURN(store::Stmt stmt, store_->db()->PrepareReadOnlyQuery(sql, params.size()));
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
