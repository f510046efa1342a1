// Test support: the real cairn-server program (CAIRN_SERVER_PATH, defined by the test's build)
// started as a child process, stopped with a signal at the end of the test.
#ifndef CAIRN_TESTS_SUPPORT_SERVER_PROCESS_H_
#define CAIRN_TESTS_SUPPORT_SERVER_PROCESS_H_

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdint>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"

extern char** environ;

namespace cairn::testing {

// Starts `args` (args[0]: the program's path) with stdout and stderr appended to `log`, the
// signals in `blocked` blocked, and `env` (NAME=value) added to this process's environment (a
// NAME set there replaces the inherited one). The pid, or -1.
inline pid_t SpawnProcess(const std::vector<std::string>& args, const std::string& log,
                          const sigset_t* blocked = nullptr,
                          const std::vector<std::string>& env = {}) {
  std::vector<std::string> arg_strings = args, env_strings = env;
  std::vector<char*> argv, envp;
  for (auto& a : arg_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string inherited(*e);
    bool replaced = false;
    for (const auto& mine : env_strings) {
      const size_t eq = mine.find('=');
      replaced = replaced || inherited.compare(0, eq + 1, mine, 0, eq + 1) == 0;
    }
    if (!replaced) envp.push_back(*e);
  }
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  if (blocked != nullptr) {
    posix_spawnattr_setsigmask(&attr, blocked);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  }
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), envp.data()) != 0) pid = -1;
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

// One cairn-server process on `db` listening on 127.0.0.1:`port` (0: any), with `extra`
// arguments, stderr appended to `log`.
class ServerProcess {
 public:
  // `blocked`: signals blocked in the server as it starts (what a parent such as a JVM or a
  // Swift test runner passes on through posix_spawn). `env`: NAME=value added to the
  // environment it inherits.
  ServerProcess(const std::string& db, const std::string& log, uint16_t port,
                const std::vector<std::string>& extra = {}, const sigset_t* blocked = nullptr,
                const std::vector<std::string>& env = {})
      : log_(log) {
    std::vector<std::string> args = {CAIRN_SERVER_PATH, "--db", db, "--listen",
                                     "127.0.0.1:" + std::to_string(port)};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = SpawnProcess(args, log, blocked, env);
    EXPECT_GT(pid_, 0);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() { Kill(SIGTERM); }

  // Waits for "listening on 127.0.0.1:PORT" (the n-th time it appears in the log); the port,
  // or 0 after a test failure.
  uint16_t WaitListening(int nth = 1) {
    const std::regex re("listening on 127\\.0\\.0\\.1:([0-9]+)");
    for (int i = 0; i < 500; i++) {
      std::string text = ReadFile(log_);
      int seen = 0;
      for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) {
        if (++seen == nth) return static_cast<uint16_t>(std::stoi((*it)[1]));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "cairn-server did not start:\n" << ReadFile(log_);
    return 0;
  }
  // Sends `sig` and waits up to `ms` for the exit; the wait status, or -1 if it did not exit.
  int Signal(int sig, int ms) {
    kill(pid_, sig);
    for (int waited = 0; waited < ms; waited += 10) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }
  // Whether it is still running (reaps it, keeping the wait status, when it has exited).
  bool Running() {
    if (pid_ <= 0) return false;
    if (waitpid(pid_, &status_, WNOHANG) != pid_) return true;
    pid_ = -1;
    return false;
  }
  int status() const { return status_; }  // after Running() said false
  pid_t pid() const { return pid_; }
  void Kill(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  int status_ = 0;
};

}  // namespace cairn::testing

#endif  // CAIRN_TESTS_SUPPORT_SERVER_PROCESS_H_
