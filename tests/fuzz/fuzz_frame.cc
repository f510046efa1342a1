// Fuzz target: one received frame's payload (what net::Conn hands to a session after the length
// prefix): the Verifier, then the decoders of the bodies that carry packed records (OpBatch,
// StreamBatch, a snapshot chunk's batch). A bad input must end in an error Status, never in a
// crash, a sanitizer report or a hang.
#include <cstddef>
#include <cstdint>
#include <string>

#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "protocol/stream_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cairn;
  const std::string payload(reinterpret_cast<const char*>(data), size);
  auto frame = protocol::VerifyFrame(payload, {});
  if (!frame.ok()) return 0;
  auto ignore = [](const auto&) { return Status::OK(); };
  const wire::Frame& f = *frame.value();
  if (const auto* b = f.body_as_OpBatch()) (void)protocol::DecodeBatch(*b, {}, ignore);
  if (const auto* s = f.body_as_StreamBatch()) (void)protocol::DecodeStreamBatch(*s, 8192, ignore);
  if (const auto* c = f.body_as_SnapshotChunk()) {
    if (c->batch() != nullptr) (void)protocol::DecodeBatch(*c->batch(), {}, ignore);
  }
  return 0;
}
