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
  if (partial && hello.holds()) {
    for (const wire::Holding* h : *hello.holds()) {
      if (h->collection() == nullptr) return Status::Invalid("a holding without a collection");
      holds_[h->collection()->str()] = h->since();
    }
  }
  Snapshot snap;
  snap.cursor = store->head();
  if (cursor < store->floor() || (hello.partial() && !same_server)) {
    // Behind the kept log, or a partial replica new to this server (its receipts count ops it
    // skipped elsewhere): the state of every collection it reads, then the log from there.
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
    for (const auto& o : store->state()->Origins()) snap.watermarks[o.id] = o.through;
    for (const std::string& c : snap.announced) holds_[c] = cursor;
  } else {
    return Status::OK();
  }
  // A snapshot of the same kind cut earlier resumes where it stopped, if the log still covers
  // its cursor.
  const wire::SnapshotResume* resume = hello.resume();
  if (resume && same_server && resume->rebase() == snap.rebase &&
      resume->cursor() >= store->floor() && resume->cursor() <= store->head()) {
    snap.resumed = true;
    snap.cursor = resume->cursor();
    const std::string after = resume->after_collection() ? resume->after_collection()->str() : "";
    while (snap.next < snap.collections.size() && snap.collections[snap.next] < after) snap.next++;
    if (snap.next < snap.collections.size() && snap.collections[snap.next] == after) {
      snap.after_key = resume->after_key() ? resume->after_key()->str() : "";
    }
  }
  snapshot_ = std::move(snap);
  return Status::OK();
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
  return snap;
}

bool Session::PumpSnapshot() {
  Snapshot& snap = *snapshot_;
  const size_t max_queued = server_->options.max_queued_bytes;
  const uint32_t max_ops = server_->options.max_batch_ops;
  if (!snap.begun) {
    flatbuffers::FlatBufferBuilder fbb(1024);
    std::vector<wire::AckEntry> marks;
    for (const auto& [origin, through] : snap.watermarks) {
      marks.emplace_back(protocol::ToWire(origin), through);
    }
    auto colls = fbb.CreateVectorOfStrings(snap.rebase ? snap.collections : snap.announced);
    auto begin = wire::CreateSnapshotBegin(fbb, snap.cursor, snap.rebase, colls,
                                           fbb.CreateVectorOfStructs(marks), snap.resumed);
    conn->Send(FinishFrame(&fbb, wire::Body::SnapshotBegin, begin));
    snap.begun = true;
  }
  store::ReplicaStore* state = server_->store->state();
  std::vector<Op> chunk;
  size_t scanned = 0;  // documents read in this call: other sessions wait meanwhile
  while (conn->queued_bytes() < max_queued && snap.next < snap.collections.size()) {
    if (scanned >= server_->options.snapshot_docs_per_turn) {
      server_->Repump(this);
      return false;
    }
    const std::string& coll = snap.collections[snap.next];
    chunk.clear();
    std::string last_key;
    size_t docs = 0;
    const size_t max_docs = std::min<size_t>(256, server_->options.snapshot_docs_per_turn);
    Status st = state->ForEachDocSurvivors(
        coll, snap.after_key, max_docs, [&](const std::string& key, std::vector<Op>* ops) {
          docs++;
          scanned++;
          last_key = key;
          for (Op& op : *ops) {
            // Not the client's own ops it has; nothing past the snapshot's receipts (the log
            // has them).
            auto w = snap.watermarks.find(op.id.origin);
            const bool has = op.id.origin == replica_ && (!own_seq_ || op.id.seq <= *own_seq_);
            if (has || w == snap.watermarks.end() || op.id.seq > w->second) {
              continue;
            }
            chunk.push_back(std::move(op));
          }
          return chunk.size() >= max_ops ? Status(Code::kEBUSY, "chunk full") : Status::OK();
        });
    if (!st.ok() && st.code() != Code::kEBUSY) {
      server_->Log("reading a snapshot failed: " + st.ToString());
      conn->SendErrorAndClose(Code::kEINTERNAL, "server error reading its state");
      return false;
    }
    if (docs == 0 || (docs < max_docs && st.ok())) {
      snap.next++;  // this collection is done
      snap.after_key.clear();
    } else {
      snap.after_key = last_key;
    }
    if (chunk.empty()) continue;
    // The encoding wants each origin's ops in seq order.
    std::sort(chunk.begin(), chunk.end(), [](const Op& a, const Op& b) {
      return a.id.origin < b.id.origin || (a.id.origin == b.id.origin && a.id.seq < b.id.seq);
    });
    protocol::BatchEncoder enc;
    for (const Op& op : chunk) enc.Add(op);
    flatbuffers::FlatBufferBuilder fbb(enc.ops_bytes() + 1024);
    auto batch = enc.Build(&fbb);
    auto c = wire::CreateSnapshotChunk(fbb, batch, fbb.CreateString(coll),
                                       fbb.CreateString(last_key));
    conn->Send(FinishFrame(&fbb, wire::Body::SnapshotChunk, c));
    KillPoint("server.snapshot.sent");
  }
  if (snap.next < snap.collections.size() || conn->queued_bytes() >= max_queued) return false;
  flatbuffers::FlatBufferBuilder fbb(64);
  conn->Send(FinishFrame(&fbb, wire::Body::SnapshotEnd, wire::CreateSnapshotEnd(fbb, snap.cursor)));
  snapshot_.reset();
  return true;
}

}  // namespace cairn::server
