// Cairn's JSON conventions (docs/cli.md "Canonical JSON"): canonical output (keys sorted bytewise,
// no spaces, integers as integers, doubles in round-trip form, bytes as {"$bytes":"<base64>"}) and
// the parsing of field objects given by users. JSON itself is nlohmann/json; base64 is mbedTLS's.
#ifndef CAIRN_OPLOG_JSON_CODEC_H_
#define CAIRN_OPLOG_JSON_CODEC_H_

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "base/base64.h"
#include "base/result.h"
#include "oplog/op.h"

namespace cairn {

using Json = nlohmann::json;  // std::map-backed: objects come out with keys sorted bytewise

Json ValueToJson(const Value& v);
// Invalid for arrays, objects other than {"$bytes": "..."}, unsigned integers above INT64_MAX,
// non-finite doubles, strings that are not UTF-8, or bad base64.
Result<Value> ValueFromJson(const Json& j);
Json FieldsToJson(const Fields& fields);
// Parses a JSON object of fields: at least one field, names valid, values as above
// (docs/crdt-semantics.md "Data model").
Result<Fields> ParseFieldsJson(const std::string& text);
// The same for a parsed JSON value.
Result<Fields> FieldsFromJson(const Json& j);
// Parses one JSON text; EINVAL when malformed or when an integer literal lies outside int64 and
// uint64 (which nlohmann/json would read as a double): such numbers are refused, never rounded.
Result<Json> ParseJson(std::string_view text);
// Canonical text of `j` (what every command-line tool prints).
std::string CanonicalJson(const Json& j);
// j[name] as a string; EINVAL naming `what` when it is missing or not one.
Result<std::string> JsonStringAt(const Json& j, const char* name, const std::string& what);
// The ops of one document's change (validated), as the HTTP API and the SQL inbox take it
// (docs/backend.md "Writing"): `kind` "set" with j's "fields", "inc" with "field" and "delta",
// "del"; EINVAL naming `what`.
Result<std::vector<Op>> DocOpsFromJson(const std::string& kind, const Json& j,
                                       const std::string& collection, const std::string& key,
                                       const std::string& what);
Json OpToJson(const Op& op);
// An op a server refused: OpToJson plus "error" (the code's name, e.g. "EPERM"), "reason" and
// "at_ms" (when it was recorded).
Json RejectedOpToJson(const Op& op, int code, const std::string& reason, int64_t at_ms);

}  // namespace cairn

#endif  // CAIRN_OPLOG_JSON_CODEC_H_
