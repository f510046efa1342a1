// Encoding of ops into an OpBatch and back (docs/protocol.md, "Op records").
//
// OpBatch.ops is a sequence of records. Each starts with a header byte:
//   bits 0-1  kind: 0 set, 1 increment, 2 delete, 3 control
//   control:  bits 2-7 subtype; 0 = origin switch: varint origin index, then, the first time
//             this origin appears in the batch, varint base seq and varint base physical ms.
//   ops:      bits 2-4 value tag (set only): 0 null, 1 false, 2 true, 3 int, 4 double,
//             5 string, 6 bytes; bit 5 (K) an explicit document reference follows; bit 6 (C) a
//             logical counter follows; bit 7 (T) same transaction as the previous record.
// Then: varint seq gap (seq = previous seq of this origin + 1 + gap), signed varint physical ms
// delta (from the previous op of this origin), [C] varint counter, [K] varint document reference
// (0 = new document: varint collection index, varint key length, key bytes; n > 0 = the n-th new
// document of this batch), field index (set and increment), the value (int: signed varint; double:
// 8 bytes little-endian IEEE 754; string and bytes: varint length + bytes), the delta (increment:
// signed varint). Varints are LEB128, signed ones ZigZag (base/coding.h).
#ifndef CAIRN_PROTOCOL_BATCH_CODEC_H_
#define CAIRN_PROTOCOL_BATCH_CODEC_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "base/status.h"
#include "cairn_generated.h"
#include "oplog/op.h"

namespace cairn::protocol {

// A document whose channels a log entry changed (OpBatch.moves; docs/sync-rules.md
// "Reading"): kept with the entry in the server's log, never sent to clients.
struct ChannelMove {
  std::string collection, key;
  std::vector<std::string> before, after;  // sorted
  bool operator==(const ChannelMove& o) const {
    return collection == o.collection && key == o.key && before == o.before && after == o.after;
  }
};

// The moves of a log entry's batch; ECORRUPT for a malformed one.
Result<std::vector<ChannelMove>> DecodeMoves(const wire::OpBatch& batch);
// The same from a log entry's frame (verified first).
Result<std::vector<ChannelMove>> DecodeMovesFrame(std::string_view frame);

// Collects ops into one OpBatch. Not thread-safe.
class BatchEncoder {
 public:
  void Add(const Op& op);
  size_t op_count() const { return op_count_; }
  size_t ops_bytes() const { return ops_.size(); }
  // What BatchWireBytes will count for the batch built from this encoder now.
  size_t wire_bytes() const;
  // Whether every op of `batch` may join this one (docs/protocol.md "Limits"): yes when this one
  // is empty (a batch by itself always goes), else when the ops stay within `max_ops` and
  // wire_bytes(), `reserved` bytes still to be added and MergeBytesBound(batch) within
  // `max_bytes`.
  bool CanMerge(const wire::OpBatch& batch, size_t max_ops, size_t max_bytes,
                size_t reserved = 0) const;
  bool empty() const { return op_count_ == 0; }
  // Declares that the batch accounts for `origin`'s seqs (from, through] (OpBatch.covers);
  // ranges of one origin declared in order extend each other.
  void Cover(const ReplicaId& origin, uint64_t from, uint64_t through);
  bool has_covers() const { return !covers_.empty(); }
  // The channel moves of a server log entry (OpBatch.moves).
  void SetMoves(std::vector<ChannelMove> moves) { moves_ = std::move(moves); }
  // Server -> client (OpBatch.leave, OpBatch.enter): a document that left the view, and the
  // ops of the documents that entered it.
  void AddLeave(const std::string& collection, const std::string& key) {
    leave_.emplace_back(collection, key);
  }
  // With leaves: the receiver's own ops up to `seq` were judged when they left
  // (OpBatch.leave_through).
  void SetLeaveThrough(uint64_t seq) { leave_through_ = seq; }
  BatchEncoder* enter() {
    if (!enter_) enter_ = std::make_unique<BatchEncoder>();
    return enter_.get();
  }
  bool has_view_changes() const { return !leave_.empty() || (enter_ && !enter_->empty()); }
  // Appends the batch as one length-prefixed Frame to `out` and resets the encoder.
  void FinishFrame(std::string* out, uint64_t cursor = 0, uint64_t batch_id = 0);
  // Finishes the batch into `fbb` (a Frame without its length prefix) and resets the encoder.
  void Finish(flatbuffers::FlatBufferBuilder* fbb, uint64_t cursor = 0, uint64_t batch_id = 0);
  // Builds the OpBatch table in `fbb` (to nest in another message) and resets the encoder.
  flatbuffers::Offset<wire::OpBatch> Build(flatbuffers::FlatBufferBuilder* fbb,
                                           uint64_t cursor = 0, uint64_t batch_id = 0);

