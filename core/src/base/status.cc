#include "base/status.h"

namespace cairn {

Code CodeFromInt(int n) {
  switch (n) {
#define XX(name, num, retry, msg) \
  case num:                       \
    return Code::k##name;
#include "cairn/errors.def"
#undef XX
  }
  return Code::kERROR;
}

const char* CodeName(Code code) {
  switch (code) {
#define XX(name, num, retry, msg) \
  case Code::k##name:             \
    return #name;
#include "cairn/errors.def"
#undef XX
  }
  return "EUNKNOWN";
}

const char* CodeMessage(Code code) {
  switch (code) {
#define XX(name, num, retry, msg) \
  case Code::k##name:             \
    return msg;
#include "cairn/errors.def"
#undef XX
  }
  return "unknown error";
}

RetryClass CodeRetryClass(Code code) {
  constexpr RetryClass PERMANENT = RetryClass::kPermanent;
  constexpr RetryClass TRANSIENT = RetryClass::kTransient;
  constexpr RetryClass ABORTED = RetryClass::kAborted;
  (void)ABORTED;
  switch (code) {
#define XX(name, num, retry, msg) \
  case Code::k##name:             \
    return retry;
#include "cairn/errors.def"
#undef XX
  }
  return PERMANENT;
}

Status::Status(Code code, std::string message) {
  if (code != Code::kOK) state_.reset(new State{code, std::move(message)});
}

Status::Status(const Status& other)
    : state_(other.state_ ? new State(*other.state_) : nullptr) {}

Status& Status::operator=(const Status& other) {
  if (this != &other) state_.reset(other.state_ ? new State(*other.state_) : nullptr);
  return *this;
}

const std::string& Status::message() const {
  static const std::string kEmpty;
  return state_ ? state_->message : kEmpty;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s = CodeName(code());
  s += ": ";
  s += state_->message.empty() ? CodeMessage(code()) : state_->message;
  return s;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return Status();
  std::string msg(context);
  msg += ": ";
  msg += message();
  return Status(code(), std::move(msg));
}

}  // namespace cairn
