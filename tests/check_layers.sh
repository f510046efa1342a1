#!/usr/bin/env bash
# The layer check: every `#include "MODULE/..."` in core/src/<module>/ must name the module
# itself or one its row of the table in docs/architecture.md "Layers" allows (`cairn` is the
# public headers, core/include/cairn). An include of any other module (an upward or sideways
# arrow), a module missing from the table, or a table that cannot be read fails the check.
#   check_layers.sh SOURCE_DIR            check the tree
#   check_layers.sh SOURCE_DIR --self-test  also show that an upward include is caught
set -euo pipefail
src="$1"
doc="$src/docs/architecture.md"
[ -f "$doc" ] || { echo "check_layers: no $doc"; exit 1; }

# module -> "allowed allowed ...", from the rows between the markers.
declare -A allowed
while IFS='|' read -r _ module deps _; do
  module="$(echo "$module" | tr -d ' `')"
  deps="$(echo "$deps" | tr -d '`' | tr ',' ' ')"
  case "$module" in ''|module|---*) continue ;; esac
  allowed[$module]="$deps"
done < <(sed -n '/<!-- layers:begin -->/,/<!-- layers:end -->/p' "$doc" | grep '^|')
[ "${#allowed[@]}" -gt 0 ] || { echo "check_layers: no layer table in $doc"; exit 1; }

check_tree() {
  local root="$1" bad=0 dir module file line target
  for dir in "$root"/core/src/*/; do
    module="$(basename "$dir")"
    if [ -z "${allowed[$module]+set}" ]; then
      echo "check_layers: core/src/$module is not in the table of docs/architecture.md \"Layers\""
      bad=1
      continue
    fi
    while IFS=: read -r file line target; do
      target="${target#*\"}"
      target="${target%%/*}"
      [ "$target" = "$module" ] && continue
      [ -d "$root/core/src/$target" ] || [ "$target" = cairn ] || continue  # not a module
      if ! grep -qw -- "$target" <<<" ${allowed[$module]} "; then
        echo "${file#"$root"/}:$line: $module may not include $target (docs/architecture.md \"Layers\")"
        bad=1
      fi
    done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"[A-Za-z0-9_]+/' "$dir" || true)
  done
  return "$bad"
}

if [ "${2:-}" = "--self-test" ]; then
  # A copy of the tree with one upward include (crdt, low, including the replica module) must
  # fail, naming the file and the arrow.
  tmp="$(mktemp -d /tmp/cairn-layers-XXXXXX)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/core" "$tmp/docs"
  cp -r "$src/core/src" "$tmp/core/"
  cp "$doc" "$tmp/docs/"
  printf '#include "replica/replica.h"\n' >>"$tmp/core/src/crdt/doc_state.cc"
  if out="$(check_tree "$tmp")"; then
    echo "check_layers: FAIL: an upward include (crdt -> replica) was not caught"
    exit 1
  fi
  grep -q "core/src/crdt/doc_state.cc:.*crdt may not include replica" <<<"$out" || {
    echo "check_layers: FAIL: the upward include was not named: $out"; exit 1; }
  echo "check_layers: an upward include is caught: $out"
fi
if ! check_tree "$src"; then
  echo "check_layers: FAILED"
  exit 1
fi
echo "check_layers: ${#allowed[@]} modules, every include follows docs/architecture.md \"Layers\""
