// SyncServer: cairn-server's network side (docs/protocol.md "The server loop: backpressure and
// fan-out"). One libuv loop on one thread accepts TCP (or TLS) connections, runs the exchange of
// docs/protocol.md with each, commits pushed batches to the ServerStore, acknowledges them only
// after the commit, and streams the global log to every session from its cursor (live once
// caught up).
//
// Backpressure: a session is fed from the log (on disk) only while its write queue is below
// `max_queued_bytes`, so a slow client costs a bounded buffer and a cursor, never a copy of the
// log. Stop() (or SIGTERM/SIGINT with handle_signals) closes the listener and every session;
// every acknowledged batch is already committed, so nothing is lost.
#ifndef CAIRN_SERVER_SYNC_SERVER_H_
#define CAIRN_SERVER_SYNC_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "auth/jwt.h"
#include "auth/keys.h"
#include "base/result.h"
#include "net/conn.h"
#include "net/http.h"
#include "rules/rules.h"
#include "server/server_store.h"

namespace cairn::server {

struct ServerOptions {
  std::string db_path;
  // Telemetry records (server/stream_tables.h); empty: db_path + ".streams". Opened at the
  // first stream batch.
  std::string streams_db_path;
  std::string host = "127.0.0.1";
  uint16_t port = 0;                 // 0: any free port (see SyncServer::port())
  std::string tls_cert_file, tls_key_file;  // both set: TLS
  // The HTTP API (docs/backend.md): served on http_host:http_port when `http` (port 0: any
  // free port, SyncServer::http_port()), with TLS when the sync port has it, under the same
  // connection limits. Its connections are closed after conn.idle_timeout_ms without a byte.
  bool http = false;
  std::string http_host = "127.0.0.1";
  uint16_t http_port = 0;
  net::HttpLimits http_limits;
  // Requests each client address (AddressKey) may make on the HTTP port: a burst of
  // http_request_burst (0: a second's worth), then http_requests_per_second; more are answered
  // 429 (docs/backend.md "Limits"). 0 per second: no limit.
  uint32_t http_requests_per_second = 5000;
  uint32_t http_request_burst = 0;
  // Tokens (docs/protocol.md "Authentication and tokens"): an HS256 secret, public keys for
  // RS256 and ES256, and the issuer and audience they must name (empty: not checked). No secret
  // and no key: an open server (no authentication), said loudly.
  std::string token_secret;
  std::shared_ptr<const auth::KeySet> token_keys;
  std::string token_issuer, token_audience;
  auth::TokenPolicy tokens() const {
    return auth::TokenPolicy{token_secret, token_keys, token_issuer, token_audience};
  }
  // Sync rules (docs/sync-rules.md; needs tokens): null, the per-collection claims of tokens.
  std::shared_ptr<const rules::Rules> rules;
  ServerStoreOptions store;
  net::ConnOptions conn;             // frame limit, idle and frame timeouts
  // From accept to Hello, TLS handshake included: a peer slower than this is closed.
  uint32_t handshake_timeout_ms = 10000;
  // Connections beyond these are closed at accept: in all, and from one IP address (devices
  // behind one NAT share an address: raise it for such fleets).
  size_t max_connections = 10000;
  size_t max_connections_per_address = 256;
  // Per session: the log is read only below this, and above it nothing more is read from the
  // peer until its queue drains (net::ConnOptions::pause_reads_above); past this plus a frame
  // and 1 MiB, or with nothing taken for idle_timeout_ms, it is closed.
  size_t max_queued_bytes = 1u << 20;
  // What all connections that have not said Hello may hold in received bytes, together
  // (net::ReadBudget): the one whose input would pass it is closed (docs/protocol.md "Limits").
  size_t max_unauthenticated_bytes = 64u << 20;
  uint32_t max_batch_ops = 8192;       // ops per batch the server sends
  uint32_t window_batches = 8;         // unacknowledged pushes a client may have in flight
  // The refusals one Ack lists, in bytes: more go in further Acks (docs/protocol.md "Refused
  // ops"; far below any frame limit).
  size_t max_ack_bytes = 1u << 20;
  size_t snapshot_docs_per_turn = 4096;  // documents a snapshot reads before serving others
  // With sync rules (docs/sync-rules.md "Fan-out"): a client whose view no new log entry
  // touches learns that its cursor moved past them (coverage and a CaughtUp) after at most
  // about this long, or once it is FanOut::kMaxIdleLag entries behind.
  uint32_t idle_cursor_ms = 5000;
  // docs/crdt-semantics.md "Clock safety": a transaction with an op stamped further ahead of the
  // server's clock is refused (ECLOCK); clients rewind their clock to this bound
  // (docs/protocol.md).
  uint32_t max_drift_ms = 60000;
  // Several nodes on one PostgreSQL database (store.url): how often a node catches up with
  // the others' commits besides when notified (a lost notification costs at most this).
  uint32_t catch_up_ms = 1000;
  // With one SQLite file and a history horizon (store.history_horizon_ms): how often the
  // server checks whether the horizon is due to move (ServerStore::Maintain).
  uint32_t maintain_ms = 60000;
  bool handle_signals = false;         // stop on SIGTERM / SIGINT
  // Where messages go; default: stderr, prefixed "cairn-server: ".
  std::function<void(const std::string&)> log;
};

// What connections are counted by for max_connections_per_address: an IPv4 address as it is,
// an IPv6 address by its /64 ("2001:db8:1:2::/64": what one subscriber usually gets), an
// IPv4-mapped IPv6 address as its IPv4 address.
std::string AddressKey(const std::string& ip);

class SyncServer {
 public:
  static Result<std::unique_ptr<SyncServer>> Create(const ServerOptions& options);
  ~SyncServer();
  // Binds and listens; port() is known afterwards.
  Status Listen();
  uint16_t port() const { return port_; }
  uint16_t http_port() const { return http_port_; }  // with ServerOptions::http, after Listen
  const ReplicaId& id() const;
  // Runs the loop until Stop(); returns after every connection closed.
  Status Run();
  // Thread-safe and async-signal-safe.
  void Stop();
  size_t session_count() const;

  struct Impl;

 private:
  SyncServer();
  std::unique_ptr<Impl> impl_;
  uint16_t port_ = 0, http_port_ = 0;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_SYNC_SERVER_H_
