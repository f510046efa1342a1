#include "protocol/frame.h"

#include <cstdint>

namespace cairn::protocol {

void AppendFrame(const flatbuffers::FlatBufferBuilder& fbb, std::string* out) {
  uint32_t n = fbb.GetSize();
  char prefix[4] = {static_cast<char>(n), static_cast<char>(n >> 8), static_cast<char>(n >> 16),
                    static_cast<char>(n >> 24)};
  out->append(prefix, 4);
  out->append(reinterpret_cast<const char*>(fbb.GetBufferPointer()), n);
}

Status ErrorFromWire(const wire::Error* error, std::string_view who) {
  if (error == nullptr) return Status(Code::kERROR, std::string(who) + ": (no error message)");
  return Status(CodeFromInt(error->code()),
                std::string(who) + ": " + (error->message() ? error->message()->str() : ""));
}

namespace {

// FlatBuffers' Verifier (Debian's 2.0.8) checks a vector's length field for alignment, not its
// structs: a hostile buffer can place a vector of SeqRange, Coverage or AckEntry (8-byte
// aligned) at 4 mod 8, and reading one is then undefined behaviour (a fuzz_import finding,
// tests/fuzz/corpus/import/regress-misaligned-seqrange). Every such vector is checked here.
// An empty one is fine wherever it sits (nothing is read from it), and the builder does not
// align empty vectors (PreAlign skips a length of 0): a valid frame can have one at 4 mod 8
// (the aarch64 suite met one in an export).
template <typename T>
bool Aligned(const flatbuffers::Vector<const T*>* v) {
  return v == nullptr || v->size() == 0 ||
         reinterpret_cast<uintptr_t>(v->Data()) % alignof(T) == 0;
}

bool StructVectorsAligned(const wire::Frame& frame) {
  switch (frame.body_type()) {
    case wire::Body::OpBatch:
      return Aligned(frame.body_as_OpBatch()->covers());
    case wire::Body::Ack:
      return Aligned(frame.body_as_Ack()->entries());
    case wire::Body::ExportHeader:
      return Aligned(frame.body_as_ExportHeader()->ranges());
    case wire::Body::SnapshotBegin:
      return Aligned(frame.body_as_SnapshotBegin()->watermarks());
    case wire::Body::SnapshotChunk: {
      const wire::OpBatch* batch = frame.body_as_SnapshotChunk()->batch();
      return batch == nullptr || Aligned(batch->covers());
    }
    default:
      return true;
  }
}

}  // namespace

Result<const wire::Frame*> VerifyFrame(const std::string& payload, const FrameLimits& limits) {
  if (payload.size() > limits.max_frame_bytes) {
    return Status::Corrupt("frame of " + std::to_string(payload.size()) +
                           " bytes exceeds the limit of " + std::to_string(limits.max_frame_bytes));
  }
  const auto* data = reinterpret_cast<const uint8_t*>(payload.data());
  if (payload.size() < 8 || !wire::FrameBufferHasIdentifier(data)) {
    return Status::Corrupt("not a Cairn frame (bad file identifier)");
  }
  flatbuffers::Verifier verifier(data, payload.size(), limits.max_depth, limits.max_tables);
  if (!wire::VerifyFrameBuffer(verifier)) {
    return Status::Corrupt("frame failed FlatBuffers verification");
  }
  const wire::Frame* frame = wire::GetFrame(data);
  if (frame->body_type() == wire::Body::NONE || frame->body() == nullptr) {
    return Status::Corrupt("frame has no message");
  }
  if (!StructVectorsAligned(*frame)) {
    return Status::Corrupt("frame has a misaligned vector of structs");
  }
  return frame;
}

Status FrameReader::Next(std::string* payload, bool* eof, std::string* raw) {
  *eof = false;
  unsigned char prefix[4];
  size_t got = std::fread(prefix, 1, 4, in_);
  if (got == 0 && std::feof(in_)) {
    *eof = true;
    return Status::OK();
  }
  if (got != 4) {
    if (std::ferror(in_)) return Status::IOError("read error");
    return Status::Corrupt("truncated frame length");
  }
  uint32_t n = uint32_t{prefix[0]} | uint32_t{prefix[1]} << 8 | uint32_t{prefix[2]} << 16 |
               uint32_t{prefix[3]} << 24;
  if (n > limits_.max_frame_bytes) {
    return Status::Corrupt("frame of " + std::to_string(n) + " bytes exceeds the limit of " +
                           std::to_string(limits_.max_frame_bytes));
  }
  payload->resize(n);
  if (n > 0 && std::fread(payload->data(), 1, n, in_) != n) {
    if (std::ferror(in_)) return Status::IOError("read error");
    return Status::Corrupt("truncated frame (expected " + std::to_string(n) + " bytes)");
  }
  if (raw != nullptr) {
    raw->assign(reinterpret_cast<const char*>(prefix), 4);
    raw->append(*payload);
  }
  return Status::OK();
}

}  // namespace cairn::protocol
