// test_kernels.cuh -- device code run by the emulator's own tests. Device code only, no <<<>>>:
// the same file compiles with nvcc (see README.md, "Checking the test kernels with nvcc").
// Kernels that break CUDA's rules on purpose live in test_simt_errors.cpp and race_demo.cpp.
#pragma once

#ifndef SIMT_DYNAMIC_SHARED  // nvcc: the real thing
#define SIMT_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"  // each test file uses some of the kernels
#endif

namespace simt_test {
namespace {  // each test file that includes this gets its own copy of the kernels

constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ unsigned linear_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
__device__ __forceinline__ unsigned linear_bid() { return blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z); }
__device__ __forceinline__ unsigned block_threads() { return blockDim.x * blockDim.y * blockDim.z; }
/// Mask of the lanes that exist in this thread's warp (the last warp of a block may be partial).
__device__ __forceinline__ unsigned warp_lanes_mask() {
  const unsigned first = linear_tid() & ~31u, n = block_threads() - first;
  return n >= 32 ? kFull : (1u << n) - 1u;
}

// ---- Geometry ---------------------------------------------------------------------------------
struct ThreadRecord {
  unsigned tid[3], bid[3], bdim[3], gdim[3];
  unsigned warp_leader;  // linear id of lane 0 of the warp, via __shfl_sync
  unsigned warp_ballot;  // __ballot_sync over the existing lanes of the warp
  unsigned visits;
};

__global__ void record_geometry(ThreadRecord* out) {
  const unsigned lin = linear_tid();
  ThreadRecord& r = out[linear_bid() * block_threads() + lin];
  r.tid[0] = threadIdx.x, r.tid[1] = threadIdx.y, r.tid[2] = threadIdx.z;
  r.bid[0] = blockIdx.x, r.bid[1] = blockIdx.y, r.bid[2] = blockIdx.z;
  r.bdim[0] = blockDim.x, r.bdim[1] = blockDim.y, r.bdim[2] = blockDim.z;
  r.gdim[0] = gridDim.x, r.gdim[1] = gridDim.y, r.gdim[2] = gridDim.z;
  const unsigned mask = warp_lanes_mask();
  r.warp_leader = __shfl_sync(mask, lin, 0);
  r.warp_ballot = __ballot_sync(mask, 1);
  r.visits += 1;
}

// ---- Shuffles ---------------------------------------------------------------------------------
/// Every shuffle mode, full mask, one width and one delta / lane mask; srcLane differs per lane.
template <class T>
__global__ void shuffle_modes(const T* in, const int* src_lane, unsigned delta, int width, T* idx, T* up, T* down, T* bfly) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const T v = in[i];
  idx[i] = __shfl_sync(kFull, v, src_lane[i], width);
  up[i] = __shfl_up_sync(kFull, v, delta, width);
  down[i] = __shfl_down_sync(kFull, v, delta, width);
  bfly[i] = __shfl_xor_sync(kFull, v, static_cast<int>(delta), width);
}

/// Partial masks: disjoint halves in divergent branches, two groups at one call site, odd lanes.
__global__ void shuffle_partial_masks(const int* in, int* out) {
  const unsigned lane = threadIdx.x % 32;
  int v = in[blockIdx.x * blockDim.x + threadIdx.x];
  if (lane < 16)
    v += __shfl_xor_sync(0x0000ffffu, v, 1);
  else
    v += 10 * __shfl_xor_sync(0xffff0000u, v, 2);
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  v += 100 * __shfl_down_sync(half, v, 1, 16);
  if (lane & 1u) v += 1000 * __shfl_xor_sync(0xaaaaaaaau, v, 2);
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

/// Even lanes read their odd neighbour, which is not in the mask: undefined in CUDA.
template <class T>
__global__ void shuffle_from_outside_mask(const T* in, T* out) {
  const unsigned lane = threadIdx.x % 32;
  if (lane % 2 == 0) out[threadIdx.x] = __shfl_xor_sync(0x55555555u, in[threadIdx.x], 1);
}

// ---- Votes, match, reduce, activemask ---------------------------------------------------------
__global__ void votes(const int* pred, unsigned* ballot, int* any, int* all, unsigned* ballot_parity, int* all_parity) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x % 32;
  const int p = pred[i];
  ballot[i] = __ballot_sync(kFull, p);
  any[i] = __any_sync(kFull, p);
  all[i] = __all_sync(kFull, p);
  const unsigned parity = (lane % 2 == 0) ? 0x55555555u : 0xaaaaaaaau;
  ballot_parity[i] = __ballot_sync(parity, p);
  all_parity[i] = __all_sync(parity, p);
}

