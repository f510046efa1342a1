// SessionHub: the server's side of the exchange (docs/protocol.md) without a transport. It owns
// the ServerStore and the telemetry tables and runs one session per net::Link given to Attach;
// who made the link does not matter: SyncServer hands it libuv connections (TCP or TLS), a
// deterministic simulation in-memory ones driven by a virtual clock (tests/sim).
//
// Single-threaded: every call, and every call into the links, on one thread.
#ifndef CAIRN_SERVER_SESSION_HUB_H_
#define CAIRN_SERVER_SESSION_HUB_H_

#include <functional>
#include <memory>
#include <string>

#include "base/result.h"
#include "net/conn.h"
#include "server/server_store.h"

namespace cairn::server {

struct ServerOptions;  // server/sync_server.h

class SessionHub {
 public:
  // Opens the store of `options` (its listen address and TLS files are not used here).
  // `request_turn` is called when a session yielded (a snapshot spent its scan budget so that
  // others are served too) and wants RunTurn() soon, after the work already due; it may be
  // called again before that turn.
  static Result<std::unique_ptr<SessionHub>> Open(const ServerOptions& options,
                                                  std::function<void()> request_turn);
  // Links still open must have been closed and their OnClosed delivered first.
  ~SessionHub();
  SessionHub(const SessionHub&) = delete;
  SessionHub& operator=(const SessionHub&) = delete;

  // A new connection, its peer address known, before it opens: becomes the link's delegate.
  // False when a connection limit refuses it (the link is closing; its OnClosed follows).
  bool Attach(net::Link* link);
  // The same for a connection of the HTTP port (a net::Conn with raw input: docs/backend.md),
  // under the same connection limits. False also when the server was built without the HTTP
  // API.
  bool AttachHttp(net::Link* link);
  // Serves the sessions that yielded (request_turn).
  void RunTurn();
  // Several nodes on one database: takes in what the other nodes committed
  // (ServerStore::CatchUp) and feeds it to the sessions. A failure is logged (once until it
  // works again); the sessions go on with what this node has.
  void CatchUp();
  // ServerStore::Maintain, its failures logged (once until it works again).
  void Maintain();
  // The HTTP API's long polls end at their deadline (docs/backend.md "Change feed"): the hub
  // calls `set_timer(ms)` when it wants Wake() called in `ms` (a later call replaces an
  // earlier one). Without one, a long poll ends only when something is committed.
  void SetWakeTimer(std::function<void(uint64_t ms)> set_timer);
  void Wake();
  // Closes every session's link (OnClosed follows for each).
  void CloseAll();
  size_t session_count() const;
  ServerStore* store();
  void Log(const std::string& message);

  struct Impl;

 private:
  SessionHub();
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_SESSION_HUB_H_
