// Fuzz target: an export file (the offline transfer: `cairn import`), imported into a fresh
// replica. Import checks the header, every frame, the end frame's counts and SHA-256, and
// applies all or nothing; a damaged file must be refused (ECORRUPT, EVERSION), never crash.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "replica/replica.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cairn;
  static const std::string path = [] {
    char tmpl[] = "/tmp/cairn-fuzz-import-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd >= 0) close(fd);
    return std::string(tmpl);
  }();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto r = Replica::Open(":memory:");
  if (!r.ok()) return 0;
  auto imported = r.value()->Import(path);
  if (imported.ok()) (void)r.value()->Digest();
  return 0;
}
