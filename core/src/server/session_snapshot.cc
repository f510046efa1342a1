// Snapshots (docs/protocol.md "Snapshots"): a client whose cursor is older than the log the
// server keeps, or that starts reading a collection, gets the current state of what it reads
// in chunks, resumable, while the rest of its session goes on.
#include <algorithm>

#include "base/killpoint.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "server/session.h"

namespace cairn::server {

using protocol::FinishFrame;

Status Session::PlanSnapshot(const wire::Hello& hello, bool same_server, uint64_t cursor) {
  ServerStore* store = server_->store.get();
  // What the client holds: everything it reads (from its cursor), or the collections listed.
  holds_.clear();
  const bool partial = hello.partial() && same_server;
  const auto* holds = hello.holds();
  if (partial && holds != nullptr) {
    for (const wire::Holding* h : *holds) {
      const flatbuffers::String* collection = h != nullptr ? h->collection() : nullptr;
      if (collection == nullptr) return Status::Invalid("a holding without a collection");
      holds_[collection->str()] = h->since();
    }
  }
  Snapshot snap;
  snap.cursor = store->head();
  // docs/sync-rules.md "Rules that change": a client (of this version) whose cursor was
  // received under other sync rules, or none, or that never synced with these.
  const flatbuffers::String* digest = hello.rules_digest();
  const bool other_rules = digest != nullptr && digest->str() != RulesDigest();
  if (cursor < store->floor() || (hello.partial() && !same_server) || other_rules) {
    // Behind the kept log, a partial replica new to this server (its receipts count ops it
    // skipped elsewhere), or one of other rules: the state of every collection it reads, then
    // the log from there.
    snap = RebaseSnapshot();
  } else if (partial) {
    // Collections it asks for and does not hold: their state, then their ops after its cursor
    // (the client keeps only the snapshot's ops its receipts already count: the log from its
    // cursor brings the others, once).
    std::vector<std::string> existing = store->state()->CollectionNames();
    if (all_collections_) {
      if (holds_.count("*") == 0) {
        snap.announced = {"*"};
        for (const std::string& c : existing) {
          if (Reads(c) && holds_.count(c) == 0) snap.collections.push_back(c);
        }
      }
    } else {
      for (const std::string& c : subscriptions_) {
        if (holds_.count(c) == 0 && holds_.count("*") == 0) {
          snap.announced.push_back(c);
          if (std::binary_search(existing.begin(), existing.end(), c)) {
            snap.collections.push_back(c);
          }
        }
      }
    }
    if (snap.announced.empty()) return Status::OK();
    if (store->history_folded() && cursor < store->horizon_cursor()) {
      // docs/crdt-semantics.md "History horizon": a folded entry may sum increments the log
      // after this client's cursor brings again: the state at the head, then the log from it.
      snap = RebaseSnapshot();
    } else {
      for (const auto& o : store->state()->Origins()) snap.watermarks[o.id] = o.through;
      for (const std::string& c : snap.announced) holds_[c] = cursor;
    }
  } else {
    return Status::OK();
  }
  // A snapshot of the same kind cut earlier resumes where it stopped, if the log still covers
  // its cursor.
  const wire::SnapshotResume* resume = hello.resume();
  // (Not across a fold of the history: the parts staged would not match the state read now.)
  bool resumable = resume && same_server && resume->rebase() == snap.rebase &&
                   resume->cursor() >= store->floor() && resume->cursor() <= store->head() &&
                   !(store->history_folded() && store->horizon_cursor() >= resume->cursor());
  if (resumable && grants_ && snap.rebase) {
    // docs/sync-rules.md "Rules that change": what a cut rebase staged was chosen by the view
    // and the rules of its session, and nothing here tells which session that was (the view
    // record of a later session that began another rebase, cut before its first frame reached
    // the client, says the new view while the client still holds the old staged part): it
    // starts again.
    resumable = false;
  } else if (resumable && grants_) {
    // An "add" snapshot: what was staged was chosen by the view and the rules of its session;
    // it counts only when the replica's view record is certain and of this view and these
    // rules (a session that changed the view leaves it uncertain until the client's cursor
    // passes it, and a batch past it makes the client drop a staged snapshot).
    CAIRN_ASSIGN_OR_RETURN(std::string text, store->ReplicaView(replica_));
    Result<rules::ViewRecord> record =
        text.empty() ? Result<rules::ViewRecord>(Status::NotFound("no view record"))
                     : rules::ViewRecord::Parse(text);
    resumable =
        record.ok() && record->certain() && record->to == view_ && record->rules == RulesDigest();
  }
  if (resumable) {
    snap.resumed = true;
    snap.cursor = resume->cursor();
    const flatbuffers::String* after_collection = resume->after_collection();
    const flatbuffers::String* after_key = resume->after_key();
    const std::string after = after_collection != nullptr ? after_collection->str() : "";
    while (snap.next < snap.collections.size() && snap.collections[snap.next] < after) snap.next++;
    if (snap.next < snap.collections.size() && snap.collections[snap.next] == after) {
      snap.after_key = after_key != nullptr ? after_key->str() : "";
      snap.sent_key = snap.after_key;
    }
  }
  snap.horizon = store->horizon();
  snap.replace = Replaces();
  snapshot_ = std::move(snap);
  return Status::OK();
}

bool Session::Replaces() const {
  return server_->store->history_folded() && (features_ & protocol::kFeatureHistory) != 0;
}

Session::Snapshot Session::RebaseSnapshot() {
  ServerStore* store = server_->store.get();
  Snapshot snap;
  snap.rebase = true;
  snap.cursor = store->head();
  holds_.clear();
  for (const std::string& c : store->state()->CollectionNames()) {
    if (Reads(c)) snap.collections.push_back(c);
  }
  for (const auto& o : store->state()->Origins()) snap.watermarks[o.id] = o.through;
  snap.horizon = store->horizon();
  snap.replace = Replaces();
  return snap;
}

bool Session::PumpSnapshot() {
  Snapshot& snap = *snapshot_;
  if (server_->store->horizon() != snap.horizon) {
    // The history was folded under it: its parts would not agree with each other (the client
    // keeps nothing of a snapshot that does not end, and its next one starts afresh).
    conn->SendErrorAndClose(Code::kEBUSY,
                            "the server folded its history during the snapshot: sync again");
    return false;
  }
  const size_t max_queued = server_->options.max_queued_bytes;
  const uint32_t max_ops = server_->options.max_batch_ops;
  if (!snap.begun) {
    flatbuffers::FlatBufferBuilder fbb(1024);
    std::vector<wire::AckEntry> marks;
    for (const auto& [origin, through] : snap.watermarks) {
      marks.emplace_back(protocol::ToWire(origin), through);
    }
    auto colls = fbb.CreateVectorOfStrings(snap.rebase ? snap.collections : snap.announced);
    auto digest = fbb.CreateString(snap.rebase ? RulesDigest() : std::string());
    auto begin = wire::CreateSnapshotBegin(
        fbb, snap.cursor, snap.rebase, colls, fbb.CreateVectorOfStructs(marks), snap.resumed,
        snap.rebase && grants_.has_value(), digest, snap.replace);
    conn->Send(FinishFrame(&fbb, wire::Body::SnapshotBegin, begin));
    snap.begun = true;
  }
  store::ReplicaStore* state = server_->store->state();
  // docs/protocol.md "Limits": a chunk holds at most max_ops ops and max_bytes
  // (protocol::BatchWireBytes, bounded here by OpBytesBound); a document's ops go in one chunk
  // when they fit, else over several. The client stages every chunk and applies the snapshot
  // at its end, idempotently, so a document split and sent again after a resume is no harm.
  const size_t max_bytes = protocol::BatchBudget(server_->options.conn.limits.max_frame_bytes);
  std::vector<Op> chunk;
  size_t chunk_bytes = 0;  // the batch's fixed part and OpBytesBound of each op in `chunk`
  auto fits = [&](size_t ops, size_t bytes) {
    return chunk.size() + ops <= max_ops && chunk_bytes + bytes <= max_bytes;
  };
  // Sends `chunk` as one SnapshotChunk; `resume_key`: the last document of `coll` sent whole.
  auto send_chunk = [&](const std::string& coll, const std::string& resume_key) {
    // The encoding wants each origin's ops in seq order.
    std::sort(chunk.begin(), chunk.end(), [](const Op& a, const Op& b) {
      return a.id.origin < b.id.origin || (a.id.origin == b.id.origin && a.id.seq < b.id.seq);
    });
    protocol::BatchEncoder enc;
    for (const Op& op : chunk) enc.Add(op);
    chunk.clear();
    chunk_bytes = protocol::BatchEncoder().wire_bytes();  // its fixed part
    flatbuffers::FlatBufferBuilder fbb(enc.ops_bytes() + 1024);
    auto batch = enc.Build(&fbb);
    auto c =
        wire::CreateSnapshotChunk(fbb, batch, fbb.CreateString(coll), fbb.CreateString(resume_key));
    conn->Send(FinishFrame(&fbb, wire::Body::SnapshotChunk, c));
    KillPoint("server.snapshot.sent");
  };
  chunk_bytes = protocol::BatchEncoder().wire_bytes();
  size_t scanned = 0;  // documents read in this call: other sessions wait meanwhile
  while (conn->queued_bytes() < max_queued && snap.next < snap.collections.size()) {
    const std::string& coll = snap.collections[snap.next];
    if (!snap.carry.empty()) {
      // A document larger than a chunk: its ops, a chunk's worth at a time.
      size_t taken = 0;
      while (taken < snap.carry.size()) {
        const size_t bytes = protocol::OpBytesBound(snap.carry[taken]);
        if (!chunk.empty() && !fits(1, bytes)) break;  // (one op always fits a chunk)
        chunk_bytes += bytes;
        chunk.push_back(std::move(snap.carry[taken++]));
      }
      snap.carry.erase(snap.carry.begin(), snap.carry.begin() + static_cast<ptrdiff_t>(taken));
      if (snap.carry.empty()) snap.after_key = snap.sent_key = snap.carry_key;  // whole now
      send_chunk(coll, snap.sent_key);
      continue;
    }
    if (scanned >= server_->options.snapshot_docs_per_turn) {
      server_->Repump(this);
      return false;
    }
    std::string last_key;   // the last document scanned (sent, or outside the view)
    std::string last_sent;  // the last document taken whole into `chunk`
    size_t docs = 0;
    bool stopped = false;
    const size_t max_docs = std::min<size_t>(256, server_->options.snapshot_docs_per_turn);
    std::vector<Op> doc;  // one document's ops to send
    Status st = state->ForEachDocSurvivors(
        coll, snap.after_key, max_docs, [&](const std::string& key, std::vector<Op>* ops) {
          docs++;
          scanned++;
          doc.clear();
          if (!InView(coll, key)) {  // sync rules: a document outside the view is not sent
            last_key = key;
            return Status::OK();
          }
          // Not the client's own ops it has (but when it evicts what the snapshot does not
          // bring: they say the document is in its view; nor when it replaces what it holds:
          // a folded increment may be its own); nothing past the snapshot's receipts (the log
          // has them).
          const bool evict = (snap.rebase && grants_.has_value()) || snap.replace;
          size_t bytes = 0;
          for (Op& op : *ops) {
            auto w = snap.watermarks.find(op.id.origin);
            const bool has = op.id.origin == replica_ && (!own_seq_ || op.id.seq <= *own_seq_);
            if ((has && !evict) || w == snap.watermarks.end() || op.id.seq > w->second) continue;
            bytes += protocol::OpBytesBound(op);
            doc.push_back(std::move(op));
          }
          if (!fits(doc.size(), bytes)) {
            stopped = true;
            if (chunk.empty()) {  // larger than a chunk by itself: sent over several
              snap.carry = std::move(doc);
              snap.carry_key = key;
            }
            return Status(Code::kEBUSY, "chunk full");  // (else read again for the next chunk)
          }
          chunk_bytes += bytes;
          for (Op& op : doc) chunk.push_back(std::move(op));
          last_key = last_sent = key;
          if (chunk.size() >= max_ops) {
            stopped = true;
            return Status(Code::kEBUSY, "chunk full");
          }
          return Status::OK();
        });
    if (!st.ok() && !stopped) {
      server_->Log("reading a snapshot failed: " + st.ToString());
      conn->SendErrorAndClose(Code::kEINTERNAL, "server error reading its state");
      return false;
    }
    if (!last_key.empty()) snap.after_key = last_key;
    // A chunk names the last document it brings, never one outside the view (its key).
    if (!last_sent.empty()) snap.sent_key = last_sent;
    if (!stopped && docs < max_docs) {
      if (!chunk.empty()) send_chunk(coll, snap.sent_key);
      snap.next++;  // this collection is done
      snap.after_key.clear();
      snap.sent_key.clear();
      continue;
    }
    if (!chunk.empty()) send_chunk(coll, snap.sent_key);
  }
  if (snap.next < snap.collections.size() || conn->queued_bytes() >= max_queued) return false;
  flatbuffers::FlatBufferBuilder fbb(64);
  conn->Send(FinishFrame(&fbb, wire::Body::SnapshotEnd, wire::CreateSnapshotEnd(fbb, snap.cursor)));
  snapshot_.reset();
  return true;
}

}  // namespace cairn::server
