#include "oplog/op.h"

#include <algorithm>
#include <cstring>

#include "base/strings.h"

namespace cairn {

std::string ReplicaId::Hex() const {
  return HexEncode(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

bool ReplicaId::FromHex(const std::string& hex, ReplicaId* out) {
  std::string raw;
  if (hex.size() != 32 || !HexDecode(hex, &raw)) return false;
  return FromBytes(raw.data(), raw.size(), out);
}

bool ReplicaId::FromBytes(const void* data, size_t len, ReplicaId* out) {
  if (len != 16) return false;
  std::memcpy(out->bytes.data(), data, 16);
  return true;
}

bool IsReservedReplicaId(const ReplicaId& id) {
  const auto all = [&id](uint8_t b) {
    return std::all_of(id.bytes.begin(), id.bytes.end(), [b](uint8_t x) { return x == b; });
  };
  return all(0x00) || all(0xff);
}

bool Value::operator==(const Value& o) const {
  if (type() != o.type()) return false;
  if (type() == ValueType::kDouble) {
    double a = as_double(), b = o.as_double();
    return std::memcmp(&a, &b, sizeof a) == 0;
  }
  return v_ == o.v_;
}

const char* OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kSet:
      return "set";
    case OpKind::kIncrement:
      return "inc";
    case OpKind::kDelete:
      return "del";
  }
  return "?";
}

}  // namespace cairn