 private:
  struct OriginState {
    uint32_t index;
    uint64_t last_seq;
    uint64_t last_phys;
  };
  uint32_t Intern(std::vector<std::string>* table, std::unordered_map<std::string, uint32_t>* map,
                  const std::string& s);

  std::string ops_;
  size_t op_count_ = 0;
  size_t names_bytes_ = 0;  // the name tables as BatchWireBytes counts them
  std::map<ReplicaId, std::pair<uint64_t, uint64_t>> covers_;
  std::vector<ChannelMove> moves_;
  std::vector<std::pair<std::string, std::string>> leave_;
  uint64_t leave_through_ = 0;
  std::unique_ptr<BatchEncoder> enter_;
  std::vector<ReplicaId> origins_;
  std::map<ReplicaId, OriginState> origin_state_;
  std::vector<std::string> collections_, fields_;
  std::unordered_map<std::string, uint32_t> collection_index_, field_index_;
  // Per collection index: key -> document reference (1-based, in order of first use).
  std::unordered_map<uint32_t, std::unordered_map<std::string, uint32_t>> doc_index_;
  uint32_t docs_ = 0;
  int64_t current_origin_ = -1;
  int64_t last_doc_coll_ = -1;  // the previous op's document
  std::string last_doc_key_;
  std::string last_collection_, last_field_;  // the previous op's names, resolved
  uint32_t last_coll_idx_ = 0, last_field_idx_ = 0;
};

// The size of a batch as the limits count it (docs/protocol.md "Limits"): its records, its name
// tables, origins and coverage, and a fixed allowance for the tables that hold them. At least
// the bytes of a frame carrying only this batch, so a batch within
// BatchBudget(limit) (protocol/frame.h) fits a frame of that limit with room to spare.
size_t BatchWireBytes(const wire::OpBatch& batch);
// What BatchWireBytes counts for one coverage entry (OpBatch.covers).
constexpr size_t kCoverWireBytes = 32;
// The most that adding `op` to any batch can add to its BatchWireBytes (a new origin, new names
// and a new document included): a sender that checks it before adding an op keeps the batch
// within a budget.
size_t OpBytesBound(const Op& op);
// The most that adding every op of `batch` to another batch can add to that one's
// BatchWireBytes: its own count, and a few bytes per op for indexes that grow in a larger batch
// (documents, names) and per batch for its first op's seq and time and its coverage.
size_t MergeBytesBound(const wire::OpBatch& batch);

// How the decoder checks values.
enum class ValueCheck {
  kFull,      // ValidateValue (finite doubles, UTF-8 strings, sizes): ops received from elsewhere
  kUtf8,      // strings UTF-8 only (ECORRUPT): frames this program stored after checking them
  kByCaller,  // none: the caller checks each value itself, to refuse less than the whole batch
              // (a push refuses the transaction)
};

struct DecodeLimits {
  uint32_t max_ops = 1u << 20;
  ValueCheck values = ValueCheck::kFull;  // names and keys are always checked
};

// Decodes and validates every record of `batch` in order, calling `fn` for each op. Stops at the
// first error: Corrupt for a malformed record, Invalid for a name, key or value that breaks the
// rules of docs/crdt-semantics.md "Data model", or whatever `fn` returns. Nothing is assumed about
// the batch beyond the Verifier having passed. With ValueCheck::kFull an op `fn` gets meets
// ValidateOp (with the other checks, values as `limits.values` says): the paths that receive
// ops check them here, once.
Status DecodeBatch(const wire::OpBatch& batch, const DecodeLimits& limits,
                   const std::function<Status(const Op&)>& fn);
// The same for an OpBatch frame kept as it was written (a log entry, an outbox row, a
// checkpoint part; no length prefix), whose ops were checked when they were received or
// written (ValueCheck::kUtf8): verified first; ECORRUPT naming `what` when it is not a batch.
Status DecodeBatchFrame(std::string_view frame, std::string_view what,
                        const std::function<Status(const Op&)>& fn);
// The same, calling `first` with the verified batch before any op is decoded: what it returns
// but OK is returned at once, nothing decoded (a sender checks what the batch would add).
Status DecodeBatchFrame(std::string_view frame, std::string_view what,
                        const std::function<Status(const wire::OpBatch&)>& first,
                        const std::function<Status(const Op&)>& fn);

}  // namespace cairn::protocol

#endif  // CAIRN_PROTOCOL_BATCH_CODEC_H_
