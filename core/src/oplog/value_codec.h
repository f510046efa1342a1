// Binary encoding of field values, shared by the op batch format (docs/protocol.md), the
// per-document cells blob (docs/storage-format.md) and WriteBatch.
//   tag: 0 null, 1 false, 2 true, 3 int, 4 double, 5 string, 6 bytes
//   payload: int = signed varint (ZigZag); double = 8 bytes little-endian IEEE 754;
//            string and bytes = varint length + bytes; nothing for the others.
#ifndef CAIRN_OPLOG_VALUE_CODEC_H_
#define CAIRN_OPLOG_VALUE_CODEC_H_

#include <string>

#include "base/coding.h"
#include "oplog/op.h"

namespace cairn {

enum ValueTag : uint8_t {
  kTagNull = 0,
  kTagFalse = 1,
  kTagTrue = 2,
  kTagInt = 3,
  kTagDouble = 4,
  kTagString = 5,
  kTagBytes = 6,
};

uint8_t TagOfValue(const Value& v);
void PutValuePayload(std::string* dst, const Value& v);
// Reads the payload of a value with `tag`. False on a short input, an unknown tag, or (when
// `check_utf8`) a string that is not UTF-8.
bool GetValuePayload(Reader* r, uint8_t tag, bool check_utf8, Value* out);

// Tag byte then payload.
inline void PutValue(std::string* dst, const Value& v) {
  dst->push_back(static_cast<char>(TagOfValue(v)));
  PutValuePayload(dst, v);
}
inline bool GetValue(Reader* r, bool check_utf8, Value* out) {
  uint8_t tag;
  return r->GetByte(&tag) && GetValuePayload(r, tag, check_utf8, out);
}

inline void PutLengthPrefixed(std::string* dst, std::string_view s) {
  PutVarint(dst, s.size());
  dst->append(s.data(), s.size());
}
inline bool GetLengthPrefixed(Reader* r, std::string_view* out) {
  uint64_t n;
  return r->GetVarint(&n) && n <= r->remaining() && r->GetBytes(static_cast<size_t>(n), out);
}

}  // namespace cairn

#endif  // CAIRN_OPLOG_VALUE_CODEC_H_