__global__ void match_reduce(const int* in, unsigned* match_any, unsigned* match_all, int* match_all_pred, int* sum, int* mn,
                             int* mx, unsigned* umn, unsigned* band, unsigned* bor, unsigned* bxor) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const int v = in[i];
  match_any[i] = __match_any_sync(kFull, v);
  match_all[i] = __match_all_sync(kFull, v / 1000, &match_all_pred[i]);
  sum[i] = __reduce_add_sync(kFull, v);
  mn[i] = __reduce_min_sync(kFull, v);
  mx[i] = __reduce_max_sync(kFull, v);
  umn[i] = __reduce_min_sync(kFull, static_cast<unsigned>(v));
  band[i] = __reduce_and_sync(kFull, static_cast<unsigned>(v));
  bor[i] = __reduce_or_sync(kFull, static_cast<unsigned>(v));
  bxor[i] = __reduce_xor_sync(kFull, static_cast<unsigned>(v));
}

/// __activemask in converged code, in both sides of a branch, and after lanes >= 20 exited.
__global__ void active_masks(unsigned* converged, unsigned* branch, unsigned* after_exit) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x % 32;
  converged[i] = __activemask();
  if (lane % 3 == 0)
    branch[i] = __activemask();
  else
    branch[i] = __activemask();
  if (lane >= 20) return;
  after_exit[i] = __activemask();
}

// ---- __syncwarp -------------------------------------------------------------------------------
/// Warp-synchronous exchange through shared memory (block of 64 threads).
__global__ void syncwarp_exchange(const int* in, int* rotate, int* halves, int* partial_warp) {
  __shared__ int s[64];
  const unsigned t = threadIdx.x, lane = t % 32, base = t & ~31u;
  s[t] = in[t];
  __syncwarp();
  rotate[t] = s[base + (lane + 1) % 32];
  __syncwarp();
  // Each half of the warp synchronizes on its own, in divergent branches.
  if (lane < 16) {
    s[t] = 2 * in[t];
    __syncwarp(0x0000ffffu);
    halves[t] = s[base + (lane + 5) % 16];
  } else {
    s[t] = 3 * in[t];
    __syncwarp(0xffff0000u);
    halves[t] = s[base + 16 + (lane + 5) % 16];
  }
  __syncwarp();
  // Lanes >= 24 exit; __syncwarp with the full mask waits for the others only (legal in CUDA).
  if (lane >= 24) return;
  s[t] = 5 * in[t];
  __syncwarp();
  partial_warp[t] = s[base + (lane + 1) % 24];
}

/// __syncwarp() with the full mask in a partial warp (block of 48: warp 1 has lanes 0-15 only).
__global__ void syncwarp_partial_warp(int* out) {
  __shared__ int s[48];
  s[threadIdx.x] = static_cast<int>(threadIdx.x) * 7;
  __syncwarp();
  const unsigned base = threadIdx.x & ~31u, n = blockDim.x - base < 32 ? blockDim.x - base : 32;
  out[threadIdx.x] = s[base + (threadIdx.x - base + 1) % n];
}

// ---- Block barriers ---------------------------------------------------------------------------
__global__ void barrier_votes(const int* pred, int* count, int* all, int* any) {
  const unsigned b = linear_bid(), t = linear_tid();
  const int p = pred[b * block_threads() + t];
  const int c = __syncthreads_count(p);
  const int a = __syncthreads_and(p);
  const int o = __syncthreads_or(p);
  if (t == 0) count[b] = c, all[b] = a, any[b] = o;
}

/// Shared-memory tree reduction with a barrier per level, then a warp-shuffle tail. BLOCK >= 64.
template <int BLOCK>
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float s[BLOCK];
  const unsigned t = threadIdx.x;
  s[t] = v;
  __syncthreads();
  for (int k = BLOCK / 2; k >= 32; k >>= 1) {
    if (static_cast<int>(t) < k) s[t] += s[t + k];
    __syncthreads();
  }
  float r = 0.f;
  if (t < 32) {
    r = s[t];
    for (int o = 16; o > 0; o >>= 1) r += __shfl_down_sync(kFull, r, o);
  }
  __syncthreads();  // s is reused by the next call
  return r;         // valid in thread 0
}

