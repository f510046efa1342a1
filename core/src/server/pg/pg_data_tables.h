// The documents' state as plain PostgreSQL tables, for a server whose store is PostgreSQL
// (docs/backend.md "SQL tables"): in the schema `cairn_data` (`<schema>_data` when the store's
// tables are in another schema than `public`), one table per collection, named as it, with a
// row per visible document:
//   key text PRIMARY KEY, cairn_cursor bigint NOT NULL (the log entry that last changed it),
//   then a column per field ever visible, typed and widened as pg_columns.h says (no field is
//   named `key` in any case, and none starts with "cairn": oplog/validate.h).
// The node that commits a log entry writes the rows of the documents it changed in the same
// transaction, from its copy's merged state at that entry, so the tables always show the state
// at a committed cursor (cairn_meta.data_cursor) and every node sees the same.
#ifndef CAIRN_SERVER_PG_PG_DATA_TABLES_H_
#define CAIRN_SERVER_PG_PG_DATA_TABLES_H_

#include <map>
#include <set>
#include <string>
#include <utility>

#include "base/result.h"
#include "server/pg/pg.h"
#include "server/pg/pg_columns.h"
#include "store/replica_store.h"

namespace cairn::server::pg {

using DocRefs = std::set<std::pair<std::string, std::string>>;  // (collection, key)

class DataTables {
 public:
  // The data schema of a store whose tables are in `store_schema` (current_schema()).
  static std::string SchemaFor(const std::string& store_schema);
  explicit DataTables(std::string schema) : schema_(std::move(schema)) {}
  const std::string& schema() const { return schema_; }

  // Makes the schema when missing, inside the transaction open on `db`, which holds the log's
  // head lock (so no other node makes it meanwhile).
  Status EnsureSchema(Conn* db);
  // Inside the transaction open on `db`, which holds the log's head lock (so no other node
  // changes these tables meanwhile): the rows of `docs` as `state` holds them now (cursor
  // `cursor`): replaced when visible, deleted otherwise. Tables and columns are made and
  // widened as needed (EBUSY when a reader's lock holds a table for over 2 s). After a
  // failure, the transaction must be rolled back.
  Status Write(Conn* db, store::ReplicaStore* state, const DocRefs& docs, uint64_t cursor);
  // Inside the transaction: every table emptied, then every visible document of `state`
  // written (cursor `cursor`).
  Status Rebuild(Conn* db, store::ReplicaStore* state, uint64_t cursor);

 private:
  struct Table {
    bool exists = false;
    std::map<std::string, ColType> columns;  // by field name (the column's)
  };
  Result<Table> ReadTable(Conn* db, const std::string& collection);
  // The table of `collection` with columns for `needs` (field -> type), made or widened.
  Result<Table> EnsureTable(Conn* db, const std::string& collection,
                            const std::map<std::string, ColType>& needs);
  Status WriteCollection(Conn* db, const std::string& collection,
                         const std::map<std::string, std::optional<Fields>>& docs, uint64_t cursor);

  std::string schema_;
};

}  // namespace cairn::server::pg

#endif  // CAIRN_SERVER_PG_PG_DATA_TABLES_H_
