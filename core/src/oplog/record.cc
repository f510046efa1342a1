#include "oplog/record.h"

#include <cmath>
#include <iterator>

#include "base/coding.h"
#include "base/strings.h"
#include "oplog/validate.h"
#include "oplog/value_codec.h"

namespace cairn {

Status ValidateStreamName(std::string_view name) {
  Status s = ValidateCollectionName(name);
  if (!s.ok()) {
    // The rules are the collection names'; the message names what was given.
    std::string m = s.message();
    if (m.rfind("collection", 0) == 0) m.replace(0, 10, "stream");
    return Status::Invalid(m);
  }
  return Status::OK();
}

Status ValidateStreamFieldName(std::string_view name) {
  Status s = ValidateFieldName(name);
  if (!s.ok() && !EqualsIgnoreCase(name, "key")) return s;
  for (const char* column : kStreamColumns) {
    if (EqualsIgnoreCase(name, column)) {
      return Status::Invalid("field name '" + std::string(name) +
                             "' is reserved in streams (a column of every stream table)");
    }
  }
  return Status::OK();
}

Status ValidateRecord(const Fields& fields) {
  if (fields.empty()) return Status::Invalid("a record needs at least one field");
  for (auto it = fields.begin(); it != fields.end(); ++it) {
    const auto& [name, value] = *it;
    CAIRN_RETURN_IF_ERROR(ValidateStreamFieldName(name));
    // Records have a few fields: pairwise beats building a set of lowercase copies.
    for (auto other = std::next(it); other != fields.end(); ++other) {
      if (EqualsIgnoreCase(name, other->first)) {
        return Status::Invalid("fields '" + name + "' and '" + other->first +
                               "' differ only in case (a record's fields share columns, whose "
                               "names ignore case)");
      }
    }
    if (value.type() == ValueType::kString && !IsValidUtf8(value.as_string())) {
      return Status::Invalid("field '" + name + "' is not valid UTF-8");
    }
    if (value.type() == ValueType::kDouble && !std::isfinite(value.as_double())) {
      return Status::Invalid("field '" + name + "' is not a finite number");
    }
  }
  return Status::OK();
}

void EncodeRecord(const Fields& fields, std::string* dst) {
  PutVarint(dst, fields.size());
  for (const auto& [name, value] : fields) {
    PutLengthPrefixed(dst, name);
    PutValue(dst, value);
  }
}

Status DecodeRecord(std::string_view body,
                    const std::function<void(std::string_view, Value&&)>& fn) {
  Reader r(reinterpret_cast<const uint8_t*>(body.data()), body.size());
  uint64_t n = 0;
  if (!r.GetVarint(&n) || n > body.size()) return Status::Corrupt("malformed record");
  for (uint64_t i = 0; i < n; i++) {
    std::string_view name;
    Value v;
    if (!GetLengthPrefixed(&r, &name) || !GetValue(&r, /*check_utf8=*/false, &v)) {
      return Status::Corrupt("malformed record");
    }
    fn(name, std::move(v));
  }
  if (!r.done()) return Status::Corrupt("malformed record (trailing bytes)");
  return Status::OK();
}

const char* StreamPolicyName(StreamPolicy p) {
  return p == StreamPolicy::kDropOldest ? "drop_oldest" : "reject";
}

}  // namespace cairn
