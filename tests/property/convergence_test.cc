// Randomized convergence (docs/crdt-semantics.md "Why it converges"): replicas with skewed, frozen
// and backwards-running clocks make thousands of conflicting ops over a small key space and
// exchange them through export files in random orders, with duplicates, stale and partial version
// vectors and deliberate gaps. Once everything is delivered, every replica must show the same dump,
// digest and collection digests, hold nothing back, and that dump must equal what a deliberately
// simple reference model of docs/crdt-semantics.md "The rules" computes from the full set of ops.
// Along the way:
//  - every import's counts add up (applied + duplicates + held back = ops in the file), and a
//    file that assumes ops the receiver lacks (a range starting past its watermark) is held
//    back whole: nothing of it applied, Known() unchanged;
//  - every state seen after an import (and after some writes) is exactly the reference state of
//    the ops its Known() accounts for; it holds no op past that watermark and never accounts for
//    half a transaction;
//  - a rejected write, a repeated import and a reopen change nothing;
//  - a local op made after an import orders after every op applied (the HLC receive rule).
//
// Environment: CAIRN_SEED=N replays one seed exactly (the failure message names it);
// CAIRN_SEEDS=N runs N seeds (default 20).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "base/sha256.h"
#include "base/strings.h"
#include "oplog/json_codec.h"
#include "replica/replica.h"
#include "support/temp_dir.h"

