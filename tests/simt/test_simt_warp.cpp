// test_simt_warp.cpp -- warp-level semantics under the SIMT emulator: every shuffle mode and
// width, partial masks, votes, match/reduce, __activemask, __syncwarp, lanes that exited early.
// Every expected value is computed on the host from CUDA's documented semantics.
#include "test_support.hpp"

#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

namespace {

using namespace simt_test;

// ---- Shuffles -----------------------------------------------------------------------------------
// Reference semantics, from the CUDA programming guide (warp shuffle functions):
// - __shfl_sync: value of lane srcLane of the own width-segment; srcLane outside [0, width) is
//   taken modulo width.
// - __shfl_up_sync: lane - delta; lanes whose source would precede the segment keep their value.
// - __shfl_down_sync: lane + delta; lanes whose source would pass the segment keep their value.
// - __shfl_xor_sync: lane ^ laneMask; earlier segments can be read, a later one gives the own value.
struct ShuffleRef {
  static unsigned idx(unsigned lane, int src, int width) {
    const int w = width, base = static_cast<int>(lane) / w * w;
    return static_cast<unsigned>(base + ((src % w) + w) % w);
  }
  static unsigned up(unsigned lane, unsigned d, unsigned width) { return lane % width >= d ? lane - d : lane; }
  static unsigned down(unsigned lane, unsigned d, unsigned width) { return lane % width + d < width ? lane + d : lane; }
  static unsigned bfly(unsigned lane, unsigned m, unsigned width) {
    const unsigned t = lane ^ m;
    return t < (lane / width + 1) * width ? t : lane;
  }
};

template <class T>
class Shuffle : public ::testing::Test {};
using ShuffleTypes = ::testing::Types<int, unsigned, long long, unsigned long long, float, double>;
TYPED_TEST_SUITE(Shuffle, ShuffleTypes);

TYPED_TEST(Shuffle, AllModesWidthsAndDeltasMatchTheDocumentedSemantics) {
  using T = TypeParam;
  constexpr unsigned kThreads = 64;  // two warps
  std::vector<T> in(kThreads), idx(kThreads), up(kThreads), down(kThreads), bfly(kThreads);
  std::vector<int> src(kThreads);
  for (unsigned i = 0; i < kThreads; ++i) {
    in[i] = lane_value<T>(i);
    src[i] = static_cast<int>((i * 7 + 3) % 70) - 20;  // negative, in range and beyond the width
  }
  for (int width : {32, 16, 8, 4, 2, 1}) {
    for (unsigned delta : {0u, 1u, 2u, 3u, 5u, 7u, 8u, 15u, 16u, 31u}) {
      SCOPED_TRACE(::testing::Message() << "width " << width << " delta " << delta);
      simt::launch(dim3(1), dim3(kThreads), 0, shuffle_modes<T>, in.data(), src.data(), delta, width, idx.data(), up.data(),
                   down.data(), bfly.data());
      for (unsigned i = 0; i < kThreads; ++i) {
        const unsigned lane = i % 32, base = i - lane, w = static_cast<unsigned>(width);
        ASSERT_EQ(idx[i], in[base + ShuffleRef::idx(lane, src[i], width)]) << "__shfl_sync, thread " << i;
        ASSERT_EQ(up[i], in[base + ShuffleRef::up(lane, delta, w)]) << "__shfl_up_sync, thread " << i;
        ASSERT_EQ(down[i], in[base + ShuffleRef::down(lane, delta, w)]) << "__shfl_down_sync, thread " << i;
        ASSERT_EQ(bfly[i], in[base + ShuffleRef::bfly(lane, delta, w)]) << "__shfl_xor_sync, thread " << i;
      }
    }
  }
}

TEST(ShuffleMasks, DisjointGroupsInBranchesAndAtOneCallSite) {
  constexpr unsigned kThreads = 96;
  std::vector<int> in(kThreads), out(kThreads), ref(kThreads);
  for (unsigned i = 0; i < kThreads; ++i) in[i] = static_cast<int>(i * i % 97);
  // Reference: the same steps on the host, one warp at a time.
  for (unsigned w = 0; w < kThreads / 32; ++w) {
    std::array<int, 32> v{}, t{};
    for (unsigned l = 0; l < 32; ++l) v[l] = in[w * 32 + l];
    for (unsigned l = 0; l < 32; ++l) t[l] = l < 16 ? v[l] + v[l ^ 1] : v[l] + 10 * v[l ^ 2];
    v = t;
    for (unsigned l = 0; l < 32; ++l) t[l] = v[l] + 100 * v[(l % 16) + 1 < 16 ? l + 1 : l];
    v = t;
    for (unsigned l = 0; l < 32; ++l) t[l] = (l & 1) ? v[l] + 1000 * v[l ^ 2] : v[l];
    for (unsigned l = 0; l < 32; ++l) ref[w * 32 + l] = t[l];
  }
  simt::launch(dim3(1), dim3(kThreads), 0, shuffle_partial_masks, in.data(), out.data());
  EXPECT_EQ(out, ref);
}

TEST(ShuffleMasks, ReadingALaneOutsideTheMaskGivesThePoisonValue) {
  // CUDA leaves the value undefined; the emulator returns all bits set (NaN for floats), and does
  // not abort, since code may legally discard such values.
  std::vector<float> inf(32, 1.0f), outf(32, 0.0f);
  simt::launch(dim3(1), dim3(32), 0, shuffle_from_outside_mask<float>, inf.data(), outf.data());
  std::vector<int> ini(32, 1), outi(32, 0);
  simt::launch(dim3(1), dim3(32), 0, shuffle_from_outside_mask<int>, ini.data(), outi.data());
  for (unsigned l = 0; l < 32; l += 2) {
    EXPECT_TRUE(std::isnan(outf[l])) << l;
    EXPECT_EQ(outi[l], -1) << l;
  }
}

// ---- Votes, match, reduce, activemask -----------------------------------------------------------
TEST(Votes, BallotAnyAllWithFullAndPartialMasks) {
  constexpr unsigned kThreads = 128;
  std::vector<int> pred(kThreads);
  for (unsigned i = 0; i < kThreads; ++i) {
    const unsigned w = i / 32, l = i % 32;
    pred[i] = w == 0 ? 0 : w == 1 ? 1 : w == 2 ? int((l * 5) % 3 == 0) : int(l % 2 == 0 || l == 7);
  }
  std::vector<unsigned> ballot(kThreads), ballot_parity(kThreads);
  std::vector<int> any(kThreads), all(kThreads), all_parity(kThreads);
  simt::launch(dim3(1), dim3(kThreads), 0, votes, pred.data(), ballot.data(), any.data(), all.data(), ballot_parity.data(),
               all_parity.data());
  for (unsigned i = 0; i < kThreads; ++i) {
    const unsigned w = i / 32, l = i % 32, parity = l % 2 == 0 ? 0x55555555u : 0xaaaaaaaau;
    unsigned b = 0;
    for (unsigned k = 0; k < 32; ++k) b |= unsigned(pred[w * 32 + k] != 0) << k;
    EXPECT_EQ(ballot[i], b) << i;
    EXPECT_EQ(any[i], int(b != 0)) << i;
    EXPECT_EQ(all[i], int(b == 0xffffffffu)) << i;
    EXPECT_EQ(ballot_parity[i], b & parity) << i;
    EXPECT_EQ(all_parity[i], int((b & parity) == parity)) << i;
  }
}

TEST(Votes, MatchAndReduce) {
  constexpr unsigned kThreads = 64;
  std::vector<int> in(kThreads);
  for (unsigned i = 0; i < kThreads; ++i) in[i] = (i < 32) ? static_cast<int>((i % 5) * 1000 - 2000) : 7000 + static_cast<int>(i % 3);
  std::vector<unsigned> any(kThreads), all(kThreads), umn(kThreads), band(kThreads), bor(kThreads), bxor(kThreads);
  std::vector<int> pred(kThreads), sum(kThreads), mn(kThreads), mx(kThreads);
  simt::launch(dim3(1), dim3(kThreads), 0, match_reduce, in.data(), any.data(), all.data(), pred.data(), sum.data(), mn.data(),
               mx.data(), umn.data(), band.data(), bor.data(), bxor.data());
  for (unsigned i = 0; i < kThreads; ++i) {
    const unsigned w = i / 32;
    unsigned m = 0, u_min = ~0u, a = ~0u, o = 0, x = 0;
    int s = 0, lo = std::numeric_limits<int>::max(), hi = std::numeric_limits<int>::min();
    bool same = true;
    for (unsigned k = 0; k < 32; ++k) {
      const int v = in[w * 32 + k];
      m |= unsigned(v == in[i]) << k;
      s += v, lo = std::min(lo, v), hi = std::max(hi, v);
      u_min = std::min(u_min, static_cast<unsigned>(v)), a &= unsigned(v), o |= unsigned(v), x ^= unsigned(v);
      same = same && v / 1000 == in[w * 32] / 1000;
    }
    EXPECT_EQ(any[i], m) << i;
    EXPECT_EQ(all[i], same ? 0xffffffffu : 0u) << i;
    EXPECT_EQ(pred[i], int(same)) << i;
    EXPECT_EQ(sum[i], s) << i;
    EXPECT_EQ(mn[i], lo) << i;
    EXPECT_EQ(mx[i], hi) << i;
    EXPECT_EQ(umn[i], u_min) << i;
    EXPECT_EQ(band[i], a) << i;
    EXPECT_EQ(bor[i], o) << i;
    EXPECT_EQ(bxor[i], x) << i;
  }
}

TEST(Votes, ActivemaskIsTheSetOfLanesThatReachTheCallTogether) {
  constexpr unsigned kThreads = 64;
  std::vector<unsigned> converged(kThreads), branch(kThreads), after_exit(kThreads, 0xdeadu);
  simt::launch(dim3(1), dim3(kThreads), 0, active_masks, converged.data(), branch.data(), after_exit.data());
  unsigned thirds = 0;
  for (unsigned l = 0; l < 32; l += 3) thirds |= 1u << l;
  for (unsigned i = 0; i < kThreads; ++i) {
    const unsigned l = i % 32;
    EXPECT_EQ(converged[i], 0xffffffffu) << i;
    EXPECT_EQ(branch[i], l % 3 == 0 ? thirds : ~thirds) << i;
    EXPECT_EQ(after_exit[i], l < 20 ? 0x000fffffu : 0xdeadu) << i;
  }
}

// ---- __syncwarp ---------------------------------------------------------------------------------
TEST(Syncwarp, ExchangesThroughSharedMemoryFullHalvesAndAfterExit) {
  std::vector<int> in(64), rotate(64), halves(64), partial(64, -1);
  for (int i = 0; i < 64; ++i) in[i] = 11 * i + 3;
  simt::launch(dim3(1), dim3(64), 0, syncwarp_exchange, in.data(), rotate.data(), halves.data(), partial.data());
  for (unsigned t = 0; t < 64; ++t) {
    const unsigned lane = t % 32, base = t & ~31u;
    EXPECT_EQ(rotate[t], in[base + (lane + 1) % 32]) << t;
    const unsigned h = lane < 16 ? base + (lane + 5) % 16 : base + 16 + (lane + 5) % 16;
    EXPECT_EQ(halves[t], (lane < 16 ? 2 : 3) * in[h]) << t;
    EXPECT_EQ(partial[t], lane < 24 ? 5 * in[base + (lane + 1) % 24] : -1) << t;
  }
}

TEST(Syncwarp, FullMaskInAPartialWarpWaitsForTheLanesThatExist) {
  std::vector<int> out(48);
  simt::launch(dim3(1), dim3(48), 0, syncwarp_partial_warp, out.data());
  for (int t = 0; t < 48; ++t) {
    const int base = t & ~31, n = t < 32 ? 32 : 16;
    EXPECT_EQ(out[t], (base + (t - base + 1) % n) * 7) << t;
  }
}

// ---- Early exit ---------------------------------------------------------------------------------
TEST(ExitedLanes, RemainingLanesShuffleWithTheMaskOfRunningLanes) {
  for (int n_active : {16, 17, 20, 31}) {
    std::vector<int> in(64), sums(2, -1), xors(64, -1);
    for (int i = 0; i < 64; ++i) in[i] = i * 3 + 1;
    simt::launch(dim3(1), dim3(64), 0, exited_lanes_sum, in.data(), n_active, sums.data(), xors.data());
    for (int w = 0; w < 2; ++w) {
      int s = 0, s16 = 0;
      for (int l = 0; l < n_active; ++l) s += in[w * 32 + l];
      for (int l = 0; l < 16; ++l) s16 += in[w * 32 + l];
      EXPECT_EQ(sums[w], s) << "n_active " << n_active;
      for (int l = 0; l < 16; ++l) EXPECT_EQ(xors[w * 32 + l], s16) << "n_active " << n_active << " lane " << l;
    }
  }
}

}  // namespace
