#include "base/log.h"

#include <atomic>
#include <memory>
#include <mutex>

namespace cairn::log {
namespace {

std::mutex mu;                       // guards sink
std::shared_ptr<const Sink> sink;    // shared: a call in progress keeps it alive
std::atomic<int> min_level{99};      // above every level while there is no sink

}  // namespace

void SetSink(Sink s, Level min) {
  std::shared_ptr<const Sink> old;
  {
    std::lock_guard<std::mutex> lock(mu);
    old = std::move(sink);
    sink = s ? std::make_shared<const Sink>(std::move(s)) : nullptr;
    min_level = sink ? static_cast<int>(min) : 99;
  }
}

bool Enabled(Level level) { return static_cast<int>(level) >= min_level.load(); }

void Write(Level level, const std::string& message) {
  if (!Enabled(level)) return;
  std::shared_ptr<const Sink> s;
  {
    std::lock_guard<std::mutex> lock(mu);
    s = sink;
  }
  if (s) (*s)(level, message);
}

}  // namespace cairn::log
