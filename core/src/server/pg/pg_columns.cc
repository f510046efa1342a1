#include "server/pg/pg_columns.h"

#include <charconv>

#include "base/strings.h"

namespace cairn::server::pg {

ColType TypeOf(const Value& v) {
  switch (v.type()) {
    case ValueType::kNull:
      return ColType::kNone;
    case ValueType::kBool:
      return ColType::kBool;
    case ValueType::kInt:
      return ColType::kBigint;
    case ValueType::kDouble:
      return ColType::kDouble;
    case ValueType::kString:
      return ColType::kText;
    case ValueType::kBytes:
      return ColType::kBytea;
  }
  return ColType::kText;
}

ColType Join(ColType a, ColType b) {
  if (a == ColType::kNone || a == b) return b;
  if (b == ColType::kNone) return a;
  if ((a == ColType::kBigint && b == ColType::kDouble) ||
      (a == ColType::kDouble && b == ColType::kBigint)) {
    return ColType::kDouble;
  }
  return ColType::kText;
}

const char* SqlType(ColType t) {
  switch (t) {
    case ColType::kBool:
      return "boolean";
    case ColType::kBigint:
      return "bigint";
    case ColType::kDouble:
      return "double precision";
    case ColType::kBytea:
      return "bytea";
    default:
      return "text";
  }
}

ColType FromSqlType(std::string_view t) {
  if (t == "boolean") return ColType::kBool;
  if (t == "bigint") return ColType::kBigint;
  if (t == "double precision") return ColType::kDouble;
  if (t == "bytea") return ColType::kBytea;
  return ColType::kText;
}

Param ToParam(const Value& v, ColType t, std::deque<std::string>* arena) {
  if (v.type() == ValueType::kNull) return Param::Null();
  if (t == ColType::kText) {
    if (v.type() == ValueType::kString) return Param::Text(v.as_string());
    arena->push_back(TextOf(v, t));
    return Param::Text(arena->back());
  }
  switch (v.type()) {
    case ValueType::kBool:
      return Param::Bool(v.as_bool());
    case ValueType::kInt:
      return t == ColType::kDouble ? Param::Double(static_cast<double>(v.as_int()))
                                   : Param(v.as_int());
    case ValueType::kDouble:
      return Param::Double(v.as_double());
    case ValueType::kBytes:
      return Param::Bytes(v.as_string());
    default:
      return Param::Text(v.as_string());
  }
}

std::string TextOf(const Value& v, ColType t) {
  char buf[32];
  switch (v.type()) {
    case ValueType::kBool:
      return t == ColType::kText ? (v.as_bool() ? "true" : "false") : (v.as_bool() ? "t" : "f");
    case ValueType::kInt:
      return std::to_string(v.as_int());
    case ValueType::kDouble:
      // The shortest form that reads back the same, as PostgreSQL writes a double.
      return std::string(buf, std::to_chars(buf, buf + sizeof buf, v.as_double()).ptr);
    case ValueType::kBytes:
      return t == ColType::kBytea ? "\\x" + HexEncode(v.as_string()) : HexEncode(v.as_string());
    default:
      return v.as_string();
  }
}

void AppendCopyField(std::string* row, std::string_view text) {
  for (char c : text) {
    switch (c) {
      case '\\':
        *row += "\\\\";
        break;
      case '\t':
        *row += "\\t";
        break;
      case '\n':
        *row += "\\n";
        break;
      case '\r':
        *row += "\\r";
        break;
      default:
        *row += c;
    }
  }
}

std::string TextArray(const std::vector<const std::string*>& items) {
  std::string out = "{";
  for (const std::string* item : items) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (char c : *item) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

std::string WidenColumn(const std::string& column, ColType from, ColType to) {
  const std::string using_ =
      from == ColType::kBytea ? "encode(" + column + ", 'hex')" : column + "::" + SqlType(to);
  return "ALTER COLUMN " + column + " TYPE " + SqlType(to) + " USING " + using_;
}

}  // namespace cairn::server::pg