namespace cairn {
namespace {

constexpr int64_t kEpochMs = 1'700'000'000'000;

// ---------------------------------------------------------------------------------------------
// Test plumbing

using testing::FakeClock;
using testing::TempDir;

// Deterministic randomness (own helpers rather than std distributions, whose output differs
// between standard libraries, so a seed replays the same history everywhere).
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  uint64_t Next() { return gen_(); }
  size_t Below(size_t n) { return static_cast<size_t>(gen_() % n); }
  int64_t Range(int64_t lo, int64_t hi) {  // inclusive, small ranges
    return lo + static_cast<int64_t>(gen_() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool Chance(double p) { return static_cast<double>(gen_() >> 11) * 0x1.0p-53 < p; }
  template <class T>
  const T& Pick(const std::vector<T>& v) {
    return v[Below(v.size())];
  }

 private:
  std::mt19937_64 gen_;
};

std::optional<uint64_t> EnvNumber(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::strtoull(v, nullptr, 10);
}

std::string Sha256Hex(const std::string& text) {
  Sha256 sha;
  sha.Update(text);
  return HexEncode(sha.Finish());
}

// ---------------------------------------------------------------------------------------------
// The reference model: docs/crdt-semantics.md "The rules" written out as literally as possible,
// from the full set of ops.
// It shares nothing with the engine's merge code (only ValueToJson, to render values).

struct RefOp {
  ReplicaId origin;
  uint64_t seq = 0;
  Hlc hlc = 0;          // filled in from the origin's log once the history is over
  bool txn_end = true;  // last op of its transaction
  OpKind kind = OpKind::kSet;
  std::string collection, key, field;
  Value value;
  int64_t delta = 0;
};

// docs/crdt-semantics.md: ops are ordered by (hlc, origin id bytes, seq); larger wins.
bool Before(const RefOp& a, const RefOp& b) {
  if (a.hlc != b.hlc) return a.hlc < b.hlc;
  int c = std::memcmp(a.origin.bytes.data(), b.origin.bytes.data(), a.origin.bytes.size());
  if (c != 0) return c < 0;
  return a.seq < b.seq;
}

Json ReferenceState(const std::vector<const RefOp*>& ops) {
  std::map<std::pair<std::string, std::string>, std::vector<const RefOp*>> docs;
  for (const RefOp* op : ops) docs[{op->collection, op->key}].push_back(op);
  Json out = Json::object();
  for (const auto& [doc, doc_ops] : docs) {
    // D: the largest delete of the document (none: never deleted).
    const RefOp* d = nullptr;
    for (const RefOp* op : doc_ops) {
      if (op->kind == OpKind::kDelete && (d == nullptr || Before(*d, *op))) d = op;
    }
    auto above_d = [&](const RefOp* op) { return d == nullptr || Before(*d, *op); };
    std::map<std::string, std::vector<const RefOp*>> fields;
    for (const RefOp* op : doc_ops) {
      if (op->kind != OpKind::kDelete) fields[op->field].push_back(op);
    }
    Json visible = Json::object();
    for (const auto& [name, field_ops] : fields) {
      // The deciding op: the field's largest op of either kind; visible iff larger than D.
      const RefOp* deciding = field_ops.front();
      for (const RefOp* op : field_ops) {
        if (Before(*deciding, *op)) deciding = op;
      }
      if (!above_d(deciding)) continue;
      if (deciding->kind == OpKind::kSet) {
        visible[name] = ValueToJson(deciding->value);
      } else {
        uint64_t sum = 0;  // int64 deltas, wrapping on overflow
        for (const RefOp* op : field_ops) {
          if (op->kind == OpKind::kIncrement && above_d(op)) sum += static_cast<uint64_t>(op->delta);
        }
        visible[name] = static_cast<int64_t>(sum);
      }
    }
    // A document is visible iff some field is.
    if (!visible.empty()) out[doc.first][doc.second] = std::move(visible);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The pools ops draw from: a small key space, so conflicts are frequent, and every value type.

const std::vector<std::string> kCollections = {"items", "Notes"};
const std::vector<std::string> kKeys = {"k1", "k2", "a b", "Z", "\xc3\xa9t\xc3\xa9",
                                        "\xe6\x97\xa5\xe6\x9c\xac"};
const std::vector<std::string> kFields = {"a", "b", "n", "_x9"};

Value RandomValue(Rng* rng) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  static const std::vector<double> kDoubles = {
      0.0, -0.0, 1.5, -2.25e-300, 1e300, 5e-324, std::numeric_limits<double>::max(),
      -std::numeric_limits<double>::max(), 0.1, 3.0, -7.0, 1e17, 123456789.125};
  static const std::vector<std::string> kStrings = {
      "", "hello", "h\xc3\xa9llo", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "\xf0\x9f\x99\x82 ok",
      "quote\" back\\slash", "tab\tnl\n", std::string("nul\0inside", 10), "\x01\x1f ctl",
      "{\"$bytes\":\"AA==\"}"};
  switch (rng->Below(6)) {
    case 0:
      return Value::Null();
    case 1:
      return Value::Bool(rng->Chance(0.5));
    case 2: {
      switch (rng->Below(5)) {
        case 0:
          return Value::Int(kMin);
        case 1:
          return Value::Int(kMax);
        case 2:
          return Value::Int(static_cast<int64_t>(rng->Next()));
        default:
          return Value::Int(rng->Range(-5, 5));
      }
    }
    case 3: {
      if (rng->Chance(0.7)) return Value::Double(rng->Pick(kDoubles));
      for (;;) {  // any finite bit pattern
        uint64_t bits = rng->Next();
        double d;
        std::memcpy(&d, &bits, sizeof d);
        if (std::isfinite(d)) return Value::Double(d);
      }
    }
    case 4: {
      if (rng->Chance(0.8)) return Value::String(rng->Pick(kStrings));
      std::string s;
      for (size_t i = rng->Below(12); i > 0; i--) s.push_back(static_cast<char>('a' + rng->Below(26)));
      return Value::String(s);
    }
    default: {
      std::string b;
      for (size_t i = rng->Below(24); i > 0; i--) b.push_back(static_cast<char>(rng->Below(256)));
      return Value::Bytes(b);
    }
  }
}

int64_t RandomDelta(Rng* rng) {
  switch (rng->Below(6)) {
    case 0:
      return std::numeric_limits<int64_t>::max();
    case 1:
      return std::numeric_limits<int64_t>::min();
    case 2:
      return static_cast<int64_t>(rng->Next());
    default:
      return rng->Range(-3, 3);
  }
}

std::string VvToString(const VersionVector& vv) {
  std::string s = "{";
  for (const auto& [id, through] : vv) {
    if (s.size() > 1) s += ",";
    // The first and last bytes tell the test's replicas apart.
    const std::string hex = id.Hex();
    s += hex.substr(0, 4) + ".." + hex.substr(28) + ":" + std::to_string(through);
  }
  return s + "}";
}

// Known() without the origins that are known through 0 (they carry no information).
VersionVector NonZero(const VersionVector& vv) {
  VersionVector out;
  for (const auto& [id, through] : vv) {
    if (through > 0) out[id] = through;
  }
  return out;
}

// The Status of a call that returns one, or a Result (a write's receipt).
const Status& StatusOf(const Status& s) { return s; }
template <class T>
const Status& StatusOf(const Result<T>& r) {
  return r.status();
}

#define ASSERT_OK(expr)                                               \
  do {                                                                \
    ::cairn::Status status_ = StatusOf(expr);                         \
    ASSERT_TRUE(status_.ok()) << #expr << ": " << status_.ToString(); \
  } while (0)

template <class T>
T ValueOrDie(Result<T> r, const char* what) {
  EXPECT_TRUE(r.ok()) << what << ": " << r.status().ToString();
  if (!r.ok()) return T();
  return std::move(r).value();
}
#define VALUE_OR_FAIL(expr) ValueOrDie((expr), #expr)

// ---------------------------------------------------------------------------------------------
// One randomized history.

struct Node {
  std::string path;
  FakeClock clock;
  int64_t skew_ms = 0;
  std::unique_ptr<Replica> replica;
  ReplicaId id;
  std::vector<RefOp> ops;                   // every op it made; ops[i].seq == i + 1
  std::vector<VersionVector> known_history;  // earlier Known() values, for stale vectors
};

struct ExportFile {
  std::string path;
  uint64_t ops;
};

// A state seen along the way, checked against the reference once all HLCs are known.
struct Snapshot {
  size_t node;
  VersionVector known;
  std::string dump;
  std::string what;
};

// After an import, the node's next local op must order after every op it had applied.
struct ImportEvent {
  size_t node;
  uint64_t next_seq;
  VersionVector known;
};

struct RunCounters {
  uint64_t ops = 0, writes = 0, imports = 0, gap_imports = 0, held_back = 0, duplicates = 0,
           reopens = 0, rejected_writes = 0, snapshots = 0;
};

class History {
 public:
  History(uint64_t seed, std::string dir, RunCounters* counters)
      : seed_(seed), rng_(seed), dir_(std::move(dir)), counters_(counters) {}

  void Run() {
    Setup();
    if (::testing::Test::HasFatalFailure()) return;
    const size_t steps = 500 + rng_.Below(500);
    for (size_t step = 0; step < steps && !::testing::Test::HasFatalFailure(); step++) {
      global_ms_ += rng_.Range(0, 12);
      if (tie_steps_ > 0) tie_steps_--;
      size_t r = rng_.Below(100);
      if (r < 64) {
        Write(rng_.Below(nodes_.size()));
      } else if (r < 86) {
        Exchange();
      } else if (r < 92) {
        ReimportOld();
      } else if (r < 94) {
        Reopen(rng_.Below(nodes_.size()));
      } else if (r < 96) {
        // All clocks frozen at one value for a while: equal HLCs, decided by origin bytes.
        tie_steps_ = static_cast<int>(rng_.Range(5, 40));
        tie_ms_ = global_ms_ + rng_.Range(-3000, 3000);
      } else {
        // A clock jumps, more often backwards than forwards.
        nodes_[rng_.Below(nodes_.size())].skew_ms += rng_.Range(-5000, 2000);
      }
    }
    if (::testing::Test::HasFatalFailure()) return;
    Converge();
    if (::testing::Test::HasFatalFailure()) return;
    Verify();
  }

 private:
  void Setup() {
    const size_t n = 3 + rng_.Below(3);
    // Replica ids, pinned so a seed replays exactly (ties between equal HLCs are broken by origin
    // bytes): random, or chosen to differ only in the last byte, or across the sign bit of the
    // first byte (the order is unsigned bytewise).
    std::vector<ReplicaId> ids(n);
    const size_t id_mode = static_cast<size_t>(seed_ % 3);
    static const uint8_t kEdge[] = {0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff};
    std::vector<uint8_t> edge(std::begin(kEdge), std::end(kEdge));
    for (size_t i = edge.size(); i > 1; i--) std::swap(edge[i - 1], edge[rng_.Below(i)]);
    for (size_t i = 0; i < n; i++) {
      for (auto& b : ids[i].bytes) b = static_cast<uint8_t>(rng_.Next());
      if (id_mode == 1) {
        ids[i].bytes = ids[0].bytes;
        ids[i].bytes[15] = edge[i];
      } else if (id_mode == 2) {
        ids[i].bytes[0] = edge[i];
      }
    }
    nodes_.resize(n);
    for (size_t i = 0; i < n; i++) {
      Node& node = nodes_[i];
      node.path = dir_ + "/r" + std::to_string(i) + ".cairn";
      node.skew_ms = rng_.Chance(0.15) ? -86'400'000 : rng_.Range(-5000, 5000);
      node.clock.Set(global_ms_ + node.skew_ms);
      OpenNode(&node, ids[i]);
      if (::testing::Test::HasFatalFailure()) return;
      ASSERT_EQ(node.id.Hex(), ids[i].Hex());
    }
  }

  // new_id: the id to give the file when it is created (it is ignored for an existing file).
  void OpenNode(Node* node, std::optional<ReplicaId> new_id = std::nullopt) {
    ReplicaOptions opts;
    opts.clock = &node->clock;
    opts.new_id = new_id;
    auto r = Replica::Open(node->path, opts);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    node->replica = std::move(r).value();
    node->id = node->replica->id();
  }

  void TickClock(Node* node) {
    if (tie_steps_ > 0) {
      node->clock.Set(tie_ms_);
    } else if (rng_.Chance(0.1)) {
      // frozen: the same reading as last time
    } else {
      node->clock.Set(global_ms_ + node->skew_ms + rng_.Range(0, 3));
    }
  }

  void AddEntry(WriteBatch* batch, std::vector<RefOp>* refs) {
    RefOp op;
    op.collection = rng_.Pick(kCollections);
    op.key = rng_.Pick(kKeys);
    size_t r = rng_.Below(100);
    if (r < 58) {
      op.kind = OpKind::kSet;
      op.field = rng_.Pick(kFields);
      op.value = RandomValue(&rng_);
      batch->Set(op.collection, op.key, op.field, op.value);
    } else if (r < 86) {
      op.kind = OpKind::kIncrement;
      op.field = rng_.Pick(kFields);
      op.delta = RandomDelta(&rng_);
      batch->Increment(op.collection, op.key, op.field, op.delta);
    } else {
      op.kind = OpKind::kDelete;
      batch->Delete(op.collection, op.key);
    }
    refs->push_back(std::move(op));
  }

  void Write(size_t i) {
    Node& node = nodes_[i];
    TickClock(&node);
    WriteBatch batch;
    std::vector<RefOp> refs;
    const size_t count = rng_.Chance(0.6) ? 1 : 2 + rng_.Below(5);
    for (size_t k = 0; k < count; k++) AddEntry(&batch, &refs);

    if (rng_.Chance(0.03)) {
      // An invalid entry anywhere in the batch: nothing of it is written.
      switch (rng_.Below(3)) {
        case 0:
          batch.Set("items", "k1", "a", Value::Double(std::nan("")));
          break;
        case 1:
          batch.Set("items", "k1", "bad-name", Value::Int(1));
          break;
        default:
          batch.Set("items", "k1", "a", Value::String("\xc3("));
          break;
      }
      std::string before = VALUE_OR_FAIL(node.replica->DumpString());
      VersionVector known = node.replica->Known();
      Status st = node.replica->Write(batch).status();
      ASSERT_EQ(st.code(), Code::kEINVAL) << st.ToString();
      ASSERT_EQ(VALUE_OR_FAIL(node.replica->DumpString()), before);
      ASSERT_EQ(node.replica->Known(), known);
      counters_->rejected_writes++;
      return;
    }

    ASSERT_OK(node.replica->Write(batch));
    for (size_t k = 0; k < refs.size(); k++) {
      refs[k].origin = node.id;
      refs[k].seq = node.ops.size() + 1;
      refs[k].txn_end = k + 1 == refs.size();
      node.ops.push_back(std::move(refs[k]));
    }
    counters_->writes++;
    counters_->ops += count;
    if (rng_.Chance(0.1)) TakeSnapshot(i, "after a write");
  }

  void TakeSnapshot(size_t i, const std::string& what) {
    Node& node = nodes_[i];
    Snapshot s;
    s.node = i;
    s.known = node.replica->Known();
    s.dump = VALUE_OR_FAIL(node.replica->DumpString());
    // Ops are applied in seq order per origin: nothing the state holds lies past the watermark.
    ASSERT_OK(node.replica->Log([&](const Op& op) {
      auto it = s.known.find(op.id.origin);
      uint64_t through = it == s.known.end() ? 0 : it->second;
      EXPECT_LE(op.id.seq, through) << "replica " << i << " " << what << ": it has applied "
                                    << op.id.origin.Hex() << ":" << op.id.seq << " ("
                                    << OpKindName(op.kind) << " " << op.collection << "/"
                                    << op.key << ") but accounts for that origin only through "
                                    << through << " (known " << VvToString(s.known) << ")";
      return Status::OK();
    }));
    counters_->snapshots++;
    s.what = what;
    node.known_history.push_back(s.known);
    snapshots_.push_back(std::move(s));
  }

  // Exports from `s` with `since` and imports into `r`.
  void Transfer(size_t s, size_t r, const VersionVector* since, const std::string& what) {
    std::string path = dir_ + "/x" + std::to_string(files_.size()) + ".cairn";
    auto ex = nodes_[s].replica->Export(path, since);
    ASSERT_TRUE(ex.ok()) << what << ": " << ex.status().ToString();
    files_.push_back({path, ex->ops});
    ImportInto(r, files_.size() - 1, what);
  }

  // Imports file `file` into `r`; checks the stats add up and takes a snapshot.
  void ImportInto(size_t r, size_t file, const std::string& what) {
    Node& node = nodes_[r];
    const ExportFile& f = files_[file];
    const VersionVector known_before = NonZero(node.replica->Known());
    auto im = node.replica->Import(f.path);
    ASSERT_TRUE(im.ok()) << what << ": " << im.status().ToString();
    ASSERT_EQ(im->ops, f.ops) << what;
    ASSERT_EQ(im->ops, im->applied + im->duplicates + im->held_back) << what;
    if (im->held_back > 0) {
      // A file that assumes ops the receiver lacks is held back whole and claims nothing (the
      // receiver may learn of new origins, known through 0).
      ASSERT_EQ(im->held_back, im->ops) << what << ": part of a file held back";
      ASSERT_EQ(VvToString(NonZero(node.replica->Known())), VvToString(known_before))
          << what << ": held back, yet Known() moved";
    }
    counters_->imports++;
    counters_->held_back += im->held_back;
    counters_->duplicates += im->duplicates;
    if (im->held_back > 0) counters_->gap_imports++;
    import_events_.push_back({r, node.ops.size() + 1, node.replica->Known()});
    TakeSnapshot(r, what + " (file " + std::to_string(file) + ")");
  }

  void Exchange() {
    const size_t n = nodes_.size();
    const size_t s = rng_.Below(n);
    const size_t r = (s + 1 + rng_.Below(n - 1)) % n;
    Node& recv = nodes_[r];
    VersionVector since = recv.replica->Known();
    std::string what;
    bool with_since = true;
    size_t mode = rng_.Below(100);
    if (mode < 15) {
      with_since = false;
      what = "full export";
    } else if (mode < 50) {
      what = "export since the receiver's vector";
    } else if (mode < 65 && !recv.known_history.empty()) {
      since = rng_.Pick(recv.known_history);
      what = "export since a stale vector";
    } else if (mode < 75) {
      for (auto it = since.begin(); it != since.end();) {
        it = rng_.Chance(0.5) ? since.erase(it) : std::next(it);
      }
      what = "export since a partial vector";
    } else if (mode < 85) {
      since = nodes_[rng_.Below(n)].replica->Known();
      what = "export since another replica's vector";
    } else {
      // A gap: claim the receiver has more of some origins than it has, so the export starts
      // past its watermark and the whole file must be held back until a later import fills the
      // gap.
      VersionVector sender = nodes_[s].replica->Known();
      bool gap = false;
      for (const auto& [origin, through] : sender) {
        uint64_t have = since.count(origin) ? since[origin] : 0;
        if (origin != recv.id && through > have + 1 && rng_.Chance(0.7)) {
          since[origin] =
              have + 1 + static_cast<uint64_t>(rng_.Below(static_cast<size_t>(through - have - 1)));
          gap = true;
        }
      }
      what = gap ? "export with a gap" : "export since the receiver's vector";
    }
    what += " " + std::to_string(s) + "->" + std::to_string(r);
    if (with_since) what += " since " + VvToString(since);
    Transfer(s, r, with_since ? &since : nullptr, what);
    if (::testing::Test::HasFatalFailure()) return;

    if (rng_.Chance(0.1)) {
      // The same file again: nothing new is applied and nothing changes.
      std::string before = VALUE_OR_FAIL(recv.replica->DumpString());
      VersionVector known = recv.replica->Known();
      auto im = recv.replica->Import(files_.back().path);
      ASSERT_TRUE(im.ok()) << im.status().ToString();
      EXPECT_EQ(im->applied, 0u) << what << " imported twice";
      EXPECT_EQ(VALUE_OR_FAIL(recv.replica->DumpString()), before) << what << " imported twice";
      EXPECT_EQ(recv.replica->Known(), known) << what << " imported twice";
    }
  }

  void ReimportOld() {
    if (files_.empty()) return;
    // Any earlier file (often an older one after newer ones), into any replica, the sender
    // included.
    size_t f = rng_.Below(files_.size());
    size_t r = rng_.Below(nodes_.size());
    ImportInto(r, f, "re-import of file " + std::to_string(f) + " into " + std::to_string(r));
  }

  void Reopen(size_t i) {
    Node& node = nodes_[i];
    std::string before = VALUE_OR_FAIL(node.replica->DumpString());
    VersionVector known = node.replica->Known();
    ReplicaId id = node.id;
    ASSERT_OK(node.replica->Close());
    node.replica.reset();
    if (rng_.Chance(0.5)) node.skew_ms -= rng_.Range(0, 10'000);  // restarted with a late clock
    node.clock.Set(global_ms_ + node.skew_ms);
    OpenNode(&node);
    if (::testing::Test::HasFatalFailure()) return;
    ASSERT_EQ(node.id.Hex(), id.Hex());
    ASSERT_EQ(VALUE_OR_FAIL(node.replica->DumpString()), before);
    ASSERT_EQ(node.replica->Known(), known);
    counters_->reopens++;
  }

  VersionVector Everything() const {
    VersionVector all;
    for (const Node& node : nodes_) {
      if (!node.ops.empty()) all[node.id] = node.ops.size();
    }
    return all;
  }

  // Full all-to-all exchanges, in random order, until a round changes nothing.
  void Converge() {
    const size_t n = nodes_.size();
    const VersionVector all = Everything();
    for (int round = 0; round < 8; round++) {
      std::vector<std::pair<size_t, size_t>> pairs;
      for (size_t s = 0; s < n; s++) {
        for (size_t r = 0; r < n; r++) {
          if (s != r) pairs.emplace_back(s, r);
        }
      }
      for (size_t i = pairs.size(); i > 1; i--) std::swap(pairs[i - 1], pairs[rng_.Below(i)]);
      bool changed = false;
      for (const auto& [s, r] : pairs) {
        VersionVector since = nodes_[r].replica->Known();
        const bool full = rng_.Chance(0.2);
        std::string path = dir_ + "/final" + std::to_string(files_.size()) + ".cairn";
        auto ex = nodes_[s].replica->Export(path, full ? nullptr : &since);
        ASSERT_TRUE(ex.ok()) << ex.status().ToString();
        files_.push_back({path, ex->ops});
        auto im = nodes_[r].replica->Import(path);
        ASSERT_TRUE(im.ok()) << im.status().ToString();
        ASSERT_EQ(im->ops, im->applied + im->duplicates + im->held_back);
        if (im->applied > 0 || im->held_back > 0) changed = true;
      }
      bool all_known = true;
      for (Node& node : nodes_) all_known = all_known && NonZero(node.replica->Known()) == all;
      if (!changed && all_known) return;
    }
    for (size_t i = 0; i < n; i++) {
      EXPECT_EQ(VvToString(NonZero(nodes_[i].replica->Known())), VvToString(all))
          << "replica " << i << " did not catch up";
    }
    FAIL() << "no quiescence after 8 all-to-all rounds";
  }

  // Reads every op's HLC back from its origin's log (the outbox keeps every local op: there is
  // no server to acknowledge them) and checks the logs hold exactly the ops that were made.
  void ResolveHlcs() {
    for (Node& node : nodes_) {
      std::map<std::pair<ReplicaId, uint64_t>, Op> logged;
      ASSERT_OK(node.replica->Log([&](const Op& op) {
        logged[{op.id.origin, op.id.seq}] = op;
        return Status::OK();
      }));
      uint64_t own = 0;
      Hlc last = 0;
      for (const auto& [ident, op] : logged) {
        if (ident.first != node.id) continue;
        own++;
        ASSERT_EQ(ident.second, own) << "local op missing from the log of " << node.id.Hex();
        RefOp& ref = node.ops.at(static_cast<size_t>(own - 1));
        ASSERT_GT(op.id.hlc, last) << "HLC not strictly increasing at seq " << own;
        last = op.id.hlc;
        ref.hlc = op.id.hlc;
      }
      ASSERT_EQ(own, node.ops.size()) << "outbox of " << node.id.Hex() << " lost local ops";
    }
    // Every logged op, of any origin, is one that was made, with the same content.
    std::map<ReplicaId, const Node*> by_id;
    for (const Node& node : nodes_) by_id[node.id] = &node;
    for (size_t i = 0; i < nodes_.size(); i++) {
      ASSERT_OK(nodes_[i].replica->Log([&](const Op& op) -> Status {
        auto it = by_id.find(op.id.origin);
        EXPECT_TRUE(it != by_id.end()) << "unknown origin " << op.id.origin.Hex();
        if (it == by_id.end()) return Status::OK();
        EXPECT_TRUE(op.id.seq >= 1 && op.id.seq <= it->second->ops.size());
        if (op.id.seq < 1 || op.id.seq > it->second->ops.size()) return Status::OK();
        const RefOp& ref = it->second->ops[static_cast<size_t>(op.id.seq - 1)];
        std::string where = "replica " + std::to_string(i) + " logs " + op.id.origin.Hex() + ":" +
                            std::to_string(op.id.seq);
        EXPECT_EQ(op.id.hlc, ref.hlc) << where;
        EXPECT_EQ(op.kind, ref.kind) << where;
        EXPECT_EQ(op.collection, ref.collection) << where;
        EXPECT_EQ(op.key, ref.key) << where;
        if (ref.kind != OpKind::kDelete) {
          EXPECT_EQ(op.field, ref.field) << where;
        }
        if (ref.kind == OpKind::kSet) {
          EXPECT_TRUE(op.value == ref.value)
              << where << ": " << CanonicalJson(ValueToJson(op.value)) << " vs "
              << CanonicalJson(ValueToJson(ref.value));
        }
        if (ref.kind == OpKind::kIncrement) {
          EXPECT_EQ(op.delta, ref.delta) << where;
        }
        return Status::OK();
      }));
    }
  }

  // The ops a replica that accounts for `known` has: per origin, seq <= known[origin].
  std::vector<const RefOp*> OpsUpTo(const VersionVector& known) const {
    std::vector<const RefOp*> out;
    for (const Node& node : nodes_) {
      auto it = known.find(node.id);
      uint64_t through = it == known.end() ? 0 : it->second;
      for (const RefOp& op : node.ops) {
        if (op.seq <= through) out.push_back(&op);
      }
    }
    return out;
  }

  // For a failure message: the ops of every document whose state differs, with their order key
  // and whether `known` accounts for them.
  std::string ExplainDiff(const std::string& got_dump, const VersionVector& known) const {
    const Json got = Json::parse(got_dump);
    const Json want = ReferenceState(OpsUpTo(known));
    std::string out;
    for (const auto& coll : kCollections) {
      for (const auto& key : kKeys) {
        Json g = got.contains(coll) && got[coll].contains(key) ? got[coll][key] : Json();
        Json w = want.contains(coll) && want[coll].contains(key) ? want[coll][key] : Json();
        if (g == w) continue;
        out += "\n" + coll + "/" + key + ": got " + g.dump() + ", want " + w.dump();
        std::vector<const RefOp*> ops;
        for (const Node& node : nodes_) {
          for (const RefOp& op : node.ops) {
            if (op.collection == coll && op.key == key) ops.push_back(&op);
          }
        }
        std::sort(ops.begin(), ops.end(), [](const RefOp* x, const RefOp* y) { return Before(*x, *y); });
        for (const RefOp* op : ops) {
          auto it = known.find(op->origin);
          bool accounted = it != known.end() && op->seq <= it->second;
          out += "\n  " + std::string(accounted ? "  " : "- ") + "hlc " +
                 std::to_string(HlcPhysical(op->hlc)) + "." + std::to_string(HlcCounter(op->hlc)) +
                 " " + op->origin.Hex().substr(28) + ":" + std::to_string(op->seq) + " " +
                 OpKindName(op->kind) + " " + op->field +
                 (op->kind == OpKind::kSet ? " = " + CanonicalJson(ValueToJson(op->value)) : "") +
                 (op->kind == OpKind::kIncrement ? " += " + std::to_string(op->delta) : "");
        }
      }
    }
    return out;
  }

  void Verify() {
    const size_t n = nodes_.size();
    ResolveHlcs();
    if (::testing::Test::HasFatalFailure()) return;

    std::vector<const RefOp*> all_ops = OpsUpTo(Everything());
    const Json expected = ReferenceState(all_ops);
    const std::string expected_dump = CanonicalJson(expected);
    std::map<std::string, std::string> expected_colls;
    for (const auto& [coll, docs] : expected.items()) {
      expected_colls[coll] = Sha256Hex(CanonicalJson(docs));
    }
    for (size_t i = 0; i < n; i++) {
      SCOPED_TRACE("replica " + std::to_string(i) + " " + nodes_[i].id.Hex());
      Replica& r = *nodes_[i].replica;
      EXPECT_EQ(VALUE_OR_FAIL(r.DumpString()), expected_dump);
      EXPECT_EQ(VALUE_OR_FAIL(r.Digest()), Sha256Hex(expected_dump));
      EXPECT_EQ(VALUE_OR_FAIL(r.CollectionDigests()), expected_colls);
      ReplicaStatus st = VALUE_OR_FAIL(r.GetStatus());
      EXPECT_EQ(st.held_back_ops, 0) << "ops still held back after convergence";
      EXPECT_EQ(st.rejected_ops, 0);
      EXPECT_EQ(st.last_seq, nodes_[i].ops.size());
      EXPECT_EQ(st.pending_ops, static_cast<int64_t>(nodes_[i].ops.size()));
      // Every visible document reads back through Get as the dump shows it.
      for (const auto& coll : kCollections) {
        for (const auto& key : kKeys) {
          auto got = VALUE_OR_FAIL(r.Get(coll, key));
          bool want = expected.contains(coll) && expected[coll].contains(key);
          ASSERT_EQ(got.has_value(), want) << coll << "/" << key;
          if (want) {
            EXPECT_EQ(CanonicalJson(FieldsToJson(*got)), CanonicalJson(expected[coll][key]));
          }
        }
      }
    }

    // Where each transaction ends, per origin: a replica never accounts for half of one.
    std::map<ReplicaId, std::vector<bool>> txn_end;
    for (const Node& node : nodes_) {
      auto& ends = txn_end[node.id];
      ends.push_back(true);  // seq 0
      for (const RefOp& op : node.ops) ends.push_back(op.txn_end);
    }
    for (const Snapshot& s : snapshots_) {
      SCOPED_TRACE("snapshot of replica " + std::to_string(s.node) + " " + s.what + ", known " +
                   VvToString(s.known));
      for (const auto& [origin, through] : s.known) {
        auto it = txn_end.find(origin);
        ASSERT_TRUE(it != txn_end.end());
        ASSERT_LT(through, it->second.size());
        EXPECT_TRUE(it->second[static_cast<size_t>(through)]) << "accounts for half a transaction of " << origin.Hex();
      }
      // Exactly the state of the ops Known() accounts for, even while files are held back.
      EXPECT_EQ(s.dump, CanonicalJson(ReferenceState(OpsUpTo(s.known))))
          << "ops not accounted for are marked '-':" << ExplainDiff(s.dump, s.known);
      if (::testing::Test::HasFailure()) return;  // one bad snapshot says enough
    }

    // HLC receive rule: a local op made after an import orders after everything applied.
    for (const ImportEvent& e : import_events_) {
      const Node& node = nodes_[e.node];
      if (e.next_seq > node.ops.size()) continue;
      const RefOp& next = node.ops[static_cast<size_t>(e.next_seq - 1)];
      for (const RefOp* op : OpsUpTo(e.known)) {
        ASSERT_GT(next.hlc, op->hlc) << "local op " << e.next_seq << " of replica " << e.node
                                     << " does not order after the received op "
                                     << op->origin.Hex() << ":" << op->seq;
      }
    }
  }

  const uint64_t seed_;
  Rng rng_;
  const std::string dir_;
  RunCounters* counters_;
  std::vector<Node> nodes_;
  std::vector<ExportFile> files_;
  std::vector<Snapshot> snapshots_;
  std::vector<ImportEvent> import_events_;
  int64_t global_ms_ = kEpochMs;
  int tie_steps_ = 0;
  int64_t tie_ms_ = 0;
};

TEST(ConvergenceTest, RandomHistoriesConvergeToTheReferenceState) {
  std::vector<uint64_t> seeds;
  if (auto one = EnvNumber("CAIRN_SEED")) {
    seeds.push_back(*one);
  } else {
    uint64_t count = EnvNumber("CAIRN_SEEDS").value_or(20);
    for (uint64_t s = 1; s <= count; s++) seeds.push_back(s);
  }
  RunCounters counters;
  for (uint64_t seed : seeds) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " (replay: CAIRN_SEED=" + std::to_string(seed) +
                 ")");
    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    History(seed, dir.path(), &counters).Run();
    if (HasFailure()) {
      return;
    }
  }
  std::printf("%zu seeds: %llu ops in %llu writes (%llu refused), %llu imports (%llu held back "
              "ops in %llu imports, %llu duplicates), %llu reopens; %llu intermediate states "
              "compared exactly\n",
              seeds.size(), static_cast<unsigned long long>(counters.ops),
              static_cast<unsigned long long>(counters.writes),
              static_cast<unsigned long long>(counters.rejected_writes),
              static_cast<unsigned long long>(counters.imports),
              static_cast<unsigned long long>(counters.held_back),
              static_cast<unsigned long long>(counters.gap_imports),
              static_cast<unsigned long long>(counters.duplicates),
              static_cast<unsigned long long>(counters.reopens),
              static_cast<unsigned long long>(counters.snapshots));
  if (seeds.size() >= 5) {
    // The run exercised what it claims to.
    EXPECT_GT(counters.gap_imports, 0u);
    EXPECT_GT(counters.duplicates, 0u);
    EXPECT_GT(counters.reopens, 0u);
    EXPECT_GT(counters.snapshots, 0u);
  }
}

// ---------------------------------------------------------------------------------------------
// Focused cases

class ConvergenceFixture : public ::testing::Test {
 protected:
  struct Peer {
    FakeClock clock;
    std::unique_ptr<Replica> replica;
  };

  std::unique_ptr<Peer> NewPeer(const std::string& name, int64_t now_ms) {
    auto p = std::make_unique<Peer>();
    p->clock.Set(now_ms);
    ReplicaOptions opts;
    opts.clock = &p->clock;
    auto r = Replica::Open(dir_.path() + "/" + name + ".cairn", opts);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (r.ok()) p->replica = std::move(r).value();
    return p;
  }
  std::string File(const std::string& name) const { return dir_.path() + "/" + name; }

  TempDir dir_;
};

// The same ops, delivered as three export files in each of the 6 orders (one of the files starts
// past the others' watermark, so some orders hold ops back), give one state.
TEST_F(ConvergenceFixture, EveryDeliveryOrderGivesTheSameDigest) {
  auto a = NewPeer("a", kEpochMs);
  auto b = NewPeer("b", kEpochMs - 2000);  // behind
  auto c = NewPeer("c", kEpochMs + 500);
  ASSERT_TRUE(a->replica && b->replica && c->replica);
  Replica& ra = *a->replica;
  Replica& rb = *b->replica;
  Replica& rc = *c->replica;

  ASSERT_OK(rb.Put("items", "k1", {{"a", Value::Int(1)}, {"b", Value::String("b1")}}));
  ASSERT_OK(rb.Increment("items", "k2", "n", 5));
  ASSERT_OK(rb.Delete("items", "k3"));
  const VersionVector b_early = rb.Known();
  ASSERT_OK(rb.Export(File("b_early"), nullptr).status());
  ASSERT_OK(ra.Import(File("b_early")).status());
  ASSERT_OK(rc.Import(File("b_early")).status());

  // Concurrent, conflicting edits on all three.
  a->clock.Advance(10);
  ASSERT_OK(ra.Put("items", "k1", {{"a", Value::Int(2)}}));
  ASSERT_OK(ra.Delete("items", "k2"));
  ASSERT_OK(ra.Increment("items", "k3", "n", 7));
  b->clock.Advance(5000);  // now ahead
  ASSERT_OK(rb.Increment("items", "k2", "n", std::numeric_limits<int64_t>::max()));
  ASSERT_OK(rb.Increment("items", "k2", "n", 3));  // wraps
  ASSERT_OK(rb.Write(WriteBatch()
                         .Set("Notes", "n1", "t", Value::String("\xc3\xa9"))
                         .Delete("items", "k1")
                         .Set("items", "k1", "b", Value::Bytes(std::string("\0\xff", 2)))));
  c->clock.Set(kEpochMs);  // same time as a: ties broken by origin bytes
  ASSERT_OK(rc.Put("items", "k1", {{"a", Value::Double(-0.0)}}));
  ASSERT_OK(rc.Increment("items", "k3", "n", -2));

  // f1: all of a (with b's early ops); f2: b's later ops only (a gap for whoever lacks b's
  // early ops); f3: all of c (with b's early ops).
  ASSERT_OK(ra.Export(File("f1"), nullptr).status());
  ASSERT_OK(rb.Export(File("f2"), &b_early).status());
  ASSERT_OK(rc.Export(File("f3"), nullptr).status());

  // Reference: one replica that receives everything in the plain order.
  auto ref = NewPeer("ref", kEpochMs);
  ASSERT_TRUE(ref->replica);
  for (const char* f : {"b_early", "f1", "f2", "f3"}) ASSERT_OK(ref->replica->Import(File(f)).status());
  const std::string want = VALUE_OR_FAIL(ref->replica->Digest());
  const std::string want_dump = VALUE_OR_FAIL(ref->replica->DumpString());

  std::vector<std::string> order = {"f1", "f2", "f3"};
  int permutations = 0;
  do {
    std::string name = "p_" + order[0] + order[1] + order[2];
    SCOPED_TRACE(name);
    auto t = NewPeer(name, kEpochMs - 100'000);
    ASSERT_TRUE(t->replica);
    uint64_t held_back = 0;
    for (const auto& f : order) {
      auto im = t->replica->Import(File(f));
      ASSERT_TRUE(im.ok()) << im.status().ToString();
      held_back += im->held_back;
    }
    // f2 first: b's later ops wait for its early ops (in f1 or f3).
    if (order[0] == "f2") {
      EXPECT_GT(held_back, 0u);
    }
    EXPECT_EQ(VALUE_OR_FAIL(t->replica->Digest()), want);
    EXPECT_EQ(VALUE_OR_FAIL(t->replica->DumpString()), want_dump);
    EXPECT_EQ(VALUE_OR_FAIL(t->replica->GetStatus()).held_back_ops, 0);
    EXPECT_EQ(NonZero(t->replica->Known()), NonZero(ref->replica->Known()));
    permutations++;
  } while (std::next_permutation(order.begin(), order.end()));
  EXPECT_EQ(permutations, 6);

  // And the three originals converge on it too once they have exchanged everything.
  for (Replica* r : {&ra, &rb, &rc}) {
    for (const char* f : {"f1", "f2", "f3"}) ASSERT_OK(r->Import(File(f)).status());
    EXPECT_EQ(VALUE_OR_FAIL(r->Digest()), want);
  }
}

// Importing the same file twice, or an older file after a newer one, changes nothing.
TEST_F(ConvergenceFixture, ImportingTheSameFileTwiceChangesNothing) {
  auto a = NewPeer("a", kEpochMs);
  auto b = NewPeer("b", kEpochMs + 3);
  ASSERT_TRUE(a->replica && b->replica);
  Replica& ra = *a->replica;
  Replica& rb = *b->replica;
  ASSERT_OK(ra.Put("Notes", "mine", {{"a", Value::Int(1)}}));
  ASSERT_OK(rb.Put("items", "k1", {{"a", Value::Int(2)}, {"b", Value::Null()}}));
  ASSERT_OK(rb.Increment("items", "k1", "n", -4));
  ASSERT_OK(rb.Export(File("old"), nullptr).status());
  ASSERT_OK(rb.Delete("items", "k1"));
  ASSERT_OK(rb.Put("items", "k1", {{"b", Value::Bool(true)}}));
  ASSERT_OK(rb.Increment("Notes", "k2", "n", 1));
  ASSERT_OK(rb.Export(File("new"), nullptr).status());

  auto first = ra.Import(File("new"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_GT(first->applied, 0u);
  const std::string digest = VALUE_OR_FAIL(ra.Digest());
  const std::string dump = VALUE_OR_FAIL(ra.DumpString());
  const VersionVector known = ra.Known();

  for (const char* f : {"new", "old", "new"}) {
    SCOPED_TRACE(f);
    auto again = ra.Import(File(f));
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_GT(again->ops, 0u);
    EXPECT_EQ(again->duplicates, again->ops);
    EXPECT_EQ(again->applied, 0u);
    EXPECT_EQ(again->held_back, 0u);
    EXPECT_EQ(VALUE_OR_FAIL(ra.Digest()), digest);
    EXPECT_EQ(VALUE_OR_FAIL(ra.DumpString()), dump);
    EXPECT_EQ(ra.Known(), known);
  }
  // b receives its own ops back through a: all duplicates too.
  ASSERT_OK(ra.Export(File("back"), nullptr).status());
  const std::string b_digest_before = VALUE_OR_FAIL(rb.Digest());
  auto back = rb.Import(File("back"));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->applied, 1u);  // a's own op
  EXPECT_EQ(back->duplicates, back->ops - 1);
  EXPECT_EQ(VALUE_OR_FAIL(rb.Digest()), digest);
  EXPECT_NE(b_digest_before, digest);
}

// A gap is held back (not applied, not visible) until an import fills it; then everything lands.
TEST_F(ConvergenceFixture, GapIsHeldBackUntilFilled) {
  auto a = NewPeer("a", kEpochMs);
  auto b = NewPeer("b", kEpochMs);
  ASSERT_TRUE(a->replica && b->replica);
  Replica& ra = *a->replica;
  Replica& rb = *b->replica;
  for (int i = 0; i < 5; i++) {
    ASSERT_OK(rb.Put("items", "k" + std::to_string(i), {{"a", Value::Int(i)}}));
  }
  VersionVector since{{rb.id(), 3}};  // a does not have seq 1..3
  ASSERT_OK(rb.Export(File("tail"), &since).status());
  ASSERT_OK(rb.Export(File("all"), nullptr).status());

  auto tail = ra.Import(File("tail"));
  ASSERT_TRUE(tail.ok()) << tail.status().ToString();
  EXPECT_EQ(tail->held_back, 2u);
  EXPECT_EQ(tail->applied, 0u);
  EXPECT_EQ(VALUE_OR_FAIL(ra.DumpString()), "{}");
  EXPECT_FALSE(VALUE_OR_FAIL(ra.Get("items", "k4")).has_value());
  EXPECT_EQ(VALUE_OR_FAIL(ra.GetStatus()).held_back_ops, 2);
  EXPECT_EQ(NonZero(ra.Known()), VersionVector{});

  auto all = ra.Import(File("all"));
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(VALUE_OR_FAIL(ra.GetStatus()).held_back_ops, 0);
  EXPECT_EQ(VALUE_OR_FAIL(ra.Digest()), VALUE_OR_FAIL(rb.Digest()));
  EXPECT_EQ(NonZero(ra.Known()), NonZero(rb.Known()));
}

// A delete that lands below later ops takes the increments it covers back out of the counter,
// including a delta of INT64_MIN (whose negation does not exist in int64: the sum wraps).
TEST_F(ConvergenceFixture, DeleteTakesBackAnIncrementOfInt64Min) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  auto a = NewPeer("a", kEpochMs);         // increments first
  auto c = NewPeer("c", kEpochMs + 1000);  // deletes after that
  auto b = NewPeer("b", kEpochMs + 2000);  // writes last
  ASSERT_TRUE(a->replica && b->replica && c->replica);
  ASSERT_OK(a->replica->Increment("items", "k", "n", kMin));
  ASSERT_OK(a->replica->Increment("items", "k", "n", 5));
  ASSERT_OK(c->replica->Delete("items", "k"));
  ASSERT_OK(b->replica->Increment("items", "k", "n", kMin));
  ASSERT_OK(b->replica->Put("items", "k", {{"m", Value::Int(1)}}));
  for (auto* p : {a.get(), b.get(), c.get()}) {
    ASSERT_OK(p->replica->Export(File(p->replica->id().Hex()), nullptr).status());
  }
  const std::string want = R"({"items":{"k":{"m":1,"n":-9223372036854775808}}})";
  // The delete last: it lands below b's ops and must subtract a's increments.
  auto t = NewPeer("t", kEpochMs);
  ASSERT_TRUE(t->replica);
  for (auto* p : {a.get(), b.get(), c.get()}) {
    ASSERT_OK(t->replica->Import(File(p->replica->id().Hex())).status());
  }
  EXPECT_EQ(VALUE_OR_FAIL(t->replica->DumpString()), want);
  // The delete first: a's increments never count.
  auto u = NewPeer("u", kEpochMs);
  ASSERT_TRUE(u->replica);
  for (auto* p : {c.get(), a.get(), b.get()}) {
    ASSERT_OK(u->replica->Import(File(p->replica->id().Hex())).status());
  }
  EXPECT_EQ(VALUE_OR_FAIL(u->replica->DumpString()), want);
}

// An export leaves out ops that its sender's state no longer needs (compaction): C's set is
// covered by D's later delete. A receiver that lacks something the file assumes (here d:1) must
// not take any part of the file: taking C's range alone would account for C's set without
// showing it and without the delete that covers it. So the whole file is held back, the
// receiver accounts for nothing it cannot show, and it applies the file once the gap is filled.
TEST_F(ConvergenceFixture, CompactedOpIsNotLostBehindAHeldBackDelete) {
  auto a = NewPeer("a", kEpochMs);
  auto b = NewPeer("b", kEpochMs);
  auto c = NewPeer("c", kEpochMs);
  auto d = NewPeer("d", kEpochMs + 1000);
  auto empty = NewPeer("empty", kEpochMs);
  ASSERT_TRUE(a->replica && b->replica && c->replica && d->replica && empty->replica);
  ASSERT_OK(c->replica->Put("items", "k", {{"f", Value::String("from c")}}));  // X = c:1
  ASSERT_OK(d->replica->Put("items", "other", {{"f", Value::Int(1)}}));        // d:1
  ASSERT_OK(d->replica->Delete("items", "k"));                                  // W = d:2 > X
  ASSERT_OK(c->replica->Export(File("c"), nullptr).status());
  ASSERT_OK(d->replica->Export(File("d"), nullptr).status());
  ASSERT_OK(a->replica->Import(File("c")).status());
  ASSERT_OK(a->replica->Import(File("d")).status());  // X is covered by W on a: compacted

  // a exports to b as if b had d:1 already: the file assumes what b lacks (a gap).
  VersionVector since{{d->replica->id(), 1}};
  ASSERT_OK(a->replica->Export(File("a"), &since).status());
  auto im = b->replica->Import(File("a"));
  ASSERT_TRUE(im.ok()) << im.status().ToString();
  EXPECT_EQ(im->applied, 0u);
  EXPECT_EQ(im->held_back, im->ops);  // all of it waits for d:1
  EXPECT_TRUE(NonZero(b->replica->Known()).empty()) << VvToString(b->replica->Known());
  EXPECT_EQ(VALUE_OR_FAIL(b->replica->DumpString()),
            VALUE_OR_FAIL(empty->replica->DumpString()));

  // Once the gap is filled the held file applies whole, and b agrees with a.
  ASSERT_OK(b->replica->Import(File("d")).status());
  EXPECT_EQ(VALUE_OR_FAIL(b->replica->GetStatus()).held_back_ops, 0);
  EXPECT_EQ(NonZero(b->replica->Known()), NonZero(a->replica->Known()));
  EXPECT_EQ(VALUE_OR_FAIL(b->replica->Digest()), VALUE_OR_FAIL(a->replica->Digest()));
}

// The same when the covering op is not in the file at all because `since` wrongly says the
// receiver has it: the file declares that assumption (an empty range for d), so the receiver
// can tell it lacks something and holds the file back instead of accounting for c:1.
TEST_F(ConvergenceFixture, CompactedOpIsNotLostBehindAnOpSinceClaimsKnown) {
  auto a = NewPeer("a", kEpochMs);
  auto b = NewPeer("b", kEpochMs);
  auto c = NewPeer("c", kEpochMs);
  auto d = NewPeer("d", kEpochMs + 1000);
  ASSERT_TRUE(a->replica && b->replica && c->replica && d->replica);
  ASSERT_OK(c->replica->Put("items", "k", {{"f", Value::String("from c")}}));  // X = c:1
  ASSERT_OK(d->replica->Delete("items", "k"));                                  // W = d:1 > X
  ASSERT_OK(c->replica->Export(File("c"), nullptr).status());
  ASSERT_OK(d->replica->Export(File("d"), nullptr).status());
  ASSERT_OK(a->replica->Import(File("c")).status());
  ASSERT_OK(a->replica->Import(File("d")).status());

  VersionVector since{{d->replica->id(), 1}};  // wrong: b does not have d:1
  ASSERT_OK(a->replica->Export(File("a"), &since).status());
  auto im = b->replica->Import(File("a"));
  ASSERT_TRUE(im.ok()) << im.status().ToString();
  EXPECT_TRUE(NonZero(b->replica->Known()).empty()) << VvToString(b->replica->Known());
  EXPECT_EQ(VALUE_OR_FAIL(b->replica->DumpString()), "{}");

  ASSERT_OK(b->replica->Import(File("d")).status());
  EXPECT_EQ(NonZero(b->replica->Known()), NonZero(a->replica->Known()));
  EXPECT_EQ(VALUE_OR_FAIL(b->replica->Digest()), VALUE_OR_FAIL(a->replica->Digest()));
}

}  // namespace
}  // namespace cairn
