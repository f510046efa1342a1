// sync_bench --scenario rules: sync rules at scale (docs/BENCHMARKS.md "Sync rules"). The
// parent (RunRules) and the child processes it starts (RulesChild).
#ifndef CAIRN_BENCH_SYNC_BENCH_RULES_H_
#define CAIRN_BENCH_SYNC_BENCH_RULES_H_

#include <string>
#include <vector>

namespace cairn::bench {

struct RulesArgs {
  std::string self;                           // this program, re-executed for the children
  std::string dir;                            // work directory (certificates made there already)
  std::string server_bin;                     // cairn-server
  std::string ca;                             // the run's CA (PEM)
  std::vector<size_t> clients = {100, 1000};  // connected clients of each fan-out run
  size_t writes = 500;                        // writes of each fan-out run...
  double rate = 50;                           // ...at this many a second
};

// Prints the scenario's tables (Markdown) on stdout.
void RunRules(const RulesArgs& a);

// The child processes: `role` is what --child named ("rules-writer", "rules-listeners",
// "rules-newcomer"); `args` the rest of the command line, as flag/value pairs.
void RulesChild(const std::string& role, const std::vector<std::string>& args);

}  // namespace cairn::bench

#endif  // CAIRN_BENCH_SYNC_BENCH_RULES_H_
