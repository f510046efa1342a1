// cairn::Replica: export and import files (docs/protocol.md "Export files").
#include "replica/replica.h"
#include "replica/replica_locked.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "base/coding.h"
#include "base/killpoint.h"
#include "base/sha256.h"
#include "base/strings.h"
#include "oplog/admission.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"

namespace cairn {

namespace {

// Export batches stay well below the frame limit: one op record is at most ~1.1 KiB of key plus
// its value, so the byte cap is checked after each op.
constexpr size_t kExportBatchOps = 1u << 16;
constexpr size_t kExportBatchBytes = 4u << 20;
constexpr uint16_t kExportFormatVersion = 1;

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Export / import (docs/protocol.md, "Export files")

Result<ExportStats> Replica::Export(const std::string& path, const VersionVector* since) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  {
    // A partial replica's receipts count ops of collections it skipped: a file from it would
    // tell the receiver it has ops it never gets.
    CAIRN_ASSIGN_OR_RETURN(store::SyncPosition pos, store_->GetSyncPosition());
    if (pos.subscriptions) {
      return Status::Invalid("this replica syncs only some collections (partial sync): it "
                             "cannot export; export from a replica that syncs everything");
    }
  }
  std::string tmp = path + ".tmp";
  File out(std::fopen(tmp.c_str(), "wb"));
  if (!out) return Status::IOError("cannot write " + tmp + ": " + std::strerror(errno));
  // On any failure the half-written temporary file goes away.
  struct RemoveTmp {
    const std::string& path;
    bool keep = false;
    ~RemoveTmp() {
      if (!keep) std::remove(path.c_str());
    }
  } remove_tmp{tmp};
  ExportStats stats;
  Sha256 sha;
  std::string buf;
  auto emit = [&]() -> Status {
    if (buf.empty()) return Status::OK();
    sha.Update(buf);
    stats.bytes += buf.size();
    if (std::fwrite(buf.data(), 1, buf.size(), out.get()) != buf.size()) {
      return Status::IOError("write to " + tmp + " failed");
    }
    buf.clear();
    return Status::OK();
  };
  // A read transaction: the header's ranges and the ops come from one snapshot.
  CAIRN_ASSIGN_OR_RETURN(auto txn, store::Txn::Begin(store_->db(), /*immediate=*/false));
  CAIRN_RETURN_IF_ERROR(store_->Refresh());
  std::vector<store::OriginInfo> origins = store_->Origins();
  {
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<wire::ReplicaId> ids;
    std::vector<wire::SeqRange> ranges;
    for (const auto& o : origins) {
      uint64_t from = 0;
      if (since) {
        auto it = since->find(o.id);
        if (it != since->end()) from = std::min(it->second, o.through);
      }
      // Every origin is listed, even with nothing new (from == through): `from` is what this
      // file assumes the receiver has, and the receiver checks all of it before applying.
      if (o.through == 0) continue;
      ranges.emplace_back(static_cast<uint32_t>(ids.size()), from, o.through);
      ids.push_back(protocol::ToWire(o.id));
    }
    wire::ReplicaId src = protocol::ToWire(id_);
    auto hdr = wire::CreateExportHeader(fbb, kExportFormatVersion, &src,
                                        clock_source_->NowMs(), fbb.CreateVectorOfStructs(ids),
                                        fbb.CreateVectorOfStructs(ranges), clock_->last());
    fbb.Finish(wire::CreateFrame(fbb, wire::Body::ExportHeader, hdr.Union()),
               wire::FrameIdentifier());
    protocol::AppendFrame(fbb, &buf);
    CAIRN_RETURN_IF_ERROR(emit());
  }
  protocol::BatchEncoder enc;
  Status st = store_->ForEachSurvivor([&](const Op& op) -> Status {
    if (since) {
      auto it = since->find(op.id.origin);
      if (it != since->end() && op.id.seq <= it->second) return Status::OK();
    }
    enc.Add(op);
    stats.ops++;
    if (enc.op_count() >= kExportBatchOps || enc.ops_bytes() >= kExportBatchBytes) {
      enc.FinishFrame(&buf);
      stats.batches++;
      return emit();
    }
    return Status::OK();
  });
  CAIRN_RETURN_IF_ERROR(st);
  if (!enc.empty()) {
    enc.FinishFrame(&buf);
    stats.batches++;
    CAIRN_RETURN_IF_ERROR(emit());
  }
  CAIRN_RETURN_IF_ERROR(txn->Commit());
  {
    std::string digest = sha.Finish();
    flatbuffers::FlatBufferBuilder fbb;
    auto end = wire::CreateExportEnd(
        fbb, static_cast<uint32_t>(stats.batches), stats.ops,
        fbb.CreateVector(reinterpret_cast<const uint8_t*>(digest.data()), digest.size()));
    fbb.Finish(wire::CreateFrame(fbb, wire::Body::ExportEnd, end.Union()), wire::FrameIdentifier());
    protocol::AppendFrame(fbb, &buf);
    stats.bytes += buf.size();
    if (std::fwrite(buf.data(), 1, buf.size(), out.get()) != buf.size()) {
      return Status::IOError("write to " + tmp + " failed");
    }
  }
  if (std::fflush(out.get()) != 0 || fsync(fileno(out.get())) != 0) {
    return Status::IOError("cannot flush " + tmp + ": " + std::strerror(errno));
  }
  out.reset();
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::IOError("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  }
  remove_tmp.keep = true;
  return stats;
}

Result<ImportStats> Replica::Import(const std::string& path) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  CAIRN_RETURN_IF_ERROR(CheckWritable());
  File in(std::fopen(path.c_str(), "rb"));
  if (!in) return Status::IOError("cannot read " + path + ": " + std::strerror(errno));
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  store::RollbackUnlessCommitted guard(store_.get());
  auto r = ImportLocked(in.get());
  if (!r.ok()) {
    store_->Rollback();
    // Whatever is wrong inside the file (a bad name or value included) is a damaged import.
    Status st = r.status().code() == Code::kEINVAL ? Status::Corrupt(r.status().message())
                                                   : r.status();
    return st.WithContext("import " + path);
  }
  return r;
}

Result<ImportStats> Replica::ImportLocked(std::FILE* in) {
  protocol::FrameLimits limits;
  protocol::FrameReader reader(in, limits);
  Sha256 sha;
  std::string payload, raw;
  bool eof = false;

  // Header: what the file covers.
  CAIRN_RETURN_IF_ERROR(reader.Next(&payload, &eof, &raw));
  if (eof) return Status::Corrupt("empty file");
  CAIRN_ASSIGN_OR_RETURN(const wire::Frame* frame, protocol::VerifyFrame(payload, limits));
  const wire::ExportHeader* hdr = frame->body_as_ExportHeader();
  if (hdr == nullptr) return Status::Corrupt("not a Cairn export (no export header)");
  if (hdr->format_version() > kExportFormatVersion) {
    return Status(Code::kEVERSION, "export format " + std::to_string(hdr->format_version()) +
                                       " is newer than this Cairn reads (" +
                                       std::to_string(kExportFormatVersion) + "): upgrade Cairn");
  }
  // Per origin, the range (from, through] the file declares: its ops of that origin, in
  // increasing seq order, assuming the receiver has the origin's ops through `from`.
  std::map<ReplicaId, admission::OriginSeq> ranges;
  if (hdr->ranges()) {
    for (const auto* rg : *hdr->ranges()) {
      if (!hdr->origins() || rg->origin() >= hdr->origins()->size()) {
        return Status::Corrupt("bad range in export header");
      }
      ReplicaId id = protocol::FromWire(*hdr->origins()->Get(rg->origin()));
      auto it = ranges.emplace(id, admission::OriginSeq(id, store_->Through(id))).first;
      CAIRN_RETURN_IF_ERROR(
          it->second.Declare(rg->from_seq(), rg->through_seq()).WithContext("export header"));
    }
  }
  sha.Update(raw);

  ImportStats stats;
  Hlc max_hlc = 0;
  // The file's ops are complete only together with what it assumes this replica has (each
  // range's `from`). If anything is missing, the whole file is held back as one unit: applying
  // part of it could count an op as received whose dominating op has not arrived.
  bool hold = false;
  for (const auto& [origin, seq] : ranges) hold = hold || !seq.assumption_met();
  int64_t unit = 0;
  if (hold) {
    CAIRN_ASSIGN_OR_RETURN(unit, store_->NewPendingUnit());
  }
  uint32_t batches = 0;
  protocol::DecodeLimits dlimits;
  for (;;) {
    CAIRN_RETURN_IF_ERROR(reader.Next(&payload, &eof, &raw));
    if (eof) return Status::Corrupt("truncated export (no end frame)");
    CAIRN_ASSIGN_OR_RETURN(frame, protocol::VerifyFrame(payload, limits));
    if (const wire::ExportEnd* end = frame->body_as_ExportEnd()) {
      std::string digest = sha.Finish();
      if (!end->sha256() || end->sha256()->size() != 32 ||
          std::memcmp(end->sha256()->data(), digest.data(), 32) != 0) {
        return Status::Corrupt("checksum mismatch: the file is damaged");
      }
      if (end->batch_count() != batches || end->op_count() != stats.ops) {
        return Status::Corrupt("op or batch count mismatch");
      }
      break;
    }
    const wire::OpBatch* batch = frame->body_as_OpBatch();
    if (batch == nullptr) return Status::Corrupt("unexpected message in export");
    sha.Update(raw);
    batches++;
    CAIRN_RETURN_IF_ERROR(protocol::DecodeBatch(*batch, dlimits, [&](const Op& op) -> Status {
      stats.ops++;
      auto rg = ranges.find(op.id.origin);
      if (rg == ranges.end()) {
        return Status::Corrupt("op " + op.id.origin.Hex() + ":" + std::to_string(op.id.seq) +
                               " of an origin the file does not declare");
      }
      CAIRN_ASSIGN_OR_RETURN(admission::Seq seq, rg->second.Next(op.id.seq));
      max_hlc = std::max(max_hlc, op.id.hlc);
      if (hold) {
        stats.held_back++;
        return store_->StagePending(unit, op);
      }
      if (seq == admission::Seq::kDuplicate) {
        stats.duplicates++;
        return Status::OK();
      }
      stats.applied++;
      return store_->Apply(op, /*local=*/false);
    }));
  }
  // Nothing may follow the end frame.
  if (std::fgetc(in) != EOF) return Status::Corrupt("data after the end frame");
  for (const auto& [origin, seq] : ranges) {
    if (hold) {
      CAIRN_RETURN_IF_ERROR(
          store_->StagePendingRange(unit, origin, seq.declared_from(), seq.declared_to()));
    } else {
      CAIRN_RETURN_IF_ERROR(store_->SetThrough(origin, seq.through_after()));
    }
  }
  CAIRN_RETURN_IF_ERROR(store_->DrainPending());
  clock_->Observe(max_hlc);
  CAIRN_RETURN_IF_ERROR(store_->Commit(clock_->last()));
  return stats;
}

}  // namespace cairn
