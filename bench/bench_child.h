// Shared by the benchmarks that run parts of themselves as child processes (sync_bench and
// its scenarios): the program re-executed with --child, told when to start (a byte on its
// stdin), answering with JSON lines on its stdout; its peak RSS from wait4().
#ifndef CAIRN_BENCH_BENCH_CHILD_H_
#define CAIRN_BENCH_BENCH_CHILD_H_

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"

namespace cairn::bench {

inline void RaiseFileLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

struct Child {
  pid_t pid = -1;
  FILE* in = nullptr;   // the child's stdin
  FILE* out = nullptr;  // the child's stdout
  int64_t maxrss_kb = 0;
};

inline Child SpawnChild(const std::string& self, std::vector<std::string> args) {
  int to[2], from[2];
  if (pipe(to) != 0 || pipe(from) != 0) Die("pipe");
  Child c;
  c.pid = fork();
  if (c.pid < 0) Die("fork");
  if (c.pid == 0) {
    DieWithParent();
    dup2(to[0], STDIN_FILENO);
    dup2(from[1], STDOUT_FILENO);
    for (int fd : {to[0], to[1], from[0], from[1]}) close(fd);
    args.insert(args.begin(), self);
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    execv(self.c_str(), argv.data());
    _exit(127);
  }
  close(to[0]);
  close(from[1]);
  c.in = fdopen(to[1], "w");
  c.out = fdopen(from[0], "r");
  return c;
}

inline Json ReadLine(Child* c) {
  char buf[1 << 16];
  if (!std::fgets(buf, sizeof buf, c->out)) Die("a child ended early");
  return Json::parse(buf);
}

// Tells the child to go on ('g'), or something else it understands.
inline void Tell(Child* c, char what = 'g') {
  std::fputc(what, c->in);
  std::fflush(c->in);
}

inline void Reap(Child* c) {
  std::fclose(c->in);
  std::fclose(c->out);
  int status = 0;
  rusage ru{};
  wait4(c->pid, &status, 0, &ru);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("a child failed");
  c->maxrss_kb = ru.ru_maxrss;
}

inline void WaitForParent() {
  if (std::fgetc(stdin) == EOF) Die("the parent went away");
}

inline void Emit(const Json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

}  // namespace cairn::bench

#endif  // CAIRN_BENCH_BENCH_CHILD_H_
