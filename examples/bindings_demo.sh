#!/usr/bin/env bash
# Both bindings as apps use them: a cairn-server over TLS; the Java app (TodoApp.java) and the
# Swift app (examples/swift_todo) each write offline, start live sync and wait for the other's todo
# to arrive; then both replicas must have equal digests.
#   bindings_demo.sh SERVER JNI_LIB CAIRN_JAR APP_JAR SWIFT LIBCAIRN_DIR SCRATCH_DIR
set -euo pipefail
SERVER=$1 JNI=$2 JAR=$3 APP_JAR=$4 SWIFT=$5 LIBDIR=$6 SCRATCH=$7
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$(mktemp -d)
SERVER_PID=
cleanup() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi; rm -rf "$DIR"; }
trap cleanup EXIT

python3 "$HERE/make_dev_certs.py" "$DIR"
head -c 48 /dev/urandom | base64 > "$DIR/secret"
"$SERVER" --db "$DIR/server.db" --listen 127.0.0.1:0 --tls-cert "$DIR/server.pem" \
  --tls-key "$DIR/server.key" --token-secret "$DIR/secret" 2> "$DIR/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q listening "$DIR/server.log" && break; sleep 0.1; done
ADDR=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$DIR/server.log" | cut -d' ' -f3)

"$SWIFT" build --package-path "$HERE/swift_todo" --scratch-path "$SCRATCH" -Xcc -I"$HERE/../core/include" \
  -Xlinker -L"$LIBDIR" -Xlinker -rpath -Xlinker "$LIBDIR" >/dev/null

java -Dcairn.lib.path="$JNI" -cp "$JAR:$APP_JAR" TodoApp "$DIR/java.db" "$ADDR" "$DIR/ca.pem" \
  "$("$SERVER" token --token-secret "$DIR/secret" --sub java-user)" from-swift > "$DIR/java.out" 2>&1 &
JAVA_PID=$!
"$SCRATCH/debug/TodoApp" "$DIR/swift.db" "$ADDR" "$DIR/ca.pem" \
  "$("$SERVER" token --token-secret "$DIR/secret" --sub swift-user)" from-java > "$DIR/swift.out" 2>&1 &
SWIFT_PID=$!
status=0
wait "$JAVA_PID" || status=1
wait "$SWIFT_PID" || status=1
echo "--- Java app"; cat "$DIR/java.out"
echo "--- Swift app"; cat "$DIR/swift.out"
[ "$status" -eq 0 ] || { echo "an app failed"; exit 1; }
JD=$(grep '^digest' "$DIR/java.out" | cut -d' ' -f2)
SD=$(grep '^digest' "$DIR/swift.out" | cut -d' ' -f2)
if [ -n "$JD" ] && [ "$JD" = "$SD" ]; then
  echo "both apps converged: digest $JD"
else
  echo "the apps did not converge: java $JD swift $SD"
  exit 1
fi
