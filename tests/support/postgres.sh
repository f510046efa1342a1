#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests (the ctest fixture "postgres", tests/CMakeLists.txt)
# and the benchmarks: Debian's postgresql package, a cluster in DIR, listening on a Unix socket
# in DIR only (no TCP), trust authentication, database "cairn".
#   tests/support/postgres.sh start DIR   initdb (fresh) and start; prints the URL
#   tests/support/postgres.sh stop DIR    stop and remove DIR
# Run as root, the server runs as the postgres user (it refuses to run as root).
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop DIR}
dir=${2:?usage: postgres.sh start|stop DIR}
bindir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bindir" ]; then
  echo "postgres.sh: no /usr/lib/postgresql/*/bin: install Debian's postgresql package" >&2
  exit 1
fi
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
stop() {
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}
case "$cmd" in
  start)
    stop
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_pg "$bindir/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >/dev/null
    as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-k $dir -c listen_addresses= -p 5432 -c max_connections=300" start >/dev/null
    as_pg "$bindir/createdb" -h "$dir" -p 5432 -U postgres cairn
    echo "postgresql:///cairn?host=$dir&port=5432&user=postgres"
    ;;
  stop) stop ;;
  *) echo "usage: postgres.sh start|stop DIR" >&2; exit 2 ;;
esac
