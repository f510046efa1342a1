// Operations: the unit of change, replication and merge (docs/crdt-semantics.md).
//
// An op's identity is (origin, seq): origin is the 128-bit id of the replica that made it, seq
// counts 1, 2, 3, ... per origin with no gaps. Ops are totally ordered by (hlc, origin bytes, seq);
// the larger op wins every conflict.
#ifndef CAIRN_OPLOG_OP_H_
#define CAIRN_OPLOG_OP_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "clock/hlc.h"

namespace cairn {

// A 128-bit replica id, compared as 16 bytes (memcmp order), shown as 32 lowercase hex chars.
struct ReplicaId {
  std::array<uint8_t, 16> bytes{};
  std::string Hex() const;
  std::string Bytes() const { return std::string(bytes.begin(), bytes.end()); }
  static bool FromHex(const std::string& hex, ReplicaId* out);
  static bool FromBytes(const void* data, size_t len, ReplicaId* out);
  bool operator==(const ReplicaId& o) const { return bytes == o.bytes; }
  bool operator!=(const ReplicaId& o) const { return bytes != o.bytes; }
  bool operator<(const ReplicaId& o) const { return bytes < o.bytes; }
};

// Ids no replica may have (docs/protocol.md "Replica ids"): all zero bytes (the "none" of ids) and
// all 0xff bytes (kept for the server's own uses). A replica refuses to be made with one; a server
// refuses a Hello carrying one, or its own id.
bool IsReservedReplicaId(const ReplicaId& id);

// The identity and order key of an op. A default OpId (hlc 0) is smaller than every real op and
// stands for "none".
struct OpId {
  Hlc hlc = 0;
  ReplicaId origin;
  uint64_t seq = 0;
  bool none() const { return hlc == 0 && seq == 0; }
  bool operator<(const OpId& o) const {
    return std::tie(hlc, origin, seq) < std::tie(o.hlc, o.origin, o.seq);
  }
  bool operator>(const OpId& o) const { return o < *this; }
  bool operator==(const OpId& o) const {
    return hlc == o.hlc && origin == o.origin && seq == o.seq;
  }
  bool operator!=(const OpId& o) const { return !(*this == o); }
};

// Field values. Bytes and strings are both std::string; which alternative holds it tells them
// apart (the alternatives are in ValueType's order, so the type is the variant's index: a Value
// is 40 bytes, and a document cache holds one per field).
enum class ValueType : uint8_t { kNull = 0, kBool = 1, kInt = 2, kDouble = 3, kString = 4, kBytes = 5 };

class Value {
 public:
  Value() = default;  // null
  static Value Null() { return Value(); }
  static Value Bool(bool b) { return Value(kAs, b); }
  static Value Int(int64_t i) { return Value(kAs, i); }
  static Value Double(double d) { return Value(kAs, d); }
  static Value String(std::string s) { return Value(kAs, std::move(s)); }
  static Value Bytes(std::string b) { return Value(kAs, BytesBox{std::move(b)}); }

  ValueType type() const { return static_cast<ValueType>(v_.index()); }
  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_double() const { return std::get<double>(v_); }
  const std::string& as_string() const {  // string or bytes
    return v_.index() == kBytesIndex ? std::get<BytesBox>(v_).b : std::get<std::string>(v_);
  }
  // Equality of type and content; doubles compare by bit pattern (so NaN == NaN, -0 != 0).
  bool operator==(const Value& o) const;
  bool operator!=(const Value& o) const { return !(*this == o); }

 private:
  struct BytesBox {
    std::string b;
    bool operator==(const BytesBox& o) const { return b == o.b; }
  };
  static constexpr size_t kBytesIndex = 5;
  struct As {};
  static constexpr As kAs{};
  template <class T>
  Value(As, T v) : v_(std::move(v)) {}
  std::variant<std::monostate, bool, int64_t, double, std::string, BytesBox> v_;
};
static_assert(static_cast<size_t>(ValueType::kBytes) == 5, "Value's alternatives follow ValueType");

enum class OpKind : uint8_t { kSet = 0, kIncrement = 1, kDelete = 2 };
const char* OpKindName(OpKind kind);  // "set", "inc", "del"

struct Op {
  OpId id;
  OpKind kind = OpKind::kSet;
  std::string collection;
  std::string key;
  std::string field;     // empty for kDelete
  Value value;           // kSet only
  int64_t delta = 0;     // kIncrement only
  // True when this op belongs to the same local transaction as the op before it from its origin
  // (seq - 1): transactions are applied atomically everywhere.
  bool continues_txn = false;
};

// A document's visible fields, by name (sorted bytewise).
using Fields = std::map<std::string, Value>;

// A local transaction a server refused, kept in the replica's rejected-ops table: one of its
// ops, why (the server's code and reason) and when it was learnt (docs/protocol.md "Refused ops").
struct RejectedOp {
  int64_t id = 0;
  Op op;
  std::string reason;
  int code = 0;
  int64_t at_ms = 0;
};

// The documents of one collection whose visible state a committed transaction changed (change
// listeners: docs/c-api.md).
struct ChangeSet {
  std::string collection;
  std::vector<std::string> keys;  // sorted, unique
  bool local = false;             // written by this replica (else received: sync, import)
};

}  // namespace cairn

#endif  // CAIRN_OPLOG_OP_H_
