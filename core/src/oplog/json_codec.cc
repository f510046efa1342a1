#include "oplog/json_codec.h"

#include <charconv>
#include <cmath>
#include <limits>

#include "base/base64.h"
#include "base/strings.h"
#include "oplog/validate.h"

namespace cairn {

Json ValueToJson(const Value& v) {
  switch (v.type()) {
    case ValueType::kNull:
      return nullptr;
    case ValueType::kBool:
      return v.as_bool();
    case ValueType::kInt:
      return v.as_int();
    case ValueType::kDouble:
      return v.as_double();
    case ValueType::kString:
      return v.as_string();
    case ValueType::kBytes:
      return Json{{"$bytes", Base64Encode(v.as_string())}};
  }
  return nullptr;
}

Result<Value> ValueFromJson(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null:
      return Value::Null();
    case Json::value_t::boolean:
      return Value::Bool(j.get<bool>());
    case Json::value_t::number_integer:
      return Value::Int(j.get<int64_t>());
    case Json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Status::Invalid("integer " + std::to_string(u) + " does not fit in int64");
      }
      return Value::Int(static_cast<int64_t>(u));
    }
    case Json::value_t::number_float: {
      double d = j.get<double>();
      if (!std::isfinite(d)) return Status::Invalid("number is not finite");
      return Value::Double(d);
    }
    case Json::value_t::string: {
      const auto& s = j.get_ref<const std::string&>();
      if (!IsValidUtf8(s)) return Status::Invalid("string value is not UTF-8");
      return Value::String(s);
    }
    case Json::value_t::object: {
      if (j.size() == 1 && j.contains("$bytes") && j["$bytes"].is_string()) {
        std::string raw;
        if (!Base64Decode(j["$bytes"].get<std::string>(), &raw)) {
          return Status::Invalid("$bytes is not valid base64");
        }
        return Value::Bytes(std::move(raw));
      }
      return Status::Invalid("unsupported value type: object (only {\"$bytes\":\"<base64>\"})");
    }
    case Json::value_t::array:
      return Status::Invalid("unsupported value type: array");
    default:
      return Status::Invalid("unsupported value type");
  }
}

Json FieldsToJson(const Fields& fields) {
  Json out = Json::object();
  for (const auto& [name, value] : fields) out[name] = ValueToJson(value);
  return out;
}

namespace {

// nlohmann/json reads an integer literal that fits neither int64 nor uint64 as a double, silently.
// Its SAX interface hands over each number's text: a "double" whose text has no fraction and no
// exponent was such an integer, and is refused (the caller says EINVAL) instead of being rounded.
class IntegerRangeCheck : public nlohmann::json_sax<Json> {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t& text) override {
    if (text.find_first_of(".eE") != string_t::npos) return true;
    out_of_range_ = text;
    return false;
  }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }
  const std::string& out_of_range() const { return out_of_range_; }

 private:
  std::string out_of_range_;
};

}  // namespace

Result<Json> ParseJson(std::string_view text) {
  IntegerRangeCheck check;
  Json::sax_parse(text, &check, Json::input_format_t::json, /*strict=*/true,
                  /*ignore_comments=*/false);
  if (!check.out_of_range().empty()) {
    return Status::Invalid("integer " + check.out_of_range().substr(0, 40) +
                           " does not fit in int64");
  }
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return Status::Invalid("malformed JSON: " + std::string(text.substr(0, 80)));
  }
  return j;
}

Result<Fields> ParseFieldsJson(const std::string& text) {
  CAIRN_ASSIGN_OR_RETURN(Json j, ParseJson(text));
  return FieldsFromJson(j);
}

Result<Fields> FieldsFromJson(const Json& j) {
  if (!j.is_object()) return Status::Invalid("expected a JSON object of fields");
  if (j.empty()) return Status::Invalid("expected at least one field");
  Fields fields;
  for (const auto& [name, value] : j.items()) {
    CAIRN_RETURN_IF_ERROR(ValidateFieldName(name));
    auto v = ValueFromJson(value);
    if (!v.ok()) return v.status().WithContext("field '" + name + "'");
    fields[name] = std::move(v).value();
  }
  return fields;
}

