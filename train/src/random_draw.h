// Random draws private to longctx_train_data that are the same on every standard library: built
// only on std::mt19937_64's output sequence (fixed by the standard), never on the
// implementation-defined std::uniform_int_distribution and friends, so a data set is the same
// bytes wherever it is generated.
#pragma once

#include <cstdint>
#include <random>

namespace longctx::train {

// SplitMix64's finalizer: a 64-bit mixing hash (Steele et al., Vigna).
inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, n) for n >= 1, without modulo bias (rejection of the top partial range).
inline uint64_t UniformBelow(std::mt19937_64& rng, uint64_t n) {
  if (n <= 1) return 0;
  const uint64_t reject_from = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do {
    x = rng();
  } while (x >= reject_from);
  return x % n;
}

// Uniform in [0, 1) with 53 random bits.
inline double UniformUnit(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

}  // namespace longctx::train