template <int BLOCK>
__global__ void __launch_bounds__(BLOCK) block_sums(const float* x, int n, float* out) {
  const int i = blockIdx.x * BLOCK + threadIdx.x;
  const float s = block_sum<BLOCK>(i < n ? x[i] : 0.f);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

/// Inclusive scan of a block (Hillis-Steele in shared memory, two barriers per step).
__global__ void block_scan(const int* in, int* out) {
  __shared__ int s[256];
  const unsigned t = threadIdx.x, off = blockIdx.x * blockDim.x;
  s[t] = in[off + t];
  __syncthreads();
  for (unsigned d = 1; d < blockDim.x; d *= 2) {
    const int add = t >= d ? s[t - d] : 0;
    __syncthreads();
    s[t] += add;
    __syncthreads();
  }
  out[off + t] = s[t];
}

// ---- Shared memory ----------------------------------------------------------------------------
/// Static shared memory: one object per block, shared by its threads, isolated between blocks.
__global__ void static_shared(int* value, unsigned long long* tag_address) {
  __shared__ int tag;
  __shared__ int arr[128];
  const unsigned t = threadIdx.x, g = blockIdx.x * blockDim.x + t;
  if (t == 0) tag = static_cast<int>(blockIdx.x) * 1000 + 7;
  arr[t] = static_cast<int>(blockIdx.x * 10000 + t);
  __syncthreads();
  value[g] = tag + arr[(t + 1) % blockDim.x];
  tag_address[g] = reinterpret_cast<unsigned long long>(&tag);
}

/// Dynamic shared memory through two views of the same bytes.
__global__ void dynamic_shared(unsigned* first_bytes, int* neighbour, unsigned long long* view_a, unsigned long long* view_b) {
  SIMT_DYNAMIC_SHARED(unsigned char, raw);
  SIMT_DYNAMIC_SHARED(int, ints);
  const unsigned t = threadIdx.x, g = blockIdx.x * blockDim.x + t;
  if (t == 0) first_bytes[blockIdx.x] = raw[0] | (raw[4 * blockDim.x - 1] << 8);
  __syncthreads();
  ints[t] = static_cast<int>(blockIdx.x * 100 + t);
  __syncthreads();
  neighbour[g] = ints[(t + 1) % blockDim.x];
  view_a[g] = reinterpret_cast<unsigned long long>(raw);
  view_b[g] = reinterpret_cast<unsigned long long>(ints);
}

// ---- Atomics ----------------------------------------------------------------------------------
struct AtomicTotals {
  int i_add;
  unsigned u_add;
  unsigned long long ull_add;
  float f_add;
  double d_add;
  int i_max, i_min;
  unsigned inc, dec;
  int cas_sum;
  unsigned bits_or, bits_and, bits_xor;
  int sub;
  int exch_seen;
  unsigned exch;
};

__global__ void atomics_contention(AtomicTotals* t) {
  const int g = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(&t->i_add, 1);
  atomicAdd(&t->u_add, 2u);
  atomicAdd(&t->ull_add, 1ull << 33);
  atomicAdd(&t->f_add, 1.0f);
  atomicAdd(&t->d_add, 0.5);
  atomicMax(&t->i_max, g);
  atomicMin(&t->i_min, -g);
  atomicInc(&t->inc, 1000u);
  atomicDec(&t->dec, 1000u);
  int old = atomicAdd(&t->cas_sum, 0), assumed;
  do {
    assumed = old;
    old = atomicCAS(&t->cas_sum, assumed, assumed + 3);
  } while (old != assumed);
  atomicOr(&t->bits_or, 1u << (g % 32));
  atomicAnd(&t->bits_and, ~(1u << (g % 32)));
  atomicXor(&t->bits_xor, static_cast<unsigned>(g));
  atomicSub(&t->sub, 2);
  // Every thread swaps in a distinct value; exactly one sees the initial one.
  if (atomicExch(&t->exch, static_cast<unsigned>(g) + 1u) == 0u) atomicAdd(&t->exch_seen, 1);
}

/// Sum of x: each block writes its partial; the last block to finish (ticket) adds the partials
/// in block order, so the result does not depend on which block finishes last. The ticket wraps
/// back to 0 (atomicInc), ready for the next launch.
template <int BLOCK>
__global__ void sum_last_block_merges(const float* x, int n, float* partials, unsigned* ticket, float* result, int* merged_by) {
  __shared__ bool am_last;
  float acc = 0.f;
  for (int i = blockIdx.x * BLOCK + threadIdx.x; i < n; i += gridDim.x * BLOCK) acc += x[i];
  const float s = block_sum<BLOCK>(acc);
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = s;
    __threadfence();
    const unsigned t = atomicInc(ticket, gridDim.x - 1);
    am_last = (t == gridDim.x - 1);
  }
  __syncthreads();
  if (am_last && threadIdx.x == 0) {
    float total = 0.f;
    for (unsigned b = 0; b < gridDim.x; ++b) total += partials[b];
    *result = total;
    *merged_by = static_cast<int>(blockIdx.x);
  }
}

