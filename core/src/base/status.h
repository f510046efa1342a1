// cairn::Status: the result of an operation that can fail. An OK status holds no heap state, so
// success costs one null pointer (as leveldb's Status). Codes are the C API's numbers, generated
// from core/include/cairn/errors.def, so a Status crosses the C boundary without translation.
#ifndef CAIRN_BASE_STATUS_H_
#define CAIRN_BASE_STATUS_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace cairn {

enum class Code : int {
#define XX(name, num, retry, msg) k##name = num,
#include "cairn/errors.def"
#undef XX
};

// How a caller should react to a failed call (abseil's status guidance, (a)/(b)/(c)).
enum class RetryClass { kPermanent, kTransient, kAborted };

// The code numbered `n` (a code received from a peer); kERROR for a number that is none.
Code CodeFromInt(int n);
const char* CodeName(Code code);          // "EINVAL"
const char* CodeMessage(Code code);       // "invalid argument"
RetryClass CodeRetryClass(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message);
  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status OK() { return Status(); }
  static Status Invalid(std::string msg) { return {Code::kEINVAL, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {Code::kENOTFOUND, std::move(msg)}; }
  static Status Corrupt(std::string msg) { return {Code::kECORRUPT, std::move(msg)}; }
  static Status Internal(std::string msg) { return {Code::kEINTERNAL, std::move(msg)}; }
  static Status IOError(std::string msg) { return {Code::kEIO, std::move(msg)}; }

  bool ok() const { return state_ == nullptr; }
  Code code() const { return state_ ? state_->code : Code::kOK; }
  // The readable message; "" when OK.
  const std::string& message() const;
  bool IsNotFound() const { return code() == Code::kENOTFOUND; }
  // "EINVAL: collection name ..." for logs and the command-line tools.
  std::string ToString() const;
  // Returns a copy whose message is prefixed by `context + ": "`.
  Status WithContext(std::string_view context) const;

 private:
  struct State {
    Code code;
    std::string message;
  };
  std::unique_ptr<State> state_;
};

}  // namespace cairn

#define CAIRN_STATUS_CONCAT_INNER_(a, b) a##b
#define CAIRN_STATUS_CONCAT_(a, b) CAIRN_STATUS_CONCAT_INNER_(a, b)
#define CAIRN_RETURN_IF_ERROR(expr) \
  CAIRN_RETURN_IF_ERROR_IMPL_(CAIRN_STATUS_CONCAT_(cairn_status_, __COUNTER__), expr)
#define CAIRN_RETURN_IF_ERROR_IMPL_(var, expr) \
  do {                                         \
    ::cairn::Status var = (expr);              \
    if (!var.ok()) return var;                 \
  } while (0)

#endif  // CAIRN_BASE_STATUS_H_
