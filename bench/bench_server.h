// Shared by the benchmarks that run the real cairn-server (sync_bench, stream_bench): starting
// it over TLS with certificates made for the run, its memory, stopping it.
#ifndef CAIRN_BENCH_BENCH_SERVER_H_
#define CAIRN_BENCH_BENCH_SERVER_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <sstream>
#include <thread>

#include "bench_util.h"

namespace cairn::bench {

// Makes a CA (ca.pem) and a server certificate for localhost (server.pem, server.key) in `dir`.
inline void MakeDevCerts(const std::string& dir) {
  const std::string certs =
      "python3 " CAIRN_SOURCE_DIR "/examples/make_dev_certs.py " + dir + " >/dev/null";
  if (std::system(certs.c_str()) != 0) Die("making the TLS certificates failed");
}

inline std::string ReadFile(const std::string& path) {
  std::string out;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    std::fclose(f);
  }
  return out;
}

struct Server {
  pid_t pid = -1;
  std::string address;
};

// Starts cairn-server over TLS (the certificates MakeDevCerts put in `dir`) on a free port of
// 127.0.0.1, its file `dir`/`name`.db and its log `dir`/`name`.log.
// `extra`: more arguments (--store URL). `fresh`: remove an earlier file of that name first.
inline Server StartServer(const std::string& server_bin, const std::string& dir,
                          const std::string& name, const std::vector<std::string>& extra = {},
                          bool fresh = true) {
  const std::string db = dir + "/" + name + ".db", log = dir + "/" + name + ".log";
  for (const char* ext : {"", "-wal", "-shm", ".streams", ".streams-wal", ".streams-shm"}) {
    if (fresh) std::filesystem::remove(db + ext);
  }
  // The shared trace is stamped in 2023: a history horizon of 30 days would refuse its ops
  // (and write them again), so the benchmarks' servers keep all history.
  std::vector<std::string> args = {server_bin,
                                   "--db",
                                   db,
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--tls-cert",
                                   dir + "/server.pem",
                                   "--tls-key",
                                   dir + "/server.key",
                                   "--history-horizon-days",
                                   "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) Die("cannot write " + log);
  Server s;
  s.pid = fork();
  if (s.pid < 0) Die("fork");
  if (s.pid == 0) {
    DieWithParent();  // a benchmark that dies takes its server with it
    dup2(log_fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(log_fd);
  const std::regex re("listening on 127\\.0\\.0\\.1:([0-9]+)");
  for (int i = 0; i < 1000 && s.address.empty(); i++) {
    const std::string text = ReadFile(log);
    std::smatch m;
    if (std::regex_search(text, m, re)) {
      s.address = "localhost:" + m[1].str();
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (s.address.empty()) Die("cairn-server did not start (see " + log + ")");
  return s;
}

inline int64_t ProcessRssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// CPU time (user + system) the process `pid` has used so far, in seconds (/proc/PID/stat).
inline double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(in, text);  // one line
  // Fields after the command (in parentheses, which may hold spaces): state is the 3rd field,
  // utime the 14th, stime the 15th.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(text.substr(close + 2));
  std::string f;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> f; i++) {
    if (i >= 14) ticks += std::strtod(f.c_str(), nullptr);
  }
  return ticks / double(sysconf(_SC_CLK_TCK));
}

// Stops the server (SIGTERM) and returns its peak RSS in KiB.
inline int64_t StopServer(Server* s) {
  kill(s->pid, SIGTERM);
  int status = 0;
  rusage ru{};
  wait4(s->pid, &status, 0, &ru);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("cairn-server did not stop cleanly");
  return ru.ru_maxrss;
}

}  // namespace cairn::bench

#endif  // CAIRN_BENCH_BENCH_SERVER_H_