// ---- Early exit -------------------------------------------------------------------------------
/// Lanes >= n_active return first; the rest reduce with the mask of the lanes still running.
__global__ void exited_lanes_sum(const int* in, int n_active, int* sums, int* xor_sums) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned active = __ballot_sync(kFull, static_cast<int>(lane) < n_active);
  if (static_cast<int>(lane) >= n_active) return;
  const int v = in[threadIdx.x];
  int s = v;
  for (unsigned o = 16; o > 0; o >>= 1) {
    const int other = __shfl_down_sync(active, s, o);  // may read an exited lane: discarded below
    if (lane + o < static_cast<unsigned>(n_active)) s += other;
  }
  if (lane == 0) sums[threadIdx.x / 32] = s;
  // Butterfly over the first 16 lanes only (n_active >= 16).
  if (lane < 16) {
    int x = v;
    for (int m = 8; m > 0; m >>= 1) x += __shfl_xor_sync(0x0000ffffu, x, m, 16);
    xor_sums[threadIdx.x] = x;
  }
}

// ---- Bugs the schedule exposes ----------------------------------------------------------------
/// BUG (on purpose): no __syncthreads between the write and the read of another warp's slot.
__global__ void missing_barrier(int salt, int* out) {
  __shared__ int s[64];
  s[threadIdx.x] = static_cast<int>(threadIdx.x) + salt;
  out[threadIdx.x] = s[(threadIdx.x + 32) % 64];
}

// ---- Workloads (timed) ------------------------------------------------------------------------
/// Column sums and sums of squares of a row-major [rows x cols] matrix. block = (32, ROWS);
/// grid = (ceil(cols / 32), chunks); atomics merge the chunks.
template <int ROWS>
__global__ void __launch_bounds__(32 * ROWS)
column_moments_tile(const float* __restrict__ x, int rows, int cols, int rows_per_chunk, float* __restrict__ sum,
                    float* __restrict__ sumsq) {
  __shared__ float s1[ROWS][33];
  __shared__ float s2[ROWS][33];
  const int col = static_cast<int>(blockIdx.x * 32 + threadIdx.x);
  const int r0 = static_cast<int>(blockIdx.y) * rows_per_chunk;
  const int r1 = min(rows, r0 + rows_per_chunk);
  float a = 0.f, q = 0.f;
  if (col < cols)
    for (int r = r0 + static_cast<int>(threadIdx.y); r < r1; r += ROWS) {
      const float v = x[static_cast<size_t>(r) * cols + col];
      a += v;
      q += v * v;
    }
  s1[threadIdx.y][threadIdx.x] = a;
  s2[threadIdx.y][threadIdx.x] = q;
  __syncthreads();
  for (int s = ROWS / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.y) < s) {
      s1[threadIdx.y][threadIdx.x] += s1[threadIdx.y + s][threadIdx.x];
      s2[threadIdx.y][threadIdx.x] += s2[threadIdx.y + s][threadIdx.x];
    }
    __syncthreads();
  }
  if (threadIdx.y == 0 && col < cols) {
    atomicAdd(&sum[col], s1[0][threadIdx.x]);
    atomicAdd(&sumsq[col], s2[0][threadIdx.x]);
  }
}

/// One block per (column, chunk): block reductions of shuffles and shared memory.
template <int BLOCK>
__global__ void __launch_bounds__(BLOCK)
column_moments_block(const float* __restrict__ x, int rows, int cols, int rows_per_chunk, float* __restrict__ sum,
                     float* __restrict__ sumsq) {
  const int col = static_cast<int>(blockIdx.x);
  const int r0 = static_cast<int>(blockIdx.y) * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
  float a = 0.f, q = 0.f;
  for (int r = r0 + static_cast<int>(threadIdx.x); r < r1; r += BLOCK) {
    const float v = x[static_cast<size_t>(r) * cols + col];
    a += v;
    q += v * v;
  }
  a = block_sum<BLOCK>(a);
  q = block_sum<BLOCK>(q);
  if (threadIdx.x == 0) {
    atomicAdd(&sum[col], a);
    atomicAdd(&sumsq[col], q);
  }
}

__global__ void empty_kernel() {}

}  // namespace
}  // namespace simt_test

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
