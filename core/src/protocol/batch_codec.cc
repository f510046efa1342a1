#include "protocol/batch_codec.h"

#include <cstring>

#include "base/coding.h"
#include "base/strings.h"
#include "oplog/validate.h"
#include "oplog/value_codec.h"
#include "protocol/frame.h"

namespace cairn::protocol {

namespace {
constexpr uint8_t kKindControl = 3;
constexpr uint8_t kFlagDoc = 0x20;
constexpr uint8_t kFlagCounter = 0x40;
constexpr uint8_t kFlagTxn = 0x80;

// BatchWireBytes' parts: a string in a table (length, terminator, padding, offset), an origin,
// a coverage entry, and the frame's and batch's own fields.
constexpr size_t kStringOverhead = 12;
constexpr size_t kOriginBytes = 16;
constexpr size_t kBatchFixedBytes = 256;
// The most a record adds besides its key and value: header, seq gap, time delta, counter,
// document reference, collection index, key length, field index, value length or payload,
// increment; and an origin switch with its base seq and time.
constexpr size_t kRecordOverhead = 1 + 10 + 10 + 10 + 5 + 5 + 5 + 5 + 10 + 10 + (1 + 5 + 10 + 10);
}  // namespace

size_t BatchWireBytes(const wire::OpBatch& batch) {
  size_t n = kBatchFixedBytes;
  if (batch.ops()) n += batch.ops()->size();
  if (batch.collections()) {
    for (const auto* c : *batch.collections()) n += c->size() + kStringOverhead;
  }
  if (batch.fields()) {
    for (const auto* f : *batch.fields()) n += f->size() + kStringOverhead;
  }
  if (batch.origins()) n += batch.origins()->size() * kOriginBytes;
  if (batch.covers()) n += batch.covers()->size() * kCoverWireBytes;
  return n;
}

size_t OpBytesBound(const Op& op) {
  size_t n = kRecordOverhead + op.key.size() + op.collection.size() + op.field.size() +
             2 * kStringOverhead + kOriginBytes + kCoverWireBytes;
  if (op.kind == OpKind::kSet &&
      (op.value.type() == ValueType::kString || op.value.type() == ValueType::kBytes)) {
    n += op.value.as_string().size();
  }
  return n;
}

size_t MergeBytesBound(const wire::OpBatch& batch) {
  // Per op: its document reference and field index, varints, may each take up to 4 bytes more
  // in a batch with more documents and names; per batch: its first op's seq gap and time delta
  // (up to 9 bytes each more than against its own base), and a coverage entry.
  return BatchWireBytes(batch) + size_t{8} * batch.op_count() + 18 + kCoverWireBytes;
}

bool BatchEncoder::CanMerge(const wire::OpBatch& batch, size_t max_ops, size_t max_bytes,
                            size_t reserved) const {
  return empty() || (op_count_ + batch.op_count() <= max_ops &&
                     wire_bytes() + reserved + MergeBytesBound(batch) <= max_bytes);
}

size_t BatchEncoder::wire_bytes() const {
  return kBatchFixedBytes + ops_.size() + names_bytes_ + origins_.size() * kOriginBytes +
         covers_.size() * kCoverWireBytes;
}

uint32_t BatchEncoder::Intern(std::vector<std::string>* table,
                              std::unordered_map<std::string, uint32_t>* map,
                              const std::string& s) {
  auto [it, inserted] = map->emplace(s, static_cast<uint32_t>(table->size()));
  if (inserted) {
    table->push_back(s);
    names_bytes_ += s.size() + kStringOverhead;
  }
  return it->second;
}

void BatchEncoder::Add(const Op& op) {
  auto [st, first] = origin_state_.try_emplace(op.id.origin);
  if (first) {
    st->second = OriginState{static_cast<uint32_t>(origins_.size()), op.id.seq - 1,
                             HlcPhysical(op.id.hlc)};
    origins_.push_back(op.id.origin);
  }
  OriginState& os = st->second;
  bool continues = op.continues_txn;
  if (current_origin_ != static_cast<int64_t>(os.index)) {
    ops_.push_back(static_cast<char>(kKindControl));
    PutVarint(&ops_, os.index);
    if (first) {
      PutVarint(&ops_, os.last_seq);
      PutVarint(&ops_, os.last_phys);
    }
    current_origin_ = os.index;
    continues = false;  // a transaction never spans an origin switch
  }
  if (op_count_ == 0 || op.collection != last_collection_) {
    last_coll_idx_ = Intern(&collections_, &collection_index_, op.collection);
    last_collection_ = op.collection;
  }
  const uint32_t coll = last_coll_idx_;
  bool same_doc = static_cast<int64_t>(coll) == last_doc_coll_ && op.key == last_doc_key_;

  uint8_t header = static_cast<uint8_t>(op.kind);
  if (op.kind == OpKind::kSet) header = static_cast<uint8_t>(header | (TagOfValue(op.value) << 2));
  if (!same_doc) header |= kFlagDoc;
  if (HlcCounter(op.id.hlc) != 0) header |= kFlagCounter;
  if (continues) header |= kFlagTxn;
  ops_.push_back(static_cast<char>(header));
  PutVarint(&ops_, op.id.seq - os.last_seq - 1);
  uint64_t phys = HlcPhysical(op.id.hlc);
  PutSignedVarint(&ops_, static_cast<int64_t>(phys - os.last_phys));
  if (header & kFlagCounter) PutVarint(&ops_, HlcCounter(op.id.hlc));
  if (!same_doc) {
    auto [it, inserted] = doc_index_[coll].emplace(op.key, docs_ + 1);
    if (inserted) {
      docs_++;
      PutVarint(&ops_, 0);
      PutVarint(&ops_, coll);
      PutVarint(&ops_, op.key.size());
      ops_ += op.key;
    } else {
      PutVarint(&ops_, it->second);
    }
    last_doc_coll_ = coll;
    last_doc_key_ = op.key;
  }
  if (op.kind != OpKind::kDelete) {
    if (op_count_ == 0 || op.field != last_field_) {
      last_field_idx_ = Intern(&fields_, &field_index_, op.field);
      last_field_ = op.field;
    }
    PutVarint(&ops_, last_field_idx_);
  }
  if (op.kind == OpKind::kIncrement) PutSignedVarint(&ops_, op.delta);
  if (op.kind == OpKind::kSet) PutValuePayload(&ops_, op.value);
  os.last_seq = op.id.seq;
  os.last_phys = phys;
  op_count_++;
}

void BatchEncoder::Cover(const ReplicaId& origin, uint64_t from, uint64_t through) {
  auto [it, first] = covers_.try_emplace(origin, from, through);
  if (!first) it->second.second = through;
}

void BatchEncoder::Finish(flatbuffers::FlatBufferBuilder* fbb, uint64_t cursor,
                          uint64_t batch_id) {
  auto batch = Build(fbb, cursor, batch_id);
  fbb->Finish(wire::CreateFrame(*fbb, wire::Body::OpBatch, batch.Union()),
              wire::FrameIdentifier());
}

flatbuffers::Offset<wire::OpBatch> BatchEncoder::Build(flatbuffers::FlatBufferBuilder* fbb,
                                                       uint64_t cursor, uint64_t batch_id) {
  doc_index_.clear();  // not needed to finish: free it before the copy into `fbb`
  std::vector<wire::ReplicaId> ids;
  ids.reserve(origins_.size());
  for (const auto& o : origins_) ids.push_back(ToWire(o));
  auto origins = fbb->CreateVectorOfStructs(ids);
  auto colls = fbb->CreateVectorOfStrings(collections_);
  auto fields = fbb->CreateVectorOfStrings(fields_);
  auto ops = fbb->CreateVector(reinterpret_cast<const uint8_t*>(ops_.data()), ops_.size());
  const auto count = static_cast<uint32_t>(op_count_);
  flatbuffers::Offset<flatbuffers::Vector<const wire::Coverage*>> covers;
  if (!covers_.empty()) {
    std::vector<wire::Coverage> v;
    for (const auto& [origin, range] : covers_) {
      v.emplace_back(ToWire(origin), range.first, range.second);
    }
    covers = fbb->CreateVectorOfStructs(v);
  }
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::ChannelMove>>> moves;
  if (!moves_.empty()) {
    std::vector<flatbuffers::Offset<wire::ChannelMove>> v;
    for (const ChannelMove& m : moves_) {
      v.push_back(wire::CreateChannelMove(
          *fbb, fbb->CreateString(m.collection), fbb->CreateString(m.key),
          fbb->CreateVectorOfStrings(m.before), fbb->CreateVectorOfStrings(m.after)));
    }
    moves = fbb->CreateVector(v);
  }
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::DocRef>>> leave;
  if (!leave_.empty()) {
    std::vector<flatbuffers::Offset<wire::DocRef>> v;
    for (const auto& [collection, key] : leave_) {
      v.push_back(wire::CreateDocRef(*fbb, fbb->CreateString(collection), fbb->CreateString(key)));
    }
    leave = fbb->CreateVector(v);
  }
  flatbuffers::Offset<wire::OpBatch> enter;
  if (enter_ && !enter_->empty()) enter = enter_->Build(fbb);
  const uint64_t leave_through = leave_.empty() ? 0 : leave_through_;
  *this = BatchEncoder();  // release the encoder's memory before the frame is used
  return wire::CreateOpBatch(*fbb, origins, colls, fields, ops, count, cursor, batch_id, covers,
                             moves, leave, enter, leave_through);
}

Result<std::vector<ChannelMove>> DecodeMoves(const wire::OpBatch& batch) {
  std::vector<ChannelMove> out;
  if (batch.moves() == nullptr) return out;
  auto strings = [](const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* v) {
    std::vector<std::string> s;
    if (v != nullptr) {
      for (flatbuffers::uoffset_t i = 0; i < v->size(); i++) {
        s.push_back(flatbuffers::GetString(v->Get(i)));
      }
    }
    return s;
  };
  for (const wire::ChannelMove* m : *batch.moves()) {
    const flatbuffers::String* collection = m != nullptr ? m->collection() : nullptr;
    const flatbuffers::String* key = m != nullptr ? m->key() : nullptr;
    if (collection == nullptr || key == nullptr) {
      return Status::Corrupt("op batch: a channel move without its document");
    }
    CAIRN_RETURN_IF_ERROR(ValidateCollectionName(collection->string_view()));
    CAIRN_RETURN_IF_ERROR(ValidateKey(key->string_view()));
    out.push_back(ChannelMove{std::string(collection->string_view()),
                              std::string(key->string_view()), strings(m->before()),
                              strings(m->after())});
  }
  return out;
}

void BatchEncoder::FinishFrame(std::string* out, uint64_t cursor, uint64_t batch_id) {
  flatbuffers::FlatBufferBuilder fbb(ops_.size() + 1024);
  Finish(&fbb, cursor, batch_id);
  AppendFrame(fbb, out);
}

Status DecodeBatch(const wire::OpBatch& batch, const DecodeLimits& limits,
                   const std::function<Status(const Op&)>& fn) {
  auto corrupt = [](const std::string& what) { return Status::Corrupt("op batch: " + what); };
  const auto* origins = batch.origins();
  const auto* colls = batch.collections();
  const auto* fields = batch.fields();
  const auto* blob = batch.ops();
  if (batch.op_count() > limits.max_ops) return corrupt("too many ops");
  std::vector<std::string> coll_names, field_names;
  if (colls) {
    for (const auto* s : *colls) {
      CAIRN_RETURN_IF_ERROR(ValidateCollectionName(s->string_view()));
      coll_names.emplace_back(s->str());
    }
  }
  if (fields) {
    for (const auto* s : *fields) {
      CAIRN_RETURN_IF_ERROR(ValidateFieldName(s->string_view()));
      field_names.emplace_back(s->str());
    }
  }
  struct OriginState {
    bool seen = false;
    uint64_t last_seq = 0;
    uint64_t last_phys = 0;
  };
  std::vector<OriginState> states(origins ? origins->size() : 0);
  std::vector<std::pair<uint32_t, std::string>> docs;
  Reader r(blob ? blob->data() : nullptr, blob ? blob->size() : 0);
  int64_t current = -1;
  int64_t prev_doc = -1;
  uint64_t count = 0;
  Op op;
  while (!r.done()) {
    uint8_t header;
    if (!r.GetByte(&header)) return corrupt("truncated record");
    uint8_t kind = header & 3;
    if (kind == kKindControl) {
      uint64_t idx;
      if ((header >> 2) != 0) return corrupt("unknown control record");
      if (!r.GetVarint(&idx) || idx >= states.size()) return corrupt("bad origin index");
      OriginState& os = states[static_cast<size_t>(idx)];  // idx < size(), checked
      if (!os.seen) {
        if (!r.GetVarint(&os.last_seq) || !r.GetVarint(&os.last_phys)) {
          return corrupt("truncated origin switch");
        }
        if (os.last_phys > kHlcMaxPhysical) return corrupt("bad base time");
        os.seen = true;
      }
      current = static_cast<int64_t>(idx);
      op.id.origin = FromWire(*origins->Get(static_cast<uint32_t>(idx)));
      continue;
    }
    if (current < 0) return corrupt("op before any origin");
    OriginState& os = states[static_cast<size_t>(current)];
    uint64_t gap, counter = 0;
    int64_t phys_delta;
    if (!r.GetVarint(&gap) || !r.GetSignedVarint(&phys_delta)) return corrupt("truncated op");
    if (gap >= UINT64_MAX - os.last_seq) return corrupt("seq overflow");
    uint64_t seq = os.last_seq + 1 + gap;
    uint64_t phys = os.last_phys + static_cast<uint64_t>(phys_delta);
    if (phys > kHlcMaxPhysical) return corrupt("timestamp out of range");
    if ((header & kFlagCounter) && (!r.GetVarint(&counter) || counter > kHlcCounterMask)) {
      return corrupt("bad logical counter");
    }
    if (header & kFlagDoc) {
      uint64_t ref;
      if (!r.GetVarint(&ref)) return corrupt("truncated document reference");
      if (ref == 0) {
        uint64_t coll, len;
        std::string_view key;
        if (!r.GetVarint(&coll) || coll >= coll_names.size()) return corrupt("bad collection");
        if (!r.GetVarint(&len) || len > kMaxKeyBytes || !r.GetBytes(static_cast<size_t>(len), &key)) {
          return corrupt("bad key");
        }
        CAIRN_RETURN_IF_ERROR(ValidateKey(key));
        docs.emplace_back(static_cast<uint32_t>(coll), std::string(key));
        prev_doc = static_cast<int64_t>(docs.size() - 1);
      } else {
        if (ref > docs.size()) return corrupt("bad document reference");
        prev_doc = static_cast<int64_t>(ref - 1);
      }
    } else if (prev_doc < 0) {
      return corrupt("op without a document");
    }
    const auto& doc = docs[static_cast<size_t>(prev_doc)];
    op.id.seq = seq;
    op.id.hlc = MakeHlc(phys, counter);
    op.kind = static_cast<OpKind>(kind);
    op.collection = coll_names[doc.first];
    op.key = doc.second;
    op.continues_txn = (header & kFlagTxn) != 0;
    op.field.clear();
    op.value = Value();
    op.delta = 0;
    uint8_t tag = static_cast<uint8_t>((header >> 2) & 7);
    if (op.kind != OpKind::kSet && tag != 0) return corrupt("value tag on a non-set op");
    if (op.kind != OpKind::kDelete) {
      uint64_t f;
      if (!r.GetVarint(&f) || f >= field_names.size()) return corrupt("bad field index");
      op.field = field_names[static_cast<size_t>(f)];
    }
    if (op.kind == OpKind::kIncrement && !r.GetSignedVarint(&op.delta)) {
      return corrupt("truncated delta");
    }
    if (op.kind == OpKind::kSet) {
      const bool utf8 = limits.values == ValueCheck::kUtf8;
      if (!GetValuePayload(&r, tag, utf8, &op.value)) return corrupt("bad value");
      if (limits.values == ValueCheck::kFull) CAIRN_RETURN_IF_ERROR(ValidateValue(op.value));
    }
    os.last_seq = seq;
    os.last_phys = phys;
    if (++count > batch.op_count()) return corrupt("more ops than announced");
    CAIRN_RETURN_IF_ERROR(fn(op));
  }
  if (count != batch.op_count()) return corrupt("fewer ops than announced");
  return Status::OK();
}

Result<std::vector<ChannelMove>> DecodeMovesFrame(std::string_view frame) {
  std::string payload(frame);
  CAIRN_ASSIGN_OR_RETURN(const wire::Frame* f, VerifyFrame(payload, {}));
  const wire::OpBatch* batch = f->body_as_OpBatch();
  if (batch == nullptr) return Status::Corrupt("a log entry is not a batch");
  return DecodeMoves(*batch);
}

Status DecodeBatchFrame(std::string_view frame, std::string_view what,
                        const std::function<Status(const Op&)>& fn) {
  return DecodeBatchFrame(frame, what, nullptr, fn);
}

Status DecodeBatchFrame(std::string_view frame, std::string_view what,
                        const std::function<Status(const wire::OpBatch&)>& first,
                        const std::function<Status(const Op&)>& fn) {
  std::string payload(frame);
  CAIRN_ASSIGN_OR_RETURN(const wire::Frame* f, VerifyFrame(payload, {}));
  const wire::OpBatch* batch = f->body_as_OpBatch();
  if (batch == nullptr) return Status::Corrupt(std::string(what) + " is not a batch");
  if (first) CAIRN_RETURN_IF_ERROR(first(*batch));
  DecodeLimits limits;
  limits.values = ValueCheck::kUtf8;
  return DecodeBatch(*batch, limits, fn);
}

}  // namespace cairn::protocol
