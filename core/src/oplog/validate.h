// The rules every op must meet wherever it was made or received: names of collections and
// fields, document keys, values, and the size limits that keep every change shippable in one
// frame (docs/crdt-semantics.md "Data model", docs/protocol.md). One place for the local write
// path, the import and sync paths of a replica, the server's push path and the batch decoder.
#ifndef CAIRN_OPLOG_VALIDATE_H_
#define CAIRN_OPLOG_VALIDATE_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/status.h"
#include "oplog/op.h"

namespace cairn {

constexpr size_t kMaxKeyBytes = 1024;            // a document key
constexpr size_t kMaxValueBytes = 4u << 20;      // a string or bytes value
constexpr size_t kMaxTransactionOps = 1u << 20;  // changes in one WriteBatch
// A transaction encoded as its own OpBatch frame: at most this, so that it always travels in one
// frame (docs/protocol.md "Limits"; every server's frame limit is larger).
constexpr size_t kMaxTransactionBytes = 8u << 20;
// No replica makes 2^62 ops; a larger seq in a file or a batch is damage (and would wrap
// counters).
constexpr uint64_t kMaxSeq = uint64_t{1} << 62;

// Collection and field names: [A-Za-z_][A-Za-z0-9_]{0,62}, not starting with "cairn" in any case;
// collection names also not with "sqlite_" (SQLite reserves such table names).
// Field names also may not be "key" in any case (the materialized tables' key column).
Status ValidateCollectionName(std::string_view name);
Status ValidateFieldName(std::string_view name);
// Document keys: UTF-8, 1 to 1024 bytes, no NUL byte.
Status ValidateKey(std::string_view key);
// Values: doubles finite, strings UTF-8, strings and bytes at most kMaxValueBytes.
Status ValidateValue(const Value& v);
// Names, key and value of an op received from elsewhere; EINVAL when one is bad.
Status ValidateOp(const Op& op);

}  // namespace cairn

#endif  // CAIRN_OPLOG_VALIDATE_H_
