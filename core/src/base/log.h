// The library's diagnostics (connections, retries, refusals): silent until the embedding app
// installs a sink (the C API's cairn_set_log_callback). Thread-safe.
#ifndef CAIRN_BASE_LOG_H_
#define CAIRN_BASE_LOG_H_

#include <functional>
#include <string>

namespace cairn::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
using Sink = std::function<void(Level level, const std::string& message)>;

// Messages at `min` or above go to `sink`, on the thread that logs them; nullptr: none. The
// previous sink is destroyed once no call to it is in progress.
void SetSink(Sink sink, Level min = Level::kInfo);
// Whether a message at `level` would go anywhere (skip building it otherwise).
bool Enabled(Level level);
void Write(Level level, const std::string& message);

}  // namespace cairn::log

#endif  // CAIRN_BASE_LOG_H_
