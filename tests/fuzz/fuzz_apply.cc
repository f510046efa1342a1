// Fuzz target: a batch a server sent, applied to a replica (SyncAccess::ApplyServerBatch: the
// merge rules, the gap check, the materialized tables), after the same checks a client makes.
// The replica is in memory and holds one document per collection the seeds use, so merges meet
// existing state. Errors are fine; crashes, sanitizer reports and hangs are findings.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "protocol/frame.h"
#include "replica/replica.h"
#include "replica/sync_access.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cairn;
  const std::string payload(reinterpret_cast<const char*>(data), size);
  auto frame = protocol::VerifyFrame(payload, {});
  if (!frame.ok() || frame.value()->body_as_OpBatch() == nullptr) return 0;
  ReplicaOptions o;
  o.new_id = ReplicaId();
  o.new_id->bytes.fill(0x11);
  auto r = Replica::Open(":memory:", o);
  if (!r.ok()) return 0;
  Replica& replica = *r.value();
  (void)replica.Put("notes", "n1", {{"title", Value::String("seed")}});
  (void)replica.Increment("notes", "n1", "views", 2);
  ReplicaId server;
  server.bytes.fill(0x5e);
  auto applied = SyncAccess(replica).ApplyServerBatch(*frame.value()->body_as_OpBatch(), 1, server);
  if (applied.ok()) {
    (void)replica.Digest();  // the state it made can be read back whole
  }
  return 0;
}
