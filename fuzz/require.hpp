// The fuzzers' oracle: a broken guarantee aborts, and libFuzzer keeps the input that did it.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace fuzz {

/// Aborts, naming the guarantee, when `condition` is false.
inline void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "broken guarantee: %s\n", what);
    std::abort();
  }
}

}  // namespace fuzz
