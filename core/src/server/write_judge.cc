#include "server/write_judge.h"

namespace cairn::server {

Result<crdt::DocState> WriteJudge::StateOf(const DocRef& doc) {
  auto it = accepted_.find(doc);
  if (it != accepted_.end()) return it->second;
  return state_->CopyDoc(doc.first, doc.second);
}

Status WriteJudge::Judge(const std::vector<Op>& txn, size_t n, Status* verdict) {
  // Each document of the transaction: its state before, and after the transaction's ops on it.
  std::map<DocRef, std::pair<crdt::DocState, crdt::DocState>> docs;
  for (size_t i = 0; i < n; i++) {
    DocRef ref(txn[i].collection, txn[i].key);
    auto it = docs.find(ref);
    if (it == docs.end()) {
      CAIRN_ASSIGN_OR_RETURN(crdt::DocState before, StateOf(ref));
      crdt::DocState after = before;
      it = docs.emplace(std::move(ref), std::make_pair(std::move(before), std::move(after))).first;
    }
    crdt::ApplyOp(&it->second.second, txn[i]);
  }
  for (const auto& [ref, states] : docs) {
    const crdt::DocState& before = states.first;
    const crdt::DocState& after = states.second;
    const Fields before_fields = crdt::VisibleFields(before.cells);
    const Fields after_fields = crdt::VisibleFields(after.cells);
    *verdict = rules_->CheckWrite(*grants_, ref.first, ref.second,
                                  before.Visible() ? &before_fields : nullptr,
                                  after.Visible() ? &after_fields : nullptr);
    if (!verdict->ok()) return Status::OK();
  }
  for (auto& [ref, states] : docs) {
    if (channels_before_.count(ref) == 0) {
      channels_before_[ref] = ChannelsOf(ref, states.first);  // the push's first change of it
    }
    accepted_[ref] = std::move(states.second);
  }
  return Status::OK();
}

std::vector<std::string> WriteJudge::ChannelsOf(const DocRef& doc,
                                                const crdt::DocState& state) const {
  return rules_->Channels(doc.first, doc.second,
                          state.Visible() ? crdt::VisibleFields(state.cells) : Fields());
}

std::vector<protocol::ChannelMove> WriteJudge::Moves() const {
  std::vector<protocol::ChannelMove> out;
  for (const auto& [ref, state] : accepted_) {
    std::vector<std::string> after = ChannelsOf(ref, state);
    const std::vector<std::string>& before = channels_before_.at(ref);
    if (after != before) out.push_back({ref.first, ref.second, before, std::move(after)});
  }
  return out;
}

}  // namespace cairn::server
