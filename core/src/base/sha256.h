// SHA-256 through mbedTLS (2.x `_ret` API, 3.x plain names), for digests and file checksums.
#ifndef CAIRN_BASE_SHA256_H_
#define CAIRN_BASE_SHA256_H_

#include <memory>
#include <string>
#include <string_view>

namespace cairn {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view data);
  std::string Finish();  // 32 raw bytes; the object must not be used afterwards

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn

#endif  // CAIRN_BASE_SHA256_H_
