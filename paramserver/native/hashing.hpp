// Hashing and per-row random numbers: deterministic whatever thread touches a row first.
#pragma once
#include <cmath>
#include <cstdint>

namespace flywheel {

// splitmix64 finaliser: a full-avalanche mix of 64-bit feature IDs (raw IDs are often
// sequential or share low bits, which would cluster cuckoo buckets and sketch cells).
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

struct IdHash {
  size_t operator()(uint64_t id) const noexcept { return static_cast<size_t>(mix64(id)); }
};

// A tiny counter-based generator seeded by (table seed, id): a row's initial values depend
// only on its ID, so snapshots, replicas and re-admissions agree.
class RowRng {
 public:
  RowRng(uint64_t seed, uint64_t id) : state_(mix64(seed ^ mix64(id))) {}
  uint64_t next() { return mix64(state_++); }
  // Uniform in [0, 1) with 24 bits of mantissa.
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
  float normal() {  // Box-Muller
    float u1 = uniform(), u2 = uniform();
    if (u1 < 1e-12f) u1 = 1e-12f;
    return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853071795864f * u2);
  }

 private:
  uint64_t state_;
};

}  // namespace flywheel
