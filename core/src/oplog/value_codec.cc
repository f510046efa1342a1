#include "oplog/value_codec.h"

#include <cstring>

#include "base/strings.h"

namespace cairn {

uint8_t TagOfValue(const Value& v) {
  switch (v.type()) {
    case ValueType::kNull:
      return kTagNull;
    case ValueType::kBool:
      return v.as_bool() ? kTagTrue : kTagFalse;
    case ValueType::kInt:
      return kTagInt;
    case ValueType::kDouble:
      return kTagDouble;
    case ValueType::kString:
      return kTagString;
    case ValueType::kBytes:
      return kTagBytes;
  }
  return kTagNull;
}

void PutValuePayload(std::string* dst, const Value& v) {
  switch (v.type()) {
    case ValueType::kInt:
      PutSignedVarint(dst, v.as_int());
      break;
    case ValueType::kDouble: {
      double d = v.as_double();
      uint64_t bits;
      std::memcpy(&bits, &d, 8);
      PutFixed64(dst, bits);
      break;
    }
    case ValueType::kString:
    case ValueType::kBytes:
      PutLengthPrefixed(dst, v.as_string());
      break;
    default:
      break;
  }
}

bool GetValuePayload(Reader* r, uint8_t tag, bool check_utf8, Value* out) {
  switch (tag) {
    case kTagNull:
      *out = Value::Null();
      return true;
    case kTagFalse:
    case kTagTrue:
      *out = Value::Bool(tag == kTagTrue);
      return true;
    case kTagInt: {
      int64_t i;
      if (!r->GetSignedVarint(&i)) return false;
      *out = Value::Int(i);
      return true;
    }
    case kTagDouble: {
      uint64_t bits;
      if (!r->GetFixed64(&bits)) return false;
      double d;
      std::memcpy(&d, &bits, 8);
      *out = Value::Double(d);
      return true;
    }
    case kTagString:
    case kTagBytes: {
      std::string_view s;
      if (!GetLengthPrefixed(r, &s)) return false;
      if (tag == kTagString && check_utf8 && !IsValidUtf8(s)) return false;
      *out = tag == kTagString ? Value::String(std::string(s)) : Value::Bytes(std::string(s));
      return true;
    }
    default:
      return false;
  }
}

}  // namespace cairn
