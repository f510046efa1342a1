#!/usr/bin/env bash
# A shared library exports exactly the API it is made for, and a self-contained one needs no
# SQLite, libuv or mbedTLS library at run time.
#   check_exports.sh READELF LIBRARY REGEX [self-contained]
# REGEX (extended) must match every exported (defined, global) dynamic symbol.
set -euo pipefail
readelf=$1 lib=$2 regex=$3 mode=${4:-}
fail=0
exports=$("$readelf" --dyn-syms --wide "$lib" |
          awk '$1 ~ /^[0-9]+:$/ && $5 != "LOCAL" && $7 != "UND" && $8 != "" && $4 != "SECTION" && $4 != "FILE" { sub(/@.*/, "", $8); print $8 }' |
          sort -u)
count=$(printf '%s\n' "$exports" | grep -c . || true)
if [ "$count" -eq 0 ]; then echo "FAIL: $lib exports nothing"; fail=1; fi
stray=$(printf '%s\n' "$exports" | grep -Ev "$regex" || true)
if [ -n "$stray" ]; then
  echo "FAIL: $lib exports symbols outside /$regex/:"; printf '%s\n' "$stray" | head -20; fail=1
fi
if [ "$mode" = self-contained ]; then
  needed=$("$readelf" -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  bad=$(printf '%s\n' "$needed" | grep -E 'sqlite|libuv|mbed' || true)
  if [ -n "$bad" ]; then echo "FAIL: $lib needs $bad at run time"; fail=1; fi
fi
[ $fail -eq 0 ] && echo "OK: $lib exports $count symbols, all /$regex/${mode:+, $mode}"
exit $fail
