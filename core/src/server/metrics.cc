#include "server/metrics.h"

#include <chrono>
#include <cstdio>

namespace cairn::server {

namespace {

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A sample value as Prometheus reads it (Go's float syntax: "+Inf", shortest round trip).
std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void Family(std::string* out, const char* name, const char* type, const char* help) {
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void Sample(std::string* out, const std::string& name, const std::string& labels, uint64_t v) {
  *out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + std::to_string(v) + "\n";
}

}  // namespace

void Histogram::Observe(double seconds) {
  for (size_t i = 0; i < kBounds.size(); i++) {
    if (seconds <= kBounds[i]) buckets_[i]++;
  }
  sum_ += seconds;
  count_++;
}

void Histogram::Render(const std::string& name, const std::string& labels, std::string* out) const {
  const std::string sep = labels.empty() ? "" : labels + ",";
  for (size_t i = 0; i < kBounds.size(); i++) {
    Sample(out, name + "_bucket", sep + "le=\"" + Number(kBounds[i]) + "\"", buckets_[i]);
  }
  Sample(out, name + "_bucket", sep + "le=\"+Inf\"", count_);
  *out += name + "_sum" + (labels.empty() ? "" : "{" + labels + "}") + " " + Number(sum_) + "\n";
  Sample(out, name + "_count", labels, count_);
}

std::string ServerMetrics::Render(const MetricGauges& g) const {
  std::string out;
  Family(&out, "cairn_connections", "gauge", "Open connections, by port.");
  Sample(&out, "cairn_connections", "port=\"sync\"", g.sync_connections);
  Sample(&out, "cairn_connections", "port=\"http\"", g.http_connections);
  Family(&out, "cairn_pushes_total", "counter", "Pushes stored: devices' batches and HTTP writes.");
  Sample(&out, "cairn_pushes_total", "", pushes);
  Family(&out, "cairn_ops_in_total", "counter", "Ops received and applied.");
  Sample(&out, "cairn_ops_in_total", "", ops_in);
  Family(&out, "cairn_ops_duplicate_total", "counter",
         "Ops received again (retries), not applied twice.");
  Sample(&out, "cairn_ops_duplicate_total", "", duplicates);
  Family(&out, "cairn_ops_out_total", "counter", "Ops sent to clients.");
  Sample(&out, "cairn_ops_out_total", "", ops_out);
  Family(&out, "cairn_bytes_in_total", "counter", "Bytes received on both ports (TLS included).");
  Sample(&out, "cairn_bytes_in_total", "", g.bytes_in);
  Family(&out, "cairn_bytes_out_total", "counter", "Bytes sent on both ports (TLS included).");
  Sample(&out, "cairn_bytes_out_total", "", g.bytes_out);
  Family(&out, "cairn_refused_total", "counter", "Transactions refused, by error code.");
  for (const auto& [code, n] : refused)
    Sample(&out, "cairn_refused_total", "code=\"" + code + "\"", n);
  Family(&out, "cairn_http_responses_total", "counter", "HTTP API responses, by status.");
  for (const auto& [status, n] : http_responses) {
    Sample(&out, "cairn_http_responses_total", "status=\"" + std::to_string(status) + "\"", n);
  }
  Family(&out, "cairn_log_head", "gauge", "The newest cursor of the log.");
  Sample(&out, "cairn_log_head", "", g.log_head);
  Family(&out, "cairn_log_floor", "gauge", "Cursors up to this were trimmed from the log.");
  Sample(&out, "cairn_log_floor", "", g.log_floor);
  Family(&out, "cairn_change_feed_polls", "gauge", "Long polls of the change feed waiting.");
  Sample(&out, "cairn_change_feed_polls", "", g.feed_polls);
  Family(&out, "cairn_push_seconds", "histogram",
         "A device's push from its arrival to its Ack (stored and committed).");
  push_seconds.Render("cairn_push_seconds", "", &out);
  Family(&out, "cairn_store_seconds", "histogram", "Calls of the server's store, by operation.");
  for (const auto& [op, h] : store_seconds)
    h.Render("cairn_store_seconds", "op=\"" + op + "\"", &out);
  return out;
}

ScopedTimer::ScopedTimer(Histogram* h) : h_(h), start_ns_(SteadyNs()) {}

ScopedTimer::~ScopedTimer() { h_->Observe(static_cast<double>(SteadyNs() - start_ns_) / 1e9); }

}  // namespace cairn::server
