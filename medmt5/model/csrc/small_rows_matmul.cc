// medmt5: y[M, N] = x[M, K] @ w[K, N] (float32, row-major) for the few rows of a decoding
// step, as an XLA FFI handler for the CPU backend (medmt5/model/cpu_kernels.py builds and
// registers it; docs/performance.md has the measurements).
//
// Why: with 2-8 rows a product is a pass over the weight matrix, and on CPU its speed is the
// speed of that pass. XLA CPU's Eigen products stream a weight at 10-17 GB/s on one core for
// these shapes; this kernel reads each weight row-major exactly once, splits the columns
// between the intra-op pool's threads and keeps the rows' partial sums in registers.
//
// Layout of the work: the columns are cut into one range per thread (multiples of 16).
// Within a range, the K rows of w are read in bands of kBand rows; for each band every
// 16-column strip of the output (rows in groups of 4) is loaded, updated with the band's
// products and stored back. A band reads kBand short runs of consecutive memory, which the
// hardware prefetchers follow; the output strips stay in L1/L2 (a range is further cut so
// that M x columns x 4 bytes stays under kOutTileBytes). Columns beyond the last multiple of
// 16 are summed by a scalar loop. Each output element is the sum over k in increasing order
// of x[m, k] * w[k, n] with fused multiply-adds.
//
// Threads: the caller claims column ranges from an atomic counter like the helpers it
// schedules on the pool, so it never waits for a helper that has not started; it waits
// only for ranges a helper has claimed. Shared state is reference-counted so that a helper
// starting after the call has returned finds no range and touches no buffer.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Matrix = ffi::Buffer<ffi::F32, 2>;
using OutMatrix = ffi::ResultBuffer<ffi::F32, 2>;

constexpr int64_t kBand = 8;
constexpr int64_t kOutTileBytes = 128 * 1024;

// Rows [0, R) of the output strips in columns [c0, c1) updated with rows [k0, k1) of w.
template <int R>
inline void UpdateStrips(const float* x, int64_t K, const float* w, int64_t N, float* y,
                         int64_t c0, int64_t c1, int64_t k0, int64_t k1) {
  for (int64_t c = c0; c < c1; c += 16) {
    __m256 lo[R], hi[R];
    for (int r = 0; r < R; ++r) {
      if (k0 == 0) {
        lo[r] = _mm256_setzero_ps();
        hi[r] = _mm256_setzero_ps();
      } else {
        lo[r] = _mm256_loadu_ps(y + r * N + c);
        hi[r] = _mm256_loadu_ps(y + r * N + c + 8);
      }
    }
    const float* wk = w + k0 * N + c;
    for (int64_t k = k0; k < k1; ++k, wk += N) {
      const __m256 w_lo = _mm256_loadu_ps(wk);
      const __m256 w_hi = _mm256_loadu_ps(wk + 8);
      for (int r = 0; r < R; ++r) {
        const __m256 xr = _mm256_broadcast_ss(x + r * K + k);
        lo[r] = _mm256_fmadd_ps(xr, w_lo, lo[r]);
        hi[r] = _mm256_fmadd_ps(xr, w_hi, hi[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(y + r * N + c, lo[r]);
      _mm256_storeu_ps(y + r * N + c + 8, hi[r]);
    }
  }
}

// All M rows of the output in columns [c0, c1), (c1 - c0) a multiple of 16.
void ColumnTile(const float* x, int64_t M, int64_t K, const float* w, int64_t N, float* y,
                int64_t c0, int64_t c1) {
  for (int64_t k0 = 0; k0 < K; k0 += kBand) {
    const int64_t k1 = std::min(K, k0 + kBand);
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) UpdateStrips<4>(x + m * K, K, w, N, y + m * N, c0, c1, k0, k1);
    switch (M - m) {
      case 3: UpdateStrips<3>(x + m * K, K, w, N, y + m * N, c0, c1, k0, k1); break;
      case 2: UpdateStrips<2>(x + m * K, K, w, N, y + m * N, c0, c1, k0, k1); break;
      case 1: UpdateStrips<1>(x + m * K, K, w, N, y + m * N, c0, c1, k0, k1); break;
      default: break;
    }
  }
}

// Columns [c0, N) one element at a time (N not a multiple of 16).
void ScalarColumns(const float* x, int64_t M, int64_t K, const float* w, int64_t N, float* y,
                   int64_t c0) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = c0; c < N; ++c) {
      float sum = 0.0f;
      for (int64_t k = 0; k < K; ++k) sum = std::fma(x[m * K + k], w[k * N + c], sum);
      y[m * N + c] = sum;
    }
  }
}

struct Product {
  const float* x;
  const float* w;
  float* y;
  int64_t M, K, N;
  int64_t ranges;       // column ranges to hand out
  int64_t range_cols;   // columns per range (multiple of 16)
  int64_t vector_cols;  // columns covered by 16-wide strips
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};

  void Range(int64_t i) {
    const int64_t c0 = i * range_cols;
    const int64_t c1 = std::min(vector_cols, c0 + range_cols);
    const int64_t tile = std::max<int64_t>(16, kOutTileBytes / (4 * M) / 16 * 16);
    for (int64_t c = c0; c < c1; c += tile) ColumnTile(x, M, K, w, N, y, c, std::min(c1, c + tile));
  }

  void Drain() {
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < ranges;) {
      Range(i);
      finished.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error SmallRowsMatmulImpl(ffi::ThreadPool pool, Matrix x, Matrix w, OutMatrix y) {
  const int64_t M = x.dimensions()[0], K = x.dimensions()[1], N = w.dimensions()[1];
  if (w.dimensions()[0] != K || y->dimensions()[0] != M || y->dimensions()[1] != N) {
    return ffi::Error::InvalidArgument("medmt5_small_rows_matmul: shapes do not match");
  }
  float* out = y->typed_data();
  if (M == 0 || N == 0) return ffi::Error::Success();
  if (K == 0) {
    std::fill(out, out + M * N, 0.0f);
    return ffi::Error::Success();
  }
  auto product = std::make_shared<Product>();
  product->x = x.typed_data();
  product->w = w.typed_data();
  product->y = out;
  product->M = M;
  product->K = K;
  product->N = N;
  const int64_t strips = N / 16;
  product->vector_cols = strips * 16;
  // One range per thread; ranges under 128 columns are not worth a hand-off.
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t ranges = std::max<int64_t>(1, std::min<int64_t>(threads, strips / 8));
  product->ranges = strips == 0 ? 0 : ranges;
  product->range_cols = (strips + ranges - 1) / ranges * 16;
  for (int64_t i = 1; i < product->ranges; ++i) pool.Schedule([product] { product->Drain(); });
  product->Drain();
  // A helper that claimed a range is running it; spin briefly, then give the core away in
  // case that helper is waiting for it (more threads than cores).
  for (int spins = 0; product->finished.load(std::memory_order_acquire) < product->ranges;) {
    if (++spins < 4096) {
      _mm_pause();
    } else {
      std::this_thread::yield();
    }
  }
  if (product->vector_cols < N) ScalarColumns(product->x, M, K, product->w, N, out, product->vector_cols);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MedMt5SmallRowsMatmul, SmallRowsMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Matrix>()
                                  .Arg<Matrix>()
                                  .Ret<Matrix>());
