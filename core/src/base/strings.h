// Small string helpers shared by the core: hex, UTF-8 validation, ASCII case. The name, key and
// value rules are in oplog/validate.h.
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

// `s` cut to at most `max_bytes`, at a character boundary when `s` is UTF-8.
std::string_view Utf8Prefix(std::string_view s, size_t max_bytes);

// ASCII lowercase copy (names are ASCII by rule).
std::string AsciiLower(std::string_view s);
// ASCII case-insensitive comparisons, without a copy.
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix);

// An SQL identifier in double quotes, inner quotes doubled: the same for SQLite and PostgreSQL.
std::string QuoteIdent(std::string_view name);

}  // namespace cairn

#endif  // CAIRN_BASE_STRINGS_H_
