// Test knobs from the environment: how many repetitions a randomized or kill test makes, so a
// slow build (sanitizers, qemu) runs fewer than the host's Debug run, which runs them all
// (docs/RELIABILITY.md "What each build runs").
#ifndef CAIRN_TESTS_SUPPORT_ENV_H_
#define CAIRN_TESTS_SUPPORT_ENV_H_

#include <cstdint>
#include <cstdlib>

namespace cairn::testing {

// The integer in $name, or `fallback` when it is unset or empty.
inline int64_t EnvCount(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoll(v, nullptr, 10) : fallback;
}

}  // namespace cairn::testing

#endif  // CAIRN_TESTS_SUPPORT_ENV_H_
