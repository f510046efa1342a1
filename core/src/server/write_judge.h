// Sync rules' write check over a push (docs/sync-rules.md "Writing"): each transaction is judged
// on the state the server merged before it, with the push's earlier accepted transactions, and
// on that state with the transaction applied. The rule itself is rules::Rules::CheckWrite; this
// class finds the states to judge, whichever server store holds them.
#ifndef CAIRN_SERVER_WRITE_JUDGE_H_
#define CAIRN_SERVER_WRITE_JUDGE_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "crdt/doc_state.h"
#include "oplog/op.h"
#include "protocol/batch_codec.h"
#include "rules/rules.h"
#include "server/server_store.h"
#include "store/replica_store.h"

namespace cairn::server {

class WriteJudge final : public TxnJudge {
 public:
  // `state`: the server's merged state before the push (none of its transactions applied).
  WriteJudge(const rules::Rules* rules, const rules::Grants* grants, store::ReplicaStore* state)
      : rules_(rules), grants_(grants), state_(state) {}

  // Sets `verdict` for the transaction txn[0..n): OK, or EPERM saying which document and why;
  // an accepted transaction's effects count for the push's later transactions. Errors: the
  // store's trouble reading a document (the push cannot be judged).
  Status Judge(const std::vector<Op>& txn, size_t n, Status* verdict) override;
  // Each document the accepted transactions changed whose channels differ from those it had
  // before the push, in (collection, key) order.
  std::vector<protocol::ChannelMove> Moves() const override;

 private:
  using DocRef = std::pair<std::string, std::string>;  // collection, key
  Result<crdt::DocState> StateOf(const DocRef& doc);
  // The channels of `doc` in `state` (a document not visible: those of its key alone).
  std::vector<std::string> ChannelsOf(const DocRef& doc, const crdt::DocState& state) const;

  const rules::Rules* rules_;
  const rules::Grants* grants_;
  store::ReplicaStore* state_;
  // The documents the push's accepted transactions changed: as the push left them, and their
  // channels before it.
  std::map<DocRef, crdt::DocState> accepted_;
  std::map<DocRef, std::vector<std::string>> channels_before_;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_WRITE_JUDGE_H_
