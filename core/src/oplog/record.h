// Telemetry stream records (docs/storage-format.md "Streams"): a record is an object of
// fields, stored and sent without merge. Its local encoding (the body kept in the replica file):
//   varint field count, then per field (names in bytewise order): varint name length, name,
//   tagged value (oplog/value_codec.h).
#ifndef CAIRN_OPLOG_RECORD_H_
#define CAIRN_OPLOG_RECORD_H_

#include <functional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "oplog/op.h"

namespace cairn {

// Columns every server-side stream table has (docs/protocol.md "Streams"); no field may take
// their names, in any case.
constexpr const char* kStreamColumns[] = {"origin", "seq", "ts_ms", "received_ms"};

// Stream names follow the collection-name rules (docs/crdt-semantics.md "Data model"); fields the
// field-name rules, minus "key" (streams have no document key), plus the stream columns above.
Status ValidateStreamName(std::string_view name);
Status ValidateStreamFieldName(std::string_view name);
// A record's fields: at least one, names valid, no two names equal but for case (they would
// share a column), strings UTF-8, doubles finite.
Status ValidateRecord(const Fields& fields);
// The largest body a record may have (so that any record fits in a frame with room to spare).
constexpr size_t kMaxRecordBytes = 1u << 20;

// Appends the body of a record with `fields` (REQUIRES: ValidateRecord passed) to `dst`.
void EncodeRecord(const Fields& fields, std::string* dst);
// Calls fn(name, value) for each field of a body in order. Corrupt for a malformed body.
Status DecodeRecord(std::string_view body,
                    const std::function<void(std::string_view, Value&&)>& fn);

}  // namespace cairn

#endif  // CAIRN_OPLOG_RECORD_H_