// Canonical text: nlohmann/json writes the structure, strings (escaping, UTF-8 checked) and
// integers; doubles go through std::to_chars, which C++17 defines as the shortest text that reads
// back to the same double (nlohmann's Grisu2 is sometimes a digit longer). A double whose text
// has no '.' or exponent gets ".0", so it reads back as a double.
static void AppendCanonical(const Json& j, std::string* out) {
  switch (j.type()) {
    case Json::value_t::object: {
      out->push_back('{');
      bool first = true;
      for (const auto& [key, value] : j.items()) {  // std::map: keys in bytewise order
        if (!first) out->push_back(',');
        first = false;
        *out += Json(key).dump(-1, ' ', false, Json::error_handler_t::strict);
        out->push_back(':');
        AppendCanonical(value, out);
      }
      out->push_back('}');
      return;
    }
    case Json::value_t::array: {
      out->push_back('[');
      for (size_t i = 0; i < j.size(); i++) {
        if (i > 0) out->push_back(',');
        AppendCanonical(j[i], out);
      }
      out->push_back(']');
      return;
    }
    case Json::value_t::number_float: {
      if (!std::isfinite(j.get<double>())) {  // only SQL results can be: JSON has no such number
        *out += "null";
        return;
      }
      char buf[32];
      auto r = std::to_chars(buf, buf + sizeof buf, j.get<double>());
      std::string_view text(buf, static_cast<size_t>(r.ptr - buf));
      *out += text;
      if (text.find_first_of(".e") == std::string_view::npos) *out += ".0";
      return;
    }
    default:
      *out += j.dump(-1, ' ', false, Json::error_handler_t::strict);
  }
}

std::string CanonicalJson(const Json& j) {
  std::string out;
  AppendCanonical(j, &out);
  return out;
}

Json OpToJson(const Op& op) {
  Json j = {{"origin", op.id.origin.Hex()},
            {"seq", op.id.seq},
            {"hlc", op.id.hlc},
            {"kind", OpKindName(op.kind)},
            {"collection", op.collection},
            {"key", op.key}};
  if (op.kind == OpKind::kSet) {
    j["field"] = op.field;
    j["value"] = ValueToJson(op.value);
  } else if (op.kind == OpKind::kIncrement) {
    j["field"] = op.field;
    j["delta"] = op.delta;
  }
  return j;
}

Json RejectedOpToJson(const Op& op, int code, const std::string& reason, int64_t at_ms) {
  Json j = OpToJson(op);
  j["error"] = CodeName(static_cast<Code>(code));
  j["reason"] = reason;
  j["at_ms"] = at_ms;
  return j;
}

Result<std::string> JsonStringAt(const Json& j, const char* name, const std::string& what) {
  if (!j.contains(name) || !j[name].is_string()) {
    return Status::Invalid(what + " needs \"" + name + "\", a string");
  }
  return j[name].get<std::string>();
}

Result<std::vector<Op>> DocOpsFromJson(const std::string& kind, const Json& j,
                                       const std::string& collection, const std::string& key,
                                       const std::string& what) {
  std::vector<Op> ops;
  Op op;
  op.collection = collection;
  op.key = key;
  if (kind == "set") {
    if (!j.contains("fields")) return Status::Invalid(what + " needs \"fields\"");
    auto fields = FieldsFromJson(j["fields"]);
    if (!fields.ok()) return fields.status().WithContext(what + ".fields");
    for (auto& [name, value] : *fields) {
      op.kind = OpKind::kSet;
      op.field = name;
      op.value = std::move(value);
      ops.push_back(op);
    }
  } else if (kind == "inc") {
    CAIRN_ASSIGN_OR_RETURN(op.field, JsonStringAt(j, "field", what));
    const Json* delta = j.contains("delta") ? &j["delta"] : nullptr;
    if (delta == nullptr || !delta->is_number_integer() ||
        (delta->is_number_unsigned() &&
         delta->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))) {
      return Status::Invalid(what + " needs \"delta\", a 64-bit signed integer");
    }
    op.kind = OpKind::kIncrement;
    op.delta = delta->get<int64_t>();
    ops.push_back(op);
  } else if (kind == "del") {
    op.kind = OpKind::kDelete;
    ops.push_back(op);
  } else {
    return Status::Invalid(what + ": \"op\" must be \"set\", \"inc\" or \"del\"");
  }
  for (const Op& o : ops) {
    Status valid = ValidateOp(o);
    if (!valid.ok()) return valid.WithContext(what);
  }
  return ops;
}

}  // namespace cairn
