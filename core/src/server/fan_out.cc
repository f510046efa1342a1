#include "server/fan_out.h"

#include <algorithm>

#include "protocol/batch_codec.h"
#include "store/replica_store.h"

namespace cairn::server {

Result<EntryReach> ReachOf(const LogEntry& entry, const rules::Rules& rules,
                           store::ReplicaStore* state) {
  EntryReach reach;
  reach.cursor = entry.cursor;
  reach.origin = entry.origin;
  reach.first_seq = entry.first_seq;
  reach.last_seq = entry.last_seq;
  std::set<std::pair<std::string, std::string>> written;
  std::set<std::string> channels;
  CAIRN_RETURN_IF_ERROR(protocol::DecodeBatchFrame(
      entry.batch, "log entry",
      [&](const wire::OpBatch& b) -> Status {
        CAIRN_ASSIGN_OR_RETURN(auto moves, protocol::DecodeMoves(b));
        for (protocol::ChannelMove& m : moves) {
          channels.insert(m.before.begin(), m.before.end());
          channels.insert(m.after.begin(), m.after.end());
          reach.moved.emplace_back(std::move(m.collection), std::move(m.key));
        }
        return Status::OK();
      },
      [&](const Op& op) {
        written.emplace(op.collection, op.key);
        return Status::OK();
      }));
  for (const auto& [collection, key] : written) {
    CAIRN_ASSIGN_OR_RETURN(std::optional<Fields> fields, state->GetDoc(collection, key));
    for (std::string& c : rules.Channels(collection, key, fields ? *fields : Fields())) {
      channels.insert(std::move(c));
    }
  }
  reach.channels.assign(channels.begin(), channels.end());
  return reach;
}

void FanOut::Extend(uint64_t from, std::vector<EntryReach> entries) {
  const uint64_t end = kept_.empty() ? kept_from_ : kept_.back().cursor;
  if (!kept_valid_ || end != from) {
    kept_.clear();
    kept_from_ = from;
    kept_valid_ = true;
  }
  for (EntryReach& e : entries) kept_.push_back(std::move(e));
  while (kept_.size() > kKeptEntries) {
    kept_from_ = kept_.front().cursor;
    kept_.pop_front();
  }
}

const EntryReach* FanOut::Next(uint64_t after) const {
  if (!kept_valid_ || after < kept_from_) return nullptr;
  auto it = std::upper_bound(kept_.begin(), kept_.end(), after,
                             [](uint64_t c, const EntryReach& e) { return c < e.cursor; });
  return it == kept_.end() ? nullptr : &*it;
}

void FanOut::SetView(uint64_t serial, const rules::View* view) {
  Forget(serial);
  if (view == nullptr || view->all) {
    wide_.insert(serial);
    return;
  }
  for (const std::string& c : view->channels) by_channel_[c].insert(serial);
  views_[serial] = view->channels;
}

void FanOut::Forget(uint64_t serial) {
  wide_.erase(serial);
  auto it = views_.find(serial);
  if (it != views_.end()) {
    for (const std::string& c : it->second) {
      auto s = by_channel_.find(c);
      if (s == by_channel_.end()) continue;
      s->second.erase(serial);
      if (s->second.empty()) by_channel_.erase(s);
    }
    views_.erase(it);
  }
  SetIdle(serial, std::nullopt);
}

std::set<uint64_t> FanOut::Concerned(const std::vector<EntryReach>& entries) const {
  std::set<uint64_t> out = wide_;
  for (const EntryReach& e : entries) {
    for (const std::string& c : e.channels) {
      auto it = by_channel_.find(c);
      if (it != by_channel_.end()) out.insert(it->second.begin(), it->second.end());
    }
  }
  return out;
}

void FanOut::SetIdle(uint64_t serial, std::optional<uint64_t> at) {
  auto it = idle_at_.find(serial);
  if (it != idle_at_.end()) {
    idle_.erase({it->second, serial});
    idle_at_.erase(it);
  }
  if (at) {
    idle_.insert({*at, serial});
    idle_at_[serial] = *at;
  }
}

std::vector<uint64_t> FanOut::FarBehind(uint64_t head, uint64_t floor) const {
  std::vector<uint64_t> out;
  for (const auto& [at, serial] : idle_) {
    if (at + kMaxIdleLag >= head && at >= floor) break;
    out.push_back(serial);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace cairn::server
