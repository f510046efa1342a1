#include "oplog/validate.h"

#include <cmath>
#include <string>

#include "base/strings.h"

namespace cairn {

static bool IsNameChar(char c, bool first) {
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_') return true;
  return !first && c >= '0' && c <= '9';
}

static Status ValidateName(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > 63) {
    return Status::Invalid(std::string(what) + " name must be 1 to 63 characters, got " +
                           std::to_string(name.size()));
  }
  for (size_t i = 0; i < name.size(); i++) {
    if (!IsNameChar(name[i], i == 0)) {
      return Status::Invalid(std::string(what) + " name '" + std::string(name) +
                             "' must match [A-Za-z_][A-Za-z0-9_]*");
    }
  }
  if (StartsWithIgnoreCase(name, "cairn")) {
    return Status::Invalid(std::string(what) + " name '" + std::string(name) +
                           "' is reserved (names may not start with 'cairn')");
  }
  return Status::OK();
}

Status ValidateCollectionName(std::string_view name) {
  CAIRN_RETURN_IF_ERROR(ValidateName("collection", name));
  if (StartsWithIgnoreCase(name, "sqlite_")) {
    return Status::Invalid("collection name '" + std::string(name) +
                           "' is reserved (SQLite reserves names starting with 'sqlite_')");
  }
  return Status::OK();
}

Status ValidateFieldName(std::string_view name) {
  CAIRN_RETURN_IF_ERROR(ValidateName("field", name));
  if (EqualsIgnoreCase(name, "key")) {
    return Status::Invalid("field name '" + std::string(name) +
                           "' is reserved (it is the document key column)");
  }
  return Status::OK();
}

Status ValidateKey(std::string_view key) {
  if (key.empty() || key.size() > kMaxKeyBytes) {
    return Status::Invalid("key must be 1 to 1024 bytes, got " + std::to_string(key.size()));
  }
  if (key.find('\0') != std::string_view::npos) return Status::Invalid("key contains a NUL byte");
  if (!IsValidUtf8(key)) return Status::Invalid("key is not valid UTF-8");
  return Status::OK();
}

Status ValidateValue(const Value& v) {
  if (v.type() == ValueType::kDouble && !std::isfinite(v.as_double())) {
    return Status::Invalid("double value is not finite");
  }
  if ((v.type() == ValueType::kString || v.type() == ValueType::kBytes) &&
      v.as_string().size() > kMaxValueBytes) {
    return Status::Invalid("value of " + std::to_string(v.as_string().size()) +
                           " bytes exceeds the limit of " + std::to_string(kMaxValueBytes));
  }
  if (v.type() == ValueType::kString && !IsValidUtf8(v.as_string())) {
    return Status::Invalid("string value is not UTF-8");
  }
  return Status::OK();
}

Status ValidateOp(const Op& op) {
  CAIRN_RETURN_IF_ERROR(ValidateCollectionName(op.collection));
  CAIRN_RETURN_IF_ERROR(ValidateKey(op.key));
  if (op.kind != OpKind::kDelete) CAIRN_RETURN_IF_ERROR(ValidateFieldName(op.field));
  if (op.kind == OpKind::kSet) CAIRN_RETURN_IF_ERROR(ValidateValue(op.value));
  return Status::OK();
}

}  // namespace cairn
