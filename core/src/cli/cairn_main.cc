// cairn: the command-line tool over one replica file (docs/cli.md).
// Exit codes: 0 success, 1 not found, 2 usage error, 3 other error (message on stderr).
// Everything printed as JSON is canonical (replica/json_codec.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>
#include <iostream>

#include <csignal>
#include <fstream>
#include <memory>

#include "base/strings.h"
#include "oplog/validate.h"
#include "oplog/record.h"
#include "replica/replica.h"
#include "sync/sync_client.h"

namespace {

constexpr int kExitNotFound = 1;
constexpr int kExitUsage = 2;
constexpr int kExitError = 3;

int Fail(const cairn::Status& st) {
  std::cerr << "cairn: " << st.ToString() << "\n";
  switch (st.code()) {
    case cairn::Code::kENOTFOUND:
      return kExitNotFound;
    case cairn::Code::kEINVAL:
      return kExitUsage;
    default:
      return kExitError;
  }
}

// The replica file and SQLite's files beside it.
void RemoveReplicaFiles(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    std::remove((path + suffix).c_str());
  }
}

// Makes an empty file at `path` if there is none: true when this call made it.
bool CreateNewFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

// True when another process holds a lock on the replica's file or its -shm: it has the file
// open (in WAL mode SQLite keeps a shared lock on the -shm for as long as a connection uses it).
// Call with this process's own connection closed: closing the probe's descriptor drops every
// POSIX lock this process holds on that file.
bool OtherProcessUses(const std::string& path) {
  for (const char* suffix : {"", "-shm"}) {
    const int fd = ::open((path + suffix).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    struct flock probe {};
    probe.l_type = F_WRLCK;
    probe.l_whence = SEEK_SET;
    probe.l_start = 0;
    probe.l_len = 0;  // the whole file
    const bool locked = ::fcntl(fd, F_GETLK, &probe) == 0 && probe.l_type != F_UNLCK;
    ::close(fd);
    if (locked) return true;
  }
  return false;
}

// True when the replica holds nothing: no op of its own or received, no cursor, no stream.
bool IsEmptyReplica(cairn::Replica* r) {
  auto s = r->GetStatus();
  return s.ok() && s->last_seq == 0 && s->known.empty() && s->cursor == 0 &&
         s->held_back_ops == 0 && s->rejected_ops == 0 && s->streams.empty();
}

// Removes a replica file that the command created, when the command did not succeed, the file
// holds nothing and no other process has it open; `replica` null: the file was there before.
class RemoveIfRefused {
 public:
  RemoveIfRefused(std::unique_ptr<cairn::Replica>* replica, const std::string& path,
                  const bool& succeeded)
      : replica_(replica), path_(path), succeeded_(succeeded) {}
  RemoveIfRefused(const RemoveIfRefused&) = delete;
  RemoveIfRefused& operator=(const RemoveIfRefused&) = delete;
  ~RemoveIfRefused() {
    if (replica_ == nullptr || succeeded_ || !IsEmptyReplica(replica_->get())) return;
    replica_->reset();
    if (OtherProcessUses(path_)) return;  // someone opened the new file meanwhile: theirs too
    RemoveReplicaFiles(path_);
  }

 private:
  std::unique_ptr<cairn::Replica>* replica_;
  const std::string& path_;
  const bool& succeeded_;
};

int Usage(const std::string& msg) {
  std::cerr << "cairn: " << msg << "\n";
  return kExitUsage;
}

}  // namespace

static int Run(int argc, char** argv);

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {  // bad_alloc and the like: an error, never an abort
    std::cerr << "cairn: EINTERNAL: " << e.what() << "\n";
    return kExitError;
  }
}

