#include "oplog/admission.h"

#include <string>

#include "oplog/validate.h"

namespace cairn::admission {

std::string OriginSeq::Name(uint64_t seq) const {
  return "op " + origin_.Hex() + ":" + std::to_string(seq);
}

Status OriginSeq::Declare(uint64_t from, uint64_t to) {
  if (declared_ || seen_ || from > to || to > kMaxSeq) {
    return Status::Corrupt("bad or repeated range (" + std::to_string(from) + ", " +
                           std::to_string(to) + "] for origin " + origin_.Hex());
  }
  declared_ = true;
  from_ = from;
  to_ = to;
  last_ = from;
  return Status::OK();
}

Result<Seq> OriginSeq::Next(uint64_t seq) {
  seen_ = true;
  if (declared_) {
    if (seq <= from_ || seq > to_ || seq <= last_) {
      return Status::Corrupt(Name(seq) + " lies outside or out of order in the range (" +
                             std::to_string(from_) + ", " + std::to_string(to_) +
                             "] declared for it");
    }
    last_ = seq;
    return Has(through_, seq) ? Seq::kDuplicate : Seq::kNew;
  }
  if (Has(through_, seq)) return Seq::kDuplicate;
  if (seq <= last_) return Status::Corrupt(Name(seq) + " repeated within one batch");
  if (seq != last_ + 1) {
    return Status::Corrupt(Name(seq) + " follows seq " + std::to_string(last_) + " (a gap)");
  }
  last_ = seq;
  return Seq::kNew;
}

Status CheckFork(const ReplicaId& origin, uint64_t seq, Hlc sent, std::optional<Hlc> held) {
  if (!held || *held == sent) return Status::OK();
  return Status(Code::kEFORKED,
                "op " + std::to_string(seq) + " of replica " + origin.Hex() +
                    " differs from the one received under that seq: the replica's history "
                    "forked (a file restored from a backup or copied from another device)");
}

}  // namespace cairn::admission
