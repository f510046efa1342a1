// cairn-server: the sync server (docs/cli.md "cairn-server", docs/protocol.md).
//   cairn-server --db FILE --listen HOST:PORT [--tls-cert F --tls-key F] [--token-secret FILE]
//   cairn-server --store postgresql://... --db NODE_FILE --listen HOST:PORT ...  (several nodes)
//   cairn-server token --token-secret FILE --sub SUBJECT [--read C,..] [--write C,..] [--ttl S]
// Exit codes: 0 success (stopped by SIGTERM/SIGINT), 2 usage error, 3 other error.
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "auth/jwt.h"
#include "auth/keys.h"
#include "port/port.h"
#include "protocol/frame.h"
#include "rules/rules.h"
#include "server/sync_server.h"

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitError = 3;

int Fail(const cairn::Status& st) {
  std::cerr << "cairn-server: " << st.ToString() << "\n";
  return st.code() == cairn::Code::kEINVAL ? kExitUsage : kExitError;
}

// A file's whole content (EIO when it cannot be read).
cairn::Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  if (in) ss << in.rdbuf();
  if (!in || in.bad()) return cairn::Status(cairn::Code::kEIO, "cannot read " + path);
  return ss.str();
}

// The secret is the file's content with trailing white space removed; at least 32 bytes.
cairn::Result<std::string> ReadSecret(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return cairn::Status::Invalid("cannot read the token secret file " + path);
  std::string s = std::move(text).value();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  if (s.size() < 32) {
    return cairn::Status::Invalid("token secret in " + path + " is shorter than 32 bytes");
  }
  return s;
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

int Run(int argc, char** argv) {
  CLI::App app{"cairn-server: the Cairn sync server"};
  app.set_version_flag("--version", "cairn-server 0.1.0");
  cairn::server::ServerOptions o;
  std::string listen = "127.0.0.1:7420", secret_file;
  app.add_option("--db", o.db_path,
                 "the server's SQLite file (created when missing); with --store postgresql://, "
                 "this node's copy of the database");
  std::string store = "sqlite";
  app.add_option("--store", store,
                 "where the data lives: sqlite (the --db file, default) or a PostgreSQL URL "
                 "(postgresql://USER@HOST:PORT/DB?...) shared by several nodes, the --db file "
                 "being this node's copy");
  app.add_option("--catch-up-ms", o.catch_up_ms,
                 "with PostgreSQL: catch up with the other nodes at least this often "
                 "(default 1000)")
      ->check(CLI::Range(1u, 3600000u));
  std::string sql_tables;
  app.add_option("--sql-tables", sql_tables,
                 "with PostgreSQL: on or off, the documents as SQL tables in cairn_data "
                 "(docs/backend.md), for every node of the database (default: as the database "
                 "has it, on when new)")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--streams", o.streams_db_path,
                 "SQLite file of the telemetry streams, a table per stream (default: DB.streams)");
  app.add_option("--listen", listen, "HOST:PORT to listen on (default 127.0.0.1:7420)");
  std::string http_listen;
  app.add_option("--http", http_listen,
                 "HOST:PORT of the HTTP API (docs/backend.md; TLS when --tls-cert is given, "
                 "the same tokens and rules as sync)");
  app.add_option("--tls-cert", o.tls_cert_file, "PEM certificate chain: serve TLS");
  app.add_option("--tls-key", o.tls_key_file, "PEM private key of --tls-cert");
  app.add_option("--token-secret", secret_file, "file holding the HS256 secret (>= 32 bytes)");
  std::vector<std::string> key_files, jwks_files;
  app.add_option("--token-public-key", key_files,
                 "PEM file of a public key (RSA >= 2048 bits, or EC P-256) that verifies RS256 "
                 "or ES256 tokens (repeatable)");
  app.add_option("--jwks", jwks_files,
                 "JWKS file of public keys that verify RS256 or ES256 tokens, chosen by the "
                 "signature, their kid checked (repeatable)");
  app.add_option("--token-issuer", o.token_issuer, "tokens must have this iss claim");
  app.add_option("--token-audience", o.token_audience, "tokens' aud claim must hold this");
  std::string rules_file;
  app.add_option("--rules", rules_file,
                 "sync rules (JSON): each document's channels and each token's grants "
                 "(docs/sync-rules.md); needs tokens (--token-secret or public keys)");
  app.add_option("--keep-log", o.store.keep_log_ops,
                 "ops kept in the global log for resuming clients (default 1000000)");
  int64_t horizon_days = 30;
  app.add_option("--history-horizon-days", horizon_days,
                 "fold counters' increments and forget deletes older than this many days "
                 "(docs/crdt-semantics.md \"History horizon\"; default 30; 0: keep all history; "
                 "SQLite store only for now)")
      ->check(CLI::Range(int64_t{0}, int64_t{36500}));
  app.add_option("--idle-timeout-ms", o.conn.idle_timeout_ms,
                 "close a connection silent this long (default 60000)");
  app.add_option("--handshake-timeout-ms", o.handshake_timeout_ms,
                 "close a connection not past Hello this long after accept, TLS handshake included "
                 "(default 10000)")
      ->check(CLI::Range(1u, 3600000u));
  app.add_option("--frame-timeout-ms", o.conn.frame_timeout_ms,
                 "close a connection whose frame (or HTTP request) does not complete "
                 "(default 30000)");
  app.add_option("--http-max-body-bytes", o.http_limits.max_body_bytes,
                 "largest HTTP request body; larger ones are refused (413) before they are read "
                 "(default 8 MiB)")
      ->check(CLI::Range(size_t{1} << 10, size_t{1} << 30));
  app.add_option("--http-rate", o.http_requests_per_second,
                 "HTTP requests a second from one client address, after a burst of "
                 "--http-burst; more are answered 429 (default 5000; 0: no limit)")
      ->check(CLI::Range(0u, 10000000u));
  app.add_option("--http-burst", o.http_request_burst,
                 "HTTP requests one client address may make at once (default: --http-rate)")
      ->check(CLI::Range(0u, 100000000u));
  app.add_option("--max-frame-bytes", o.conn.limits.max_frame_bytes,
                 "largest frame accepted and sent (default 16 MiB; 9 to 64 MiB)")
      ->check(CLI::Range(cairn::protocol::kMinMaxFrameBytes, cairn::protocol::kMaxMaxFrameBytes));
  app.add_option("--max-connections", o.max_connections,
                 "connections in all; more are closed at accept (default 10000)")
      ->check(CLI::Range(1, 10000000));
  app.add_option("--max-connections-per-address", o.max_connections_per_address,
                 "connections from one IP address (default 256)")
      ->check(CLI::Range(1, 10000000));
  app.add_option("--max-unauthenticated-bytes", o.max_unauthenticated_bytes,
                 "received bytes all connections not past Hello may hold together; the one "
                 "that would pass it is closed (default 64 MiB)")
      ->check(CLI::Range(size_t{1} << 20, std::numeric_limits<size_t>::max()));
  app.add_option("--max-drift-ms", o.max_drift_ms,
                 "refuse ops stamped further ahead of the server's clock (default 60000)")
      ->check(CLI::Range(1000u, 86400000u));

  auto* token = app.add_subcommand("token", "mint a development token and print it");
  token->fallthrough();  // --token-secret may follow the subcommand
  std::string sub, read = "*", write = "*", rid;
  int64_t ttl = 24 * 3600;
  token->add_option("--sub", sub, "subject (user or device)")->required();
  token->add_option("--read", read, "collections it may read, comma-separated (default *)");
  token->add_option("--write", write,
                    "collections and streams it may write, comma-separated (default *)");
  token
      ->add_option("--ttl", ttl,
                   "seconds until it expires (default 86400; at most 400 days; may be negative)")
      ->check(CLI::Range(-cairn::auth::kMaxTokenValidityS, cairn::auth::kMaxTokenValidityS));
  token->add_option("--rid", rid, "the only replica id (32 hex) it may sync as");
  std::vector<std::string> claim_args, claim_list_args;
  bool admin = false;
  token->add_option("--claim", claim_args,
                    "NAME=VALUE: a string claim for sync rules' grants (repeatable)");
  token->add_option("--claim-list", claim_list_args,
                    "NAME=A,B,...: a list claim for sync rules' grants, {NAME[]} (repeatable)");
  token->add_flag("--admin", admin, "the admin claim: reads and writes every document");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (!secret_file.empty()) {
    auto s = ReadSecret(secret_file);
    if (!s.ok()) return Fail(s.status());
    o.token_secret = s.value();
  }
  if (token->parsed()) {
    if (o.token_secret.empty()) {
      std::cerr << "cairn-server: token needs --token-secret FILE\n";
      return kExitUsage;
    }
    cairn::auth::Claims c;
    c.subject = sub;
    c.expires_s = cairn::port::WallClockMs() / 1000 + ttl;
    c.read = SplitList(read);
    c.write = SplitList(write);
    if (!rid.empty()) c.replica_id = rid;
    c.admin = admin;
    for (const auto* args : {&claim_args, &claim_list_args}) {
      for (const std::string& arg : *args) {
        const size_t eq = arg.find('=');
        if (eq == 0 || eq == std::string::npos) {
          std::cerr << "cairn-server: --claim and --claim-list take NAME=VALUE, not '" << arg
                    << "'\n";
          return kExitUsage;
        }
        cairn::auth::ClaimValue v;
        v.array = args == &claim_list_args;
        const std::string value = arg.substr(eq + 1);
        v.items = v.array ? SplitList(value) : std::vector<std::string>{value};
        c.values[arg.substr(0, eq)] = std::move(v);
      }
    }
    std::cout << cairn::auth::MintToken(c, o.token_secret) << "\n";
    return 0;
  }
  if (o.db_path.empty()) {
    std::cerr << "cairn-server: --db FILE is required\n";
    return kExitUsage;
  }
  if (!key_files.empty() || !jwks_files.empty()) {
    auto keys = std::make_shared<cairn::auth::KeySet>();
    for (const auto* files : {&key_files, &jwks_files}) {
      for (const std::string& f : *files) {
        auto text = ReadFile(f);
        if (!text.ok()) return Fail(text.status());
        cairn::Status added =
            files == &key_files ? keys->AddPem(text.value(), f) : keys->AddJwks(text.value(), f);
        if (!added.ok()) return Fail(added);
      }
    }
    o.token_keys = std::move(keys);
  }
  if (!rules_file.empty()) {
    auto rules = cairn::rules::Rules::Load(rules_file);
    if (!rules.ok()) return Fail(rules.status());
    o.rules = std::make_shared<const cairn::rules::Rules>(std::move(rules).value());
  }
  if (store != "sqlite") {
    if (!cairn::server::IsPostgresUrl(store)) {
      std::cerr << "cairn-server: --store takes sqlite or a PostgreSQL URL (postgresql://...), "
                   "not '" << store << "'\n";
      return kExitUsage;
    }
    o.store.url = store;
  }
  // With PostgreSQL the nodes keep all history for now (docs/scale-out.md).
  if (o.store.url.empty()) o.store.history_horizon_ms = horizon_days * int64_t{86400000};
  if (!sql_tables.empty()) {
    if (o.store.url.empty()) {
      std::cerr
          << "cairn-server: --sql-tables needs a PostgreSQL store (--store postgresql://...)\n";
      return kExitUsage;
    }
    o.store.sql_tables = sql_tables == "on";
  }
  std::string host;
  uint16_t port = 0;
  cairn::Status st = cairn::net::ParseHostPort(listen, &host, &port);
  if (!st.ok()) return Fail(st);
  o.host = host;
  o.port = port;
  o.http_limits.request_timeout_ms = o.conn.frame_timeout_ms;
  if (!http_listen.empty()) {
    st = cairn::net::ParseHostPort(http_listen, &o.http_host, &o.http_port);
    if (!st.ok()) return Fail(st);
    o.http = true;
  }
  o.handle_signals = true;
  // A parent may have started us with these blocked (a JVM, a test runner, a supervisor's
  // thread): the mask is inherited, and a blocked SIGTERM would never stop the server.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
  auto server = cairn::server::SyncServer::Create(o);
  if (!server.ok()) return Fail(server.status());
  st = server.value()->Listen();
  if (!st.ok()) return Fail(st);
  st = server.value()->Run();
  if (!st.ok()) return Fail(st);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "cairn-server: EINTERNAL: " << e.what() << "\n";
    return kExitError;
  }
}