static int Run(int argc, char** argv) {
  CLI::App app{"cairn: work with one Cairn replica file (offline-first sync engine)"};
  app.set_version_flag("--version", "cairn 0.1.0");
  std::string db;
  app.add_option("--db", db, "the replica file")->required();
  app.require_subcommand(1);

  std::string coll, key, json, field, delta, sql, path;
  auto* put = app.add_subcommand("put", "set the given fields (at least one), one transaction");
  put->add_option("COLLECTION", coll)->required();
  put->add_option("KEY", key)->required();
  put->add_option("JSON_OBJECT", json)->required();
  auto* inc = app.add_subcommand("inc", "add DELTA to a counter field");
  inc->add_option("COLLECTION", coll)->required();
  inc->add_option("KEY", key)->required();
  inc->add_option("FIELD", field)->required();
  inc->add_option("DELTA", delta)->required();
  auto* del = app.add_subcommand("del", "delete a document");
  del->add_option("COLLECTION", coll)->required();
  del->add_option("KEY", key)->required();
  bool print_seq = false;  // the write's receipt (docs/cli.md "Write receipts")
  for (CLI::App* write : {put, inc, del}) {
    write->add_flag("--print-seq", print_seq,
                    "print the transaction's receipt: the seq of its last op (docs/cli.md "
                    "\"Write receipts\")");
  }
  auto* get = app.add_subcommand("get", "print the visible document (exit 1 if not visible)");
  get->add_option("COLLECTION", coll)->required();
  get->add_option("KEY", key)->required();
  auto* dump = app.add_subcommand("dump", "print all visible data as canonical JSON");
  auto* digest = app.add_subcommand("digest", "print the hex digest of the visible state");
  auto* query = app.add_subcommand("query", "read-only SQL over the materialized tables");
  query->add_option("SQL", sql)->required();
  auto* log = app.add_subcommand("log", "print the op log as JSON lines");
  auto* rejected = app.add_subcommand(
      "rejected", "print the ops a sync server refused (with the reason) as JSON lines");
  auto* exp = app.add_subcommand("export", "write every op this replica has to a file");
  exp->add_option("OUT_FILE", path)->required();
  auto* imp = app.add_subcommand("import", "apply an export from another replica");
  imp->add_option("IN_FILE", path)->required();
  auto* status = app.add_subcommand("status", "print the replica's status as JSON");
  std::string stream, lines_path;
  std::optional<int64_t> ts_ms;
  size_t lines_batch = 1000;
  auto* append = app.add_subcommand(
      "append", "append a telemetry record (a JSON object) to STREAM, durably");
  append->add_option("STREAM", stream)->required();
  append->add_option("JSON_OBJECT", json, "the record's fields");
  append->add_option("--ts", ts_ms, "the record's timestamp, ms since the epoch (default: now)");
  append->add_option("--lines", lines_path,
                     "append every line of this file (- for stdin), each a JSON object, "
                     "instead of JSON_OBJECT");
  append->add_option("--batch", lines_batch, "--lines: records per transaction")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  std::optional<uint64_t> max_bytes;
  std::optional<int64_t> max_age_ms;
  std::optional<int32_t> priority;
  std::optional<std::string> policy;
  auto* stream_cmd = app.add_subcommand(
      "stream", "set a stream's quota, policy or priority (those given; the others stay) and "
                "print its settings and counters as JSON");
  stream_cmd->add_option("STREAM", stream)->required();
  stream_cmd->add_option("--max-bytes", max_bytes, "quota of queued record bytes (0: none)");
  stream_cmd->add_option("--max-age-ms", max_age_ms, "quota of the oldest record's age (0: none)")
      ->check(CLI::NonNegativeNumber);
  stream_cmd->add_option("--policy", policy, "when full: reject (the default) or drop_oldest")
      ->check(CLI::IsMember({"reject", "drop_oldest"}));
  stream_cmd->add_option("--priority", priority, "higher uploads first (default 0)");
  cairn::sync::SyncOptions sync_opts;
  std::string only;
  bool sync_once = false, sync_watch = false;
  uint32_t sync_timeout_ms = 0;
  auto* sync = app.add_subcommand("sync", "sync with a cairn-server (push the outbox, pull the rest)");
  sync->add_option("--server", sync_opts.server, "HOST:PORT of the server")->required();
  // From the environment too: a service then has no token on its command line, where every
  // user of the machine can read it.
  sync->add_option("--token", sync_opts.token, "bearer token (JWT) the server checks")
      ->envname("CAIRN_TOKEN");
  sync->add_flag("--tls", sync_opts.tls, "use TLS (certificate and host name verified)");
  sync->add_option("--ca", sync_opts.ca_file, "PEM file of the CAs to trust (default: system)");
  sync->add_option("--server-name", sync_opts.server_name,
                   "name the server certificate must carry (default: HOST)");
  sync->add_option("--only", only, "comma-separated collections to sync (default: all)");
  sync->add_option("--channels", sync_opts.channels,
                   "with a server's sync rules: comma-separated channels to sync (default: all "
                   "the token may read)")
      ->delimiter(',');
  sync->add_flag("--once", sync_once, "one exchange, then exit (the default)");
  sync->add_flag("--watch", sync_watch, "keep syncing live until SIGINT/SIGTERM");
  sync->add_option("--timeout-ms", sync_timeout_ms, "--once: give up after this long (0: never)");

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

  if (sync->parsed()) {
    if (sync_once && sync_watch) return Usage("sync: --once and --watch exclude each other");
    if (!sync_opts.ca_file.empty() && !sync_opts.tls) return Usage("sync: --ca needs --tls");
    std::string h;
    uint16_t p;
    cairn::Status bad = cairn::net::ParseHostPort(sync_opts.server, &h, &p);
    if (!bad.ok()) return Fail(bad);
    auto collections = cairn::sync::ParseCollectionList(only);
    if (!collections.ok()) return Fail(collections.status().WithContext("--only"));
    sync_opts.only = std::move(collections.value());
    for (const std::string& c : sync_opts.channels) {
      if (c.empty()) return Usage("sync: --channels: an empty channel name");
    }
  }
  const bool configures = stream_cmd->parsed() && (max_bytes || max_age_ms || priority || policy);
  const bool writes = put->parsed() || inc->parsed() || del->parsed() || imp->parsed() ||
                      sync->parsed() || append->parsed() || configures;
  int64_t delta_value = 0;
  if (inc->parsed()) {
    auto [p, ec] = std::from_chars(delta.data(), delta.data() + delta.size(), delta_value);
    if (ec != std::errc() || p != delta.data() + delta.size()) {
      return Usage("DELTA must be an integer in the int64 range, got '" + delta + "'");
    }
  }
  cairn::Fields fields;
  if (put->parsed()) {
    auto f = cairn::ParseFieldsJson(json);
    if (!f.ok()) return Fail(f.status());
    fields = std::move(f).value();
  }
  // Bad names and keys are usage errors, found before the replica file is created or opened.
  if (put->parsed() || inc->parsed() || del->parsed()) {
    cairn::Status bad = cairn::ValidateCollectionName(coll);
    if (bad.ok()) bad = cairn::ValidateKey(key);
    if (bad.ok() && inc->parsed()) bad = cairn::ValidateFieldName(field);
    if (!bad.ok()) return Fail(bad);
  }
  // A record to append, or the file of records: checked before the replica is touched.
  cairn::RecordBatch records;
  std::ifstream lines_file;
  if (append->parsed() || stream_cmd->parsed()) {
    cairn::Status bad = cairn::ValidateStreamName(stream);
    if (!bad.ok()) return Fail(bad);
  }
  if (append->parsed()) {
    if (json.empty() == lines_path.empty()) {
      return Usage("append: give either JSON_OBJECT or --lines FILE");
    }
    if (!lines_path.empty() && ts_ms) return Usage("append: --ts goes with JSON_OBJECT");
    if (!json.empty()) {
      auto f = cairn::ParseFieldsJson(json);
      if (!f.ok()) return Fail(f.status());
      cairn::Status added = records.Add(f.value(), ts_ms);
      if (!added.ok()) return Fail(added);
    } else if (lines_path != "-") {
      lines_file.open(lines_path);
      if (!lines_file) {
        std::cerr << "cairn: cannot read " << lines_path << "\n";
        return kExitError;
      }
    }
  }
  struct stat sb;
  if (imp->parsed() && ::stat(path.c_str(), &sb) != 0) {
    std::cerr << "cairn: cannot read " << path << "\n";
    return kExitError;
  }
  if (!writes && ::stat(db.c_str(), &sb) != 0) {
    std::cerr << "cairn: no replica at " << db << "\n";
    return kExitError;
  }
  // Whether this command makes the file: decided by creating it (O_EXCL), so that a file another
  // process creates at the same moment is never taken for ours.
  const bool created = writes && CreateNewFile(db);
  cairn::ReplicaOptions options;
  options.create = writes;
  auto opened = cairn::Replica::Open(db, options);
  if (!opened.ok()) {
    if (created && !OtherProcessUses(db)) RemoveReplicaFiles(db);
    return Fail(opened.status());
  }
  cairn::Replica& r = *opened.value();
  // A command that made the file and then failed takes it away again, if nothing was kept in
  // it (a sync that received data before failing keeps its file: the data is there).
  bool succeeded = false;
  RemoveIfRefused remove_if_refused(created ? &opened.value() : nullptr, db, succeeded);

  cairn::Status st;
  if (put->parsed() || inc->parsed() || del->parsed()) {
    cairn::Result<uint64_t> written = put->parsed()   ? r.Put(coll, key, fields)
                                      : inc->parsed() ? r.Increment(coll, key, field, delta_value)
                                                      : r.Delete(coll, key);
    st = written.status();
    if (st.ok() && print_seq) std::cout << written.value() << "\n";
  } else if (get->parsed()) {
    auto doc = r.Get(coll, key);
    if (!doc.ok()) return Fail(doc.status());
    if (!doc.value()) return Fail(cairn::Status::NotFound(coll + "/" + key + " is not visible"));
    std::cout << cairn::CanonicalJson(cairn::FieldsToJson(*doc.value())) << "\n";
  } else if (dump->parsed()) {
    st = r.Dump([](std::string_view s) { std::cout << s; });
    if (st.ok()) std::cout << "\n";
  } else if (digest->parsed()) {
    auto d = r.Digest();
    if (!d.ok()) return Fail(d.status());
    std::cout << d.value() << "\n";
  } else if (query->parsed()) {
    st = r.Query(sql, [](const std::string& line) {
      std::cout << line << "\n";
      return cairn::Status::OK();
    });
  } else if (log->parsed()) {
    st = r.Log([](const cairn::Op& op) {
      std::cout << cairn::CanonicalJson(cairn::OpToJson(op)) << "\n";
      return cairn::Status::OK();
    });
  } else if (rejected->parsed()) {
    st = r.Rejected([](const cairn::RejectedOp& x) {
      std::cout << cairn::CanonicalJson(cairn::RejectedOpToJson(x.op, x.code, x.reason, x.at_ms))
                << "\n";
      return cairn::Status::OK();
    });
  } else if (exp->parsed()) {
    auto s = r.Export(path);
    if (!s.ok()) return Fail(s.status());
    std::cout << cairn::CanonicalJson({{"batches", s.value().batches},
                                       {"bytes", s.value().bytes},
                                       {"ops", s.value().ops}})
              << "\n";
  } else if (imp->parsed()) {
    auto s = r.Import(path);
    if (!s.ok()) return Fail(s.status());
    std::cout << cairn::CanonicalJson({{"applied", s.value().applied},
                                       {"duplicates", s.value().duplicates},
                                       {"held_back", s.value().held_back},
                                       {"ops", s.value().ops}})
              << "\n";
  } else if (sync->parsed()) {
    cairn::sync::SyncClient client(&r, sync_opts);
    if (sync_watch) {
      // Live until a signal: block SIGINT/SIGTERM here and wait for one.
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGINT);
      sigaddset(&set, SIGTERM);
      pthread_sigmask(SIG_BLOCK, &set, nullptr);
      st = client.Start();
      if (st.ok()) {
        int sig = 0;
        sigwait(&set, &sig);
        client.Stop();
      }
    } else {
      st = client.SyncOnce(sync_timeout_ms);
    }
    if (st.ok()) std::cout << client.status().ToJson() << "\n";
  } else if (append->parsed()) {
    uint64_t appended = 0, dropped = 0, first = 0, last = 0;
    auto add = [&](const cairn::RecordBatch& b) -> cairn::Status {
      CAIRN_ASSIGN_OR_RETURN(cairn::AppendResult res, r.Append(stream, b));
      appended += res.last_seq >= res.first_seq && res.first_seq > 0
                      ? res.last_seq - res.first_seq + 1 : 0;
      dropped += res.dropped;
      if (first == 0) first = res.first_seq;
      if (res.last_seq > 0) last = res.last_seq;
      return cairn::Status::OK();
    };
    if (lines_path.empty()) {
      st = add(records);
    } else {
      // Each --batch lines are one transaction: on an error, the batches before it are stored
      // (and counted in the output on stderr), the rest not.
      std::istream& in = lines_path == "-" ? std::cin : lines_file;
      std::string line;
      uint64_t line_no = 0;
      while (st.ok() && std::getline(in, line)) {
        line_no++;
        if (line.empty()) continue;
        auto f = cairn::ParseFieldsJson(line);
        st = f.ok() ? records.Add(f.value()) : f.status();
        if (!st.ok()) st = st.WithContext("line " + std::to_string(line_no));
        if (st.ok() && records.size() >= lines_batch) {
          st = add(records);
          records.Clear();
        }
      }
      if (st.ok() && !records.empty()) st = add(records);
    }
    const std::string out = cairn::CanonicalJson({{"appended", appended},
                                                  {"dropped", dropped},
                                                  {"first_seq", first},
                                                  {"last_seq", last}});
    if (st.ok()) {
      std::cout << out << "\n";
    } else if (appended > 0) {
      std::cerr << "cairn: appended before the error: " << out << "\n";
    }
  } else if (stream_cmd->parsed()) {
    auto all = r.Streams();
    if (!all.ok()) return Fail(all.status());
    auto it = std::find_if(all->begin(), all->end(),
                           [&](const cairn::StreamInfo& s) { return s.name == stream; });
    cairn::StreamConfig config = it != all->end() ? it->config : cairn::StreamConfig();
    if (configures) {
      if (max_bytes) config.max_bytes = *max_bytes;
      if (max_age_ms) config.max_age_ms = *max_age_ms;
      if (priority) config.priority = *priority;
      if (policy) {
        config.policy = *policy == "drop_oldest" ? cairn::StreamPolicy::kDropOldest
                                                 : cairn::StreamPolicy::kReject;
      }
      st = r.ConfigureStream(stream, config);
      if (st.ok()) all = r.Streams();
      if (st.ok() && !all.ok()) st = all.status();
      if (st.ok()) {
        it = std::find_if(all->begin(), all->end(),
                          [&](const cairn::StreamInfo& s) { return s.name == stream; });
      }
    }
    if (st.ok() && it == all->end()) st = cairn::Status::NotFound("no stream '" + stream + "'");
    if (st.ok()) std::cout << cairn::CanonicalJson(cairn::StreamJson(*it, r.NowMs())) << "\n";
  } else if (status->parsed()) {
    auto s = r.GetStatus();
    if (!s.ok()) return Fail(s.status());
    std::cout << cairn::CanonicalJson(s.value().ToJson())
              << "\n";
  }
  if (!st.ok()) return Fail(st);
  std::cout.flush();
  if (!std::cout) {
    std::cerr << "cairn: cannot write the output\n";
    return kExitError;
  }
  st = r.Close();
  if (!st.ok()) return Fail(st);
  succeeded = true;
  return 0;
}
