// Small string helpers shared by the core: hex, UTF-8 validation and Cairn's name rules.
#ifndef CAIRN_BASE_STRINGS_H_
#define CAIRN_BASE_STRINGS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace cairn {

std::string HexEncode(std::string_view bytes);  // lowercase
// Decodes lowercase or uppercase hex; false on odd length or a non-hex digit.
bool HexDecode(std::string_view hex, std::string* out);

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
bool IsValidUtf8(std::string_view s);

// Collection and field names: [A-Za-z_][A-Za-z0-9_]{0,62}, not starting with "cairn" in any case;
// collection names also not with "sqlite_" (SQLite reserves such table names).
// Field names also may not be "key" in any case (the materialized tables' key column).
Status ValidateCollectionName(std::string_view name);
Status ValidateFieldName(std::string_view name);
// Document keys: UTF-8, 1 to 1024 bytes, no NUL byte.
Status ValidateKey(std::string_view key);
constexpr size_t kMaxKeyBytes = 1024;

// ASCII lowercase copy (names are ASCII by rule).
std::string AsciiLower(std::string_view s);
// ASCII case-insensitive comparisons, without a copy.
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix);

}  // namespace cairn

#endif  // CAIRN_BASE_STRINGS_H_
