#include "protocol/stream_codec.h"

#include <set>

#include "base/coding.h"
#include "base/strings.h"
#include "oplog/record.h"
#include "oplog/value_codec.h"
#include "protocol/frame.h"

namespace cairn::protocol {

Status StreamEncoder::Add(uint64_t seq, int64_t ts_ms, std::string_view body) {
  if (count_ > 0 && seq <= last_seq_) {
    return Status::Invalid("stream records must be added in increasing seq order");
  }
  // Parsed whole first, so that a malformed body adds nothing.
  Reader r(reinterpret_cast<const uint8_t*>(body.data()), body.size());
  auto pos = [&] { return body.size() - r.remaining(); };
  uint64_t n = 0;
  bool ok = r.GetVarint(&n) && n <= body.size();
  scratch_.clear();
  for (uint64_t i = 0; ok && i < n; i++) {
    std::string_view name;
    Value v;
    ok = GetLengthPrefixed(&r, &name);
    const size_t start = pos();
    ok = ok && GetValue(&r, /*check_utf8=*/false, &v);
    // The tagged value is copied as it is: the local and the wire encodings share it.
    if (ok) scratch_.emplace_back(name, body.substr(start, pos() - start));
  }
  if (!ok || !r.done()) {
    return Status::Corrupt("malformed record body (stream " + stream_ + ", seq " +
                           std::to_string(seq) + ")");
  }
  if (count_ == 0) {
    first_seq_ = last_seq_ = seq;
    base_ts_ = last_ts_ = ts_ms;
    PutVarint(&records_, 0);
  } else {
    PutVarint(&records_, seq - last_seq_ - 1);
  }
  PutSignedVarint(&records_, static_cast<int64_t>(static_cast<uint64_t>(ts_ms) -
                                                  static_cast<uint64_t>(last_ts_)));
  PutVarint(&records_, n);
  for (const auto& [name, value] : scratch_) {
    // By lowercase name: a field spelled in another case in another record shares its index
    // (and the server's column); the batch names it as first spelled.
    name_ = AsciiLower(name);
    auto it = field_index_.find(name_);
    if (it == field_index_.end()) {
      it = field_index_.emplace(name_, static_cast<uint32_t>(fields_.size())).first;
      fields_.emplace_back(name);
    }
    PutVarint(&records_, it->second);
    records_.append(value.data(), value.size());
  }
  count_++;
  last_seq_ = seq;
  last_ts_ = ts_ms;
  return Status::OK();
}

void StreamEncoder::FinishFrame(std::string* out) const {
  flatbuffers::FlatBufferBuilder fbb(records_.size() + 256);
  auto name = fbb.CreateString(stream_);
  auto fields = fbb.CreateVectorOfStrings(fields_);
  auto records = fbb.CreateVector(reinterpret_cast<const uint8_t*>(records_.data()),
                                  records_.size());
  auto batch = wire::CreateStreamBatch(fbb, name, first_seq_, base_ts_, fields, records,
                                       static_cast<uint32_t>(count_));
  fbb.Finish(wire::CreateFrame(fbb, wire::Body::StreamBatch, batch.Union()),
             wire::FrameIdentifier());
  AppendFrame(fbb, out);
}

Status CheckStreamBatchHeader(const wire::StreamBatch& batch, uint32_t max_records) {
  if (batch.stream() == nullptr) return Status::Invalid("a stream batch without a stream name");
  CAIRN_RETURN_IF_ERROR(ValidateStreamName(batch.stream()->string_view()));
  if (batch.fields()) {
    std::set<std::string> seen;
    for (const auto* f : *batch.fields()) {
      CAIRN_RETURN_IF_ERROR(ValidateStreamFieldName(f->string_view()));
      if (!seen.insert(AsciiLower(f->string_view())).second) {
        return Status::Invalid("stream batch names field '" + f->str() + "' twice (ignoring case)");
      }
    }
  }
  if (batch.record_count() > max_records) {
    return Status::Invalid("stream batch of " + std::to_string(batch.record_count()) +
                           " records (at most " + std::to_string(max_records) + ")");
  }
  if (batch.first_seq() == 0 && batch.record_count() > 0) {
    return Status::Invalid("stream seqs start at 1");
  }
  return Status::OK();
}

Status DecodeStreamBatch(const wire::StreamBatch& batch, uint32_t max_records,
                         const std::function<Status(const StreamRecord&)>& fn) {
  CAIRN_RETURN_IF_ERROR(CheckStreamBatchHeader(batch, max_records));
  const uint32_t n_fields = batch.fields() ? batch.fields()->size() : 0;
  const uint8_t* data = batch.records() ? batch.records()->data() : nullptr;
  Reader r(data, batch.records() ? batch.records()->size() : 0);
  StreamRecord rec;
  uint64_t seq = batch.first_seq() - 1;
  uint64_t ts = static_cast<uint64_t>(batch.base_ts_ms());
  std::vector<bool> used(n_fields);
  for (uint32_t i = 0; i < batch.record_count(); i++) {
    uint64_t gap = 0, count = 0;
    int64_t delta = 0;
    if (!r.GetVarint(&gap) || !r.GetSignedVarint(&delta) || !r.GetVarint(&count)) {
      return Status::Corrupt("truncated stream record");
    }
    if (gap >= UINT64_MAX - seq) return Status::Corrupt("stream seq overflows");
    seq += gap + 1;
    ts += static_cast<uint64_t>(delta);
    if (count == 0 || count > n_fields) {
      return Status::Corrupt("stream record with " + std::to_string(count) + " fields (batch names " +
                             std::to_string(n_fields) + ")");
    }
    rec.seq = seq;
    rec.ts_ms = static_cast<int64_t>(ts);
    rec.fields.clear();
    std::fill(used.begin(), used.end(), false);
    for (uint64_t k = 0; k < count; k++) {
      uint64_t raw = 0;
      Value v;
      if (!r.GetVarint(&raw) || raw >= n_fields) return Status::Corrupt("bad stream field index");
      const auto idx = static_cast<uint32_t>(raw);  // < n_fields
      if (used[idx]) return Status::Corrupt("a stream record names a field twice");
      used[idx] = true;
      if (!GetValue(&r, /*check_utf8=*/true, &v)) {
        return Status::Corrupt("malformed stream value (or a string that is not UTF-8)");
      }
      rec.fields.emplace_back(idx, std::move(v));
    }
    CAIRN_RETURN_IF_ERROR(fn(rec));
  }
  if (!r.done()) return Status::Corrupt("trailing bytes after the stream records");
  return Status::OK();
}

Result<std::string> StreamBatchName(const wire::StreamBatch& batch, uint32_t max_records) {
  CAIRN_RETURN_IF_ERROR(CheckStreamBatchHeader(batch, max_records));
  const flatbuffers::String* name = batch.stream();
  if (batch.record_count() == 0 || name == nullptr) return std::string();  // (checked: named)
  return name->str();
}

}  // namespace cairn::protocol
