// Variable-length integer coding used by the op batch format (docs/protocol.md, "Op records").
// Unsigned LEB128 (7 bits a byte, low bits first, at most 10 bytes for 64 bits) and ZigZag for
// signed values, so small magnitudes of either sign take one byte.
#ifndef CAIRN_BASE_CODING_H_
#define CAIRN_BASE_CODING_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace cairn {

inline uint64_t ZigZagEncode(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
inline int64_t ZigZagDecode(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

inline void PutVarint(std::string* dst, uint64_t v) {
  while (v >= 0x80) {
    dst->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  dst->push_back(static_cast<char>(v));
}
inline void PutSignedVarint(std::string* dst, int64_t v) { PutVarint(dst, ZigZagEncode(v)); }
inline void PutFixed64(std::string* dst, uint64_t v) {
  char buf[8];
  for (int i = 0; i < 8; i++) buf[i] = static_cast<char>(v >> (8 * i));
  dst->append(buf, 8);
}

// Reads from a bounded buffer; every Get* returns false (and leaves the reader failed) when the
// input is short or malformed, so a decoder checks once at the end of a record.
class Reader {
 public:
  Reader(const uint8_t* data, size_t len) : p_(data), end_(data + len) {}
  bool done() const { return p_ == end_; }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }

  bool GetByte(uint8_t* out) {
    if (p_ == end_) return false;
    *out = *p_++;
    return true;
  }
  bool GetVarint(uint64_t* out) {
    uint64_t result = 0;
    for (unsigned shift = 0; shift < 64 && p_ != end_; shift += 7) {
      uint64_t byte = *p_++;
      if (shift == 63 && byte > 1) return false;  // more than 64 bits
      result |= (byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *out = result;
        return true;
      }
    }
    return false;
  }
  bool GetSignedVarint(int64_t* out) {
    uint64_t u;
    if (!GetVarint(&u)) return false;
    *out = ZigZagDecode(u);
    return true;
  }
  bool GetFixed64(uint64_t* out) {
    if (remaining() < 8) return false;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= static_cast<uint64_t>(p_[i]) << (8 * i);
    p_ += 8;
    *out = v;
    return true;
  }
  // A view of the next `n` bytes (valid while the buffer lives).
  bool GetBytes(size_t n, std::string_view* out) {
    if (remaining() < n) return false;
    *out = std::string_view(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

}  // namespace cairn

#endif  // CAIRN_BASE_CODING_H_
