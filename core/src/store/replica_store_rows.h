// Rows of the replica file's op tables (cairn_pending_ops, cairn_superseded, cairn_rejected),
// shared by the files of ReplicaStore (replica_store*.cc). Internal to core/src/store.
#ifndef CAIRN_STORE_REPLICA_STORE_ROWS_H_
#define CAIRN_STORE_REPLICA_STORE_ROWS_H_

#include <cstdint>

#include "oplog/op.h"
#include "store/sqlite.h"

namespace cairn::store::rows {

// Binds `v` as (vtype, value) at columns i, i+1 (the pending and rejected tables).
void BindValue(Stmt* s, int i, const Value& v);
// Binds (owner, origin, seq, hlc, kind, collection, key, field, vtype, value, delta): a row of
// cairn_pending_ops (owner: the unit) or cairn_superseded (owner: the outranking seq).
void BindOpRow(Stmt* s, int64_t owner, int64_t origin, const Op& op);
// The value bound by BindValue at columns i, i+1.
Value ReadValue(const Stmt& s, int i);

}  // namespace cairn::store::rows

#endif  // CAIRN_STORE_REPLICA_STORE_ROWS_H_
