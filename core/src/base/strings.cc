#include "base/strings.h"

#include <flatbuffers/util.h>

namespace cairn {

std::string HexEncode(std::string_view bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char ch : bytes) {
    auto c = static_cast<unsigned char>(ch);
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

static int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool HexDecode(std::string_view hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  std::string bytes;
  bytes.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = HexValue(hex[i]), lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    bytes.push_back(static_cast<char>(hi * 16 + lo));
  }
  *out = std::move(bytes);
  return true;
}

bool IsValidUtf8(std::string_view s) {
  // flatbuffers::FromUTF8 reads one code point and rejects overlongs and surrogates; it may look
  // one byte past a truncated sequence, so decode from a NUL-terminated copy.
  std::string copy(s);
  const char* p = copy.c_str();
  const char* end = p + copy.size();
  while (p < end) {
    if (flatbuffers::FromUTF8(&p) < 0) return false;
  }
  return p == end;
}

std::string AsciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

static char LowerAscii(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    if (LowerAscii(a[i]) != LowerAscii(b[i])) return false;
  }
  return true;
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

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

}  // namespace cairn
