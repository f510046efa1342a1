// ServerMetrics: what cairn-server counts for GET /metrics (docs/backend.md "Metrics"), since
// the process started, and its rendering in the Prometheus text exposition format (version
// 0.0.4). Counted on the server's loop thread, as everything of the hub.
#ifndef CAIRN_SERVER_METRICS_H_
#define CAIRN_SERVER_METRICS_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>

namespace cairn::server {

// A histogram of durations in seconds, with fixed buckets (0.5 ms to 10 s).
class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  void Observe(double seconds);
  // The lines of `name` (its _bucket, _sum and _count series) with the labels `labels`
  // ("" or `op="x"`).
  void Render(const std::string& name, const std::string& labels, std::string* out) const;

 private:
  std::array<uint64_t, kBounds.size()> buckets_{};  // observations <= each bound
  double sum_ = 0;
  uint64_t count_ = 0;
};

// The values read when /metrics is asked for.
struct MetricGauges {
  uint64_t sync_connections = 0, http_connections = 0;
  uint64_t bytes_in = 0, bytes_out = 0;  // counters: closed connections' and open ones'
  uint64_t log_head = 0, log_floor = 0;
  uint64_t feed_polls = 0;  // long polls of the change feed waiting
};

struct ServerMetrics {
  uint64_t pushes = 0;                                 // pushes stored (devices' and HTTP writes)
  uint64_t ops_in = 0;                                 // ops they applied
  uint64_t duplicates = 0;                             // ops they repeated (retries)
  uint64_t ops_out = 0;                                // ops sent to clients
  uint64_t bytes_in_closed = 0, bytes_out_closed = 0;  // of the connections closed
  std::map<std::string, uint64_t> refused;             // transactions refused, by code name
  std::map<int, uint64_t> http_responses;              // by status
  Histogram push_seconds;                              // a device's push: received to Acked
  std::map<std::string, Histogram> store_seconds;      // store calls, by operation

  // The exposition: every metric with its HELP and TYPE, families in a fixed order.
  std::string Render(const MetricGauges& gauges) const;
};

// Times a scope into a histogram (the server's loop: no locks).
class ScopedTimer {
 public:
  explicit ScopedTimer(Histogram* h);
  ~ScopedTimer();
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  Histogram* h_;
  int64_t start_ns_;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_METRICS_H_
