// Framing (docs/protocol.md "Frames"): a frame is a 4-byte little-endian length N, then N bytes
// holding one FlatBuffers `cairn.wire.Frame` with file identifier "CRN1". The same frames go over
// TCP/TLS and into export files. A receiver checks N against its limit before allocating and runs
// the FlatBuffers Verifier (depth and table limits set) before reading any field.
#ifndef CAIRN_PROTOCOL_FRAME_H_
#define CAIRN_PROTOCOL_FRAME_H_

#include <cstdint>
#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>

#include "base/result.h"
#include "cairn_generated.h"
#include "oplog/op.h"

namespace cairn::protocol {

// 2: coverage, snapshots, partial holds; 3: refusals; 4: telemetry streams.
constexpr uint16_t kProtocolVersion = 4;
// Features negotiated in Hello/Welcome (docs/protocol.md "Versions and compatibility"): a
// client sets those it has in Hello.features, the server answers those it has too, and the
// session uses those. A feature is an addition an older peer would misread, so it is used only
// with a peer that named it.
//   kFeatureHistory: the client folds its state at Welcome.history_horizon and takes a
//   snapshot with `replace` (docs/crdt-semantics.md "History horizon").
constexpr uint64_t kFeatureHistory = 1;
constexpr uint64_t kFeatures = kFeatureHistory;  // what this build has
constexpr uint32_t kDefaultMaxFrameBytes = 16u << 20;
// The frame limit a server may be given (docs/protocol.md "Limits"): at least the largest
// transaction (kMaxTransactionBytes, oplog/validate.h) plus room, so every transaction travels
// in one frame; at most 64 MiB, the most a client accepts (it adopts the Welcome's limit).
constexpr uint32_t kMinMaxFrameBytes = 9u << 20;
constexpr uint32_t kMaxMaxFrameBytes = 64u << 20;
// A batch of ops (a push, a log batch, a snapshot chunk) is kept this far below the frame
// limit: the room for the frame's own fields and the coverage it carries.
constexpr uint32_t kFrameReserveBytes = 64u << 10;
// The most bytes of ops a batch may carry under a frame limit (BatchWireBytes counts them).
constexpr size_t BatchBudget(uint32_t max_frame_bytes) {
  return max_frame_bytes > kFrameReserveBytes ? max_frame_bytes - kFrameReserveBytes : 0;
}

struct FrameLimits {
  uint32_t max_frame_bytes = kDefaultMaxFrameBytes;
  uint32_t max_depth = 16;
  uint32_t max_tables = 1u << 20;
};

inline wire::ReplicaId ToWire(const ReplicaId& id) {
  return wire::ReplicaId(flatbuffers::span<const uint8_t, 16>(id.bytes.data(), 16));
}
inline ReplicaId FromWire(const wire::ReplicaId& id) {
  ReplicaId out;
  std::copy(id.bytes()->begin(), id.bytes()->end(), out.bytes.begin());
  return out;
}

// Appends the length prefix and the finished builder's bytes to `out`.
void AppendFrame(const flatbuffers::FlatBufferBuilder& fbb, std::string* out);

// Finishes `fbb` as a Frame holding `body` and returns it with its length prefix.
template <typename T>
std::string FinishFrame(flatbuffers::FlatBufferBuilder* fbb, wire::Body type,
                        flatbuffers::Offset<T> body) {
  fbb->Finish(wire::CreateFrame(*fbb, type, body.Union()), wire::FrameIdentifier());
  std::string out;
  AppendFrame(*fbb, &out);
  return out;
}

// The Status a received Error message stands for: its code (CodeFromInt) and `who` + ": " + its
// message. A missing message is an empty one.
Status ErrorFromWire(const wire::Error* error, std::string_view who);

// Checks one frame's payload (the bytes after the length prefix). The returned pointer points
// into `payload`. Corrupt on any violation.
Result<const wire::Frame*> VerifyFrame(const std::string& payload, const FrameLimits& limits);

// Reads length-prefixed frames from a stdio stream (export files). Not thread-safe.
class FrameReader {
 public:
  FrameReader(std::FILE* in, FrameLimits limits) : in_(in), limits_(limits) {}
  // Reads the next frame into `payload` (without its prefix). Sets *eof at a clean end of file;
  // a torn prefix or payload is Corrupt. `raw` (optional) receives prefix + payload.
  Status Next(std::string* payload, bool* eof, std::string* raw = nullptr);

 private:
  std::FILE* in_;
  FrameLimits limits_;
};

}  // namespace cairn::protocol

#endif  // CAIRN_PROTOCOL_FRAME_H_
