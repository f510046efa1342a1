#include "base/killpoint.h"

#if defined(CAIRN_KILL_POINTS)

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

namespace cairn {
namespace {

struct Armed {
  bool on = false;
  std::string point;
  long nth = 0;
  std::atomic<long> hits{0};
};

// Read once, on first use: CAIRN_KILL_AT=<point>:<n> (n >= 1).
Armed& State() {
  static Armed* armed = [] {
    auto* a = new Armed();
    const char* env = std::getenv("CAIRN_KILL_AT");
    if (env == nullptr) return a;
    const char* colon = std::strrchr(env, ':');
    if (colon == nullptr) return a;
    char* end = nullptr;
    const long n = std::strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || n < 1) return a;
    a->point.assign(env, static_cast<size_t>(colon - env));
    a->nth = n;
    a->on = true;
    return a;
  }();
  return *armed;
}

}  // namespace

void KillPoint(const char* name) {
  Armed& a = State();
  if (!a.on || a.point != name) return;
  if (++a.hits == a.nth) kill(getpid(), SIGKILL);
}

}  // namespace cairn

#endif  // CAIRN_KILL_POINTS
