// FanOut: with sync rules, which sessions a new log entry concerns (docs/sync-rules.md
// "Fan-out"), so that the server's work per write follows the clients that may read it, not
// the clients connected. It keeps three things, each by session serial, none of which reads
// the store:
//  - the reach of recent log entries: each entry's origin and seqs, and the channels its
//    documents were in when it was read (at the head then) and those its channel moves name,
//    computed once per entry, not once per session;
//  - which sessions view which channels (and which view them all);
//  - the sessions idle at a cursor: caught up when last pumped, with nothing of their own to
//    send. A session the new entries do not concern stays idle behind the head; its cursor
//    moves on later, as coverage (a quiet period, or a long way behind).
//
// Single-threaded, as the hub.
#ifndef CAIRN_SERVER_FAN_OUT_H_
#define CAIRN_SERVER_FAN_OUT_H_

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/result.h"
#include "oplog/op.h"
#include "rules/rules.h"
#include "server/server_store.h"

namespace cairn::server {

// What a session needs of a log entry to know that it sends the client none of it.
struct EntryReach {
  uint64_t cursor = 0;
  ReplicaId origin;
  uint64_t first_seq = 0, last_seq = 0;
  // Sorted, without repeats: each written document's channels at the head when the entry was
  // read, and each channel move's before and after.
  std::vector<std::string> channels;
  // The documents its channel moves name (collection, key).
  std::vector<std::pair<std::string, std::string>> moved;
};

// The reach of `entry`, its documents' channels read from `state` under `rules`.
Result<EntryReach> ReachOf(const LogEntry& entry, const rules::Rules& rules,
                           store::ReplicaStore* state);

class FanOut {
 public:
  // How many recent entries' reach is kept, and how far behind the head an idle session may
  // stay before it is pumped whatever the time (less: it needs the reach of what it skips).
  static constexpr size_t kKeptEntries = 4096;
  static constexpr uint64_t kMaxIdleLag = 1024;

  // ---- The reach of recent entries ----
  // `entries`, in cursor order, are every log entry after cursor `from`. When `from` is not
  // where the kept reach ends (a gap: the first call, a store reset), what was kept is
  // dropped first: the kept entries are always every entry of a span of the log.
  void Extend(uint64_t from, std::vector<EntryReach> entries);
  // The entry right after cursor `after` in the log, if it is kept (nullptr: read the log).
  const EntryReach* Next(uint64_t after) const;

  // ---- Who views what ----
  // The view of session `serial`: `view` null when it has none (a server without rules:
  // every entry concerns it), all channels, or some.
  void SetView(uint64_t serial, const rules::View* view);
  void Forget(uint64_t serial);  // closed: out of the view index and the idle set
  // The sessions whose view meets a channel of one of `entries` or holds them all, in serial
  // order.
  std::set<uint64_t> Concerned(const std::vector<EntryReach>& entries) const;

  // ---- Idle sessions ----
  // Session `serial` is idle at cursor `at` (nullopt: busy, or pumped now).
  void SetIdle(uint64_t serial, std::optional<uint64_t> at);
  // The idle sessions more than kMaxIdleLag behind `head`, or behind the log's `floor` (what
  // they skip was trimmed from the log: only the kept reach says it), in serial order.
  std::vector<uint64_t> FarBehind(uint64_t head, uint64_t floor) const;

 private:
  std::deque<EntryReach> kept_;
  uint64_t kept_from_ = 0;  // kept_ holds every log entry after it (up to kept_.back())
  bool kept_valid_ = false;
  std::unordered_map<std::string, std::set<uint64_t>> by_channel_;
  std::set<uint64_t> wide_;                          // sessions every entry concerns
  std::map<uint64_t, std::set<std::string>> views_;  // serial -> the channels it is indexed by
  std::set<std::pair<uint64_t, uint64_t>> idle_;     // (cursor, serial)
  std::unordered_map<uint64_t, uint64_t> idle_at_;   // serial -> cursor
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_FAN_OUT_H_
