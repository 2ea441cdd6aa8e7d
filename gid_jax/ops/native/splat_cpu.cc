// Bilinear splatting (the scatter at the heart of gid_jax.ops.splat) as XLA FFI kernels for the CPU.
//
// XLA:CPU lowers a scatter-add to a generic loop that costs several nanoseconds per updated row; these
// loops do the same arithmetic as the pure-JAX path in gid_jax/ops/splat.py (_corners, _scatter_chunks,
// _gather_chunks), source by source, in the same float type. They are built on first use by
// gid_jax/ops/native/__init__.py with the system C++ compiler against the FFI headers that ship with
// jaxlib; without a compiler the pure-JAX scatter runs instead.
//
// Layout (all row-major): x (N, C); z (N, 1) or (0, 1) when the sources carry no weight; flow (N, 2)
// (x right, y down, in pixels); N = B * H * W sources. Every source p splats the values x z (x without a
// weight) into `num` and the E = has_z + coverage values [z, 1] (z, then a 1 when `coverage` is set) into
// `extra`, at its four bilinear corners q with weights w_q(p):
//
//   forward:  num (N, C), extra (N, E)   num[q] = sum_p w_q(p) x(p) z(p), extra[q] = sum_p w_q(p) [z(p), 1];
//             with `normalize`, num[q] is then divided by extra[q, 0] + eps (eps: a 1-element input)
//   backward: the cotangents g_out (N, C), g_extra (N, E) of the outputs, the outputs themselves (out,
//             extra) and eps -> d x (N, C), d z (N or 0, 1), d flow (N, 2). With `normalize` the
//             normalisation's backward is folded in (1 / den and the dot once per pixel, first):
//             g_num[q] = g_out[q] / den[q], g_extra[q, 0] -= <g_out[q], out[q]> / den[q], den = extra[:, 0] + eps.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#if defined(__FMA__) && defined(__AVX__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// floor of a value in [-2, size + 1] (std::floor was a library call without -ffast-math).
template <typename T>
inline T Floor(T v) {
  const T t = static_cast<T>(static_cast<int64_t>(v));  // rounds towards 0
  return t > v ? t - T(1) : t;
}

// body(begin, end) over [0, n) in pieces of `grain`, on the caller and the XLA:CPU intra-op threads.
// Whoever is free takes the next piece; the caller returns when every piece is done. A helper that starts
// late finds no piece left and returns without touching anything of the caller's (the counters it shares
// are reference-counted), so nothing waits on a helper that never gets a thread.
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, int64_t grain, const F& body) {
  const int64_t pieces = (n + grain - 1) / grain;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), pieces) - 1;
  if (helpers <= 0) {
    if (n > 0) body(0, n);
    return;
  }
  struct Counters {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto counters = std::make_shared<Counters>();
  auto work = [counters, n, grain, pieces, &body]() {
    for (int64_t i; (i = counters->next.fetch_add(1)) < pieces;) {
      body(i * grain, std::min(n, (i + 1) * grain));
      counters->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t i = 0; i < helpers; ++i) {
    auto copy = work;  // Schedule takes (and frees) its own copy
    pool.Schedule(std::move(copy));
  }
  work();
  while (counters->done.load(std::memory_order_acquire) < pieces) std::this_thread::yield();
}

// Where pixel p is: the flat index of its image's first pixel, its row and its column.
inline void Locate(int64_t p, int64_t h, int64_t w, int64_t& base, int64_t& r, int64_t& c) {
  base = p / (h * w) * (h * w);
  r = (p - base) / w;
  c = p % w;
}

template <typename T>
struct Corners {
  int64_t index[4];  // flat target pixel per corner, -1 outside the image; order (0,0) (1,0) (0,1) (1,1)
  T weight[4];
  T fx, fy;
  bool live_x, live_y;  // d target / d flow is 1 (finite and not clipped), else 0
};

// The four bilinear corners of source p (row r, column c of the image that starts at flat pixel base)
// moved by (flow_x, flow_y); the same float operations as splat._corners.
template <typename T>
__attribute__((always_inline)) inline void FindCorners(int64_t p, int64_t base, int64_t r, int64_t c, const T* flow,
                                                      int64_t h, int64_t w, Corners<T>& k) {
  T gx = static_cast<T>(c) + flow[2 * p];
  T gy = static_cast<T>(r) + flow[2 * p + 1];
  const bool finite = std::isfinite(gx) && std::isfinite(gy);
  const T wmax = static_cast<T>(w) + T(1), hmax = static_cast<T>(h) + T(1);
  k.live_x = finite && gx >= T(-2) && gx <= wmax;
  k.live_y = finite && gy >= T(-2) && gy <= hmax;
  gx = finite ? std::min(std::max(gx, T(-2)), wmax) : T(-2);
  gy = finite ? std::min(std::max(gy, T(-2)), hmax) : T(-2);
  const T x0f = Floor(gx), y0f = Floor(gy);
  k.fx = gx - x0f;
  k.fy = gy - y0f;
  const int64_t x0 = static_cast<int64_t>(x0f), y0 = static_cast<int64_t>(y0f);
  int i = 0;
  for (int dy = 0; dy < 2; ++dy) {
    for (int dx = 0; dx < 2; ++dx, ++i) {
      const int64_t xi = x0 + dx, yi = y0 + dy;
      const bool inside = xi >= 0 && xi < w && yi >= 0 && yi < h;
      k.index[i] = inside ? base + yi * w + xi : -1;
      k.weight[i] = (dx ? k.fx : T(1) - k.fx) * (dy ? k.fy : T(1) - k.fy);
    }
  }
}

// The next pixel in row-major order: column, then row, then image (no divisions in the loops).
inline void Advance(int64_t& base, int64_t& r, int64_t& c, int64_t h, int64_t w) {
  if (++c == w) {
    c = 0;
    if (++r == h) {
      r = 0;
      base += h * w;
    }
  }
}

// Explicit 32-byte vectors (8 floats or 4 doubles; GCC and Clang split them into SSE halves where AVX is
// missing): the row loops below have a width known only at run time and several pointers, so left to
// itself the compiler ran them one float at a time.
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int64_t kLanes = 32 / sizeof(T);

template <typename T>
inline Vec<T> Load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void Store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// a * b + c, fused where the CPU has FMA. Written out, because the library is built with -ffp-contract=off
// (see gid_jax/ops/native/__init__.py): every copy of a loop then rounds the same way.
#if defined(__FMA__) && defined(__AVX__)
inline Vec<float> MulAdd(const Vec<float>& a, float b, const Vec<float>& c) {
  return (Vec<float>)_mm256_fmadd_ps((__m256)a, _mm256_set1_ps(b), (__m256)c);
}
inline Vec<double> MulAdd(const Vec<double>& a, double b, const Vec<double>& c) {
  return (Vec<double>)_mm256_fmadd_pd((__m256d)a, _mm256_set1_pd(b), (__m256d)c);
}
#else
template <typename T>
inline Vec<T> MulAdd(const Vec<T>& a, T b, const Vec<T>& c) {
  return a * b + c;
}
#endif

// The lanes' sum as a tree with constant lane numbers (a loop over the lanes went through memory).
inline float Sum(const Vec<float>& v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

inline double Sum(const Vec<double>& v) { return (v[0] + v[2]) + (v[1] + v[3]); }

struct Shape {
  int64_t n, c, e;  // sources, channels of x, extra floats per source ([z], [1])
  int64_t blocks;   // whole vectors in a row of C; the last C % lanes floats go one by one
  // (a partly filled vector would go through memory, and stall on the store forwarding)
  bool has_z;
};

ffi::Error CheckShapes(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> zd, ffi::Span<const int64_t> fd,
                       int64_t b, int64_t h, int64_t w, bool coverage, int64_t lanes, Shape& s) {
  if (xd.size() != 2 || zd.size() != 2 || fd.size() != 2 || fd[1] != 2 || zd[1] != 1) {
    return ffi::Error::InvalidArgument("splat kernel: expected x (N, C), z (N or 0, 1), flow (N, 2)");
  }
  s.n = xd[0];
  s.c = xd[1];
  s.has_z = zd[0] != 0;
  if (s.n != b * h * w || fd[0] != s.n || (s.has_z && zd[0] != s.n)) {
    return ffi::Error::InvalidArgument("splat kernel: x, z and flow disagree on N = B * H * W");
  }
  s.e = (s.has_z ? 1 : 0) + (coverage ? 1 : 0);
  s.blocks = s.c / lanes;
  return ffi::Error::Success();
}

bool IsMatrix(ffi::Span<const int64_t> d, int64_t rows, int64_t cols) {
  return d.size() == 2 && d[0] == rows && d[1] == cols;
}

// Source p's values: x z (or x) into val (C floats), [z, 1] into ext (E floats).
template <typename T>
inline void SourceValue(const Shape& s, const T* xp, T zp, bool coverage, T* val, T* ext) {
  if (s.has_z) {
    for (int64_t j = 0; j < s.c; ++j) val[j] = xp[j] * zp;
    ext[0] = zp;
  } else {
    for (int64_t j = 0; j < s.c; ++j) val[j] = xp[j];
  }
  if (coverage) ext[s.e - 1] = T(1);
}

// The forward. Every thread owns a band of output pixels and goes over all the sources, adding only the
// corners that fall in its band: no two threads write the same pixel, and every pixel receives its sums
// in source order, so the result does not depend on the number of threads.
template <ffi::DataType D>
ffi::Error Scatter(ffi::ThreadPool pool, ffi::Buffer<D> x, ffi::Buffer<D> z, ffi::Buffer<D> flow,
                   ffi::Buffer<D> eps, int64_t b, int64_t h, int64_t w, bool coverage, bool normalize,
                   ffi::Result<ffi::Buffer<D>> num, ffi::Result<ffi::Buffer<D>> extra) {
  using T = ffi::NativeType<D>;
  constexpr int64_t L = kLanes<T>;
  Shape s;
  if (auto e = CheckShapes(x.dimensions(), z.dimensions(), flow.dimensions(), b, h, w, coverage, L, s);
      e.failure()) {
    return e;
  }
  if (!IsMatrix(num->dimensions(), s.n, s.c) || !IsMatrix(extra->dimensions(), s.n, s.e) ||
      eps.element_count() != 1 || (normalize && s.e == 0)) {
    return ffi::Error::InvalidArgument("splat kernel: outputs must be (N, C) and (N, E), eps one number");
  }
  const T* xs = x.typed_data();
  const T* zs = z.typed_data();
  const T* fs = flow.typed_data();
  T* acc = num->typed_data();
  T* ext_acc = extra->typed_data();
  const T eps_v = eps.typed_data()[0];
  // Bands of at least 8192 pixels: below that a second thread costs more than it saves.
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), s.n / 8192));
  const int64_t band = (s.n + threads - 1) / threads;
  auto scatter_band = [&](int64_t t0, int64_t t1) {
    std::fill(acc + t0 * s.c, acc + t1 * s.c, T(0));
    std::fill(ext_acc + t0 * s.e, ext_acc + t1 * s.e, T(0));
    std::vector<Vec<T>> val(s.blocks + 1, Vec<T>{});
    T* val_t = reinterpret_cast<T*>(val.data());
    T ext[2] = {T(0), T(0)};
    Corners<T> k;
    for (int64_t p = 0, base = 0, r = 0, col = 0; p < s.n; ++p) {
      const int64_t pb = base, pr = r, pc = col;
      Advance(base, r, col, h, w);
      // Most sources land in another thread's band: rule them out from the target row alone (conservative:
      // rows y0 and y0 + 1 with any column in [-2, w + 1]); a non-finite row drops the source anyway.
      const T gy = static_cast<T>(pr) + fs[2 * p + 1];
      if (!std::isfinite(gy)) continue;
      const int64_t y0 = static_cast<int64_t>(Floor(std::min(std::max(gy, T(-2)), static_cast<T>(h) + T(1))));
      if (pb + (y0 + 2) * w + 2 <= t0 || pb + y0 * w - 2 >= t1) continue;
      FindCorners(p, pb, pr, pc, fs, h, w, k);
      bool mine = false;
      for (int i = 0; i < 4; ++i) mine |= k.index[i] >= t0 && k.index[i] < t1;
      if (!mine) continue;
      SourceValue(s, xs + p * s.c, s.has_z ? zs[p] : T(1), coverage, val_t, ext);
      for (int i = 0; i < 4; ++i) {
        if (k.index[i] < t0 || k.index[i] >= t1) continue;  // outside the image (-1) or another band's
        T* o = acc + k.index[i] * s.c;
        const T a = k.weight[i];
        for (int64_t bk = 0; bk < s.blocks; ++bk) Store(o + bk * L, MulAdd(val[bk], a, Load(o + bk * L)));
        for (int64_t j = s.blocks * L; j < s.c; ++j) o[j] += val_t[j] * a;
        T* oe = ext_acc + k.index[i] * s.e;
        for (int64_t j = 0; j < s.e; ++j) oe[j] += ext[j] * a;
      }
    }
    if (normalize) {
      for (int64_t q = t0; q < t1; ++q) {
        const T den = ext_acc[q * s.e] + eps_v;
        T* o = acc + q * s.c;
        for (int64_t j = 0; j < s.c; ++j) o[j] = o[j] / den;
      }
    }
  };
  ParallelFor(pool, s.n, band, scatter_band);
  return ffi::Error::Success();
}

template <typename T>
inline T Dot(const T* a, const T* b, int64_t blocks, int64_t n) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc = {};
  for (int64_t bk = 0; bk < blocks; ++bk) acc += Load(a + bk * L) * Load(b + bk * L);
  T tail = T(0);
  for (int64_t j = blocks * L; j < n; ++j) tail += a[j] * b[j];
  return Sum(acc) + tail;
}

// The backward: every source's gradients are its own, so the sources are shared out in pieces.
template <ffi::DataType D>
ffi::Error Gather(ffi::ThreadPool pool, ffi::Buffer<D> x, ffi::Buffer<D> z, ffi::Buffer<D> flow, ffi::Buffer<D> g_num,
                  ffi::Buffer<D> g_extra, ffi::Buffer<D> out, ffi::Buffer<D> extra, ffi::Buffer<D> eps,
                  int64_t b, int64_t h, int64_t w, bool coverage, bool normalize,
                  ffi::Result<ffi::Buffer<D>> d_x, ffi::Result<ffi::Buffer<D>> d_z,
                  ffi::Result<ffi::Buffer<D>> d_flow) {
  using T = ffi::NativeType<D>;
  constexpr int64_t L = kLanes<T>;
  Shape s;
  if (auto e = CheckShapes(x.dimensions(), z.dimensions(), flow.dimensions(), b, h, w, coverage, L, s);
      e.failure()) {
    return e;
  }
  if (!IsMatrix(g_num.dimensions(), s.n, s.c) || !IsMatrix(g_extra.dimensions(), s.n, s.e) ||
      !IsMatrix(out.dimensions(), s.n, s.c) || !IsMatrix(extra.dimensions(), s.n, s.e) ||
      eps.element_count() != 1 || (normalize && s.e == 0)) {
    return ffi::Error::InvalidArgument("splat kernel: cotangents and outputs must be (N, C) and (N, E)");
  }
  const T* outs = out.typed_data();
  const T* exs = extra.typed_data();
  const T eps_v = eps.typed_data()[0];
  const T* xs = x.typed_data();
  const T* zs = z.typed_data();
  const T* fs = flow.typed_data();
  const T* gs = g_num.typed_data();
  const T* ge = g_extra.typed_data();
  T* dx = d_x->typed_data();
  T* dz = d_z->typed_data();
  T* df = d_flow->typed_data();
  // The normalisation's backward per output pixel q, once (a pixel is the corner of about four sources):
  // inv_den[q] = 1 / den[q], g_den[q] = -<g_out[q], out[q]> / den[q].
  std::vector<T> inv_den(normalize ? s.n : 0), g_den_q(normalize ? s.n : 0);
  if (normalize) {
    auto prepass = [&](int64_t q0, int64_t q1) {
      for (int64_t t = q0; t < q1; ++t) {
        inv_den[t] = T(1) / (exs[t * s.e] + eps_v);
        g_den_q[t] = -inv_den[t] * Dot(gs + t * s.c, outs + t * s.c, s.blocks, s.c);
      }
    };
    ParallelFor(pool, s.n, 4096, prepass);
  }
  auto gather_piece = [&](int64_t p0, int64_t p1) {
    std::vector<Vec<T>> val(s.blocks + 1, Vec<T>{}), dv(s.blocks + 1, Vec<T>{});
    T* val_t = reinterpret_cast<T*>(val.data());
    T* dv_t = reinterpret_cast<T*>(dv.data());
    T ext[2] = {T(0), T(0)};
    const std::vector<T> zero(std::max<int64_t>(s.c, 2), T(0));  // the cotangent of a dropped corner
    Corners<T> k;
    int64_t base, r, col;
    Locate(p0, h, w, base, r, col);
    for (int64_t p = p0; p < p1; ++p) {
      FindCorners(p, base, r, col, fs, h, w, k);
      Advance(base, r, col, h, w);
      const T* xp = xs + p * s.c;
      const T zp = s.has_z ? zs[p] : T(1);
      SourceValue(s, xp, zp, coverage, val_t, ext);
      const T *q[4], *qe[4];
      T scale[4] = {T(1), T(1), T(1), T(1)}, g_den[4] = {T(0), T(0), T(0), T(0)};
      for (int i = 0; i < 4; ++i) {
        const int64_t t = k.index[i];
        q[i] = t < 0 ? zero.data() : gs + t * s.c;
        qe[i] = t < 0 ? zero.data() : ge + t * s.e;
        if (normalize && t >= 0) {  // the cotangents of the sums at t, from those of out = num / den
          scale[i] = inv_den[t];
          g_den[i] = g_den_q[t];
        }
      }
      // weight = (1 - fx)(1 - fy), fx (1 - fy), (1 - fx) fy, fx fy, so with v = [x z, z, 1]:
      // d fx = <v, (1 - fy)(g1 - g0) + fy (g3 - g2)>, d fy = <v, (1 - fx)(g2 - g0) + fx (g3 - g1)>
      const T fx = k.fx, fy = k.fy;
      const T w0 = k.weight[0], w1 = k.weight[1], w2 = k.weight[2], w3 = k.weight[3];
      Vec<T> sum_x = {}, sum_y = {};
      for (int64_t bk = 0; bk < s.blocks; ++bk) {
        const int64_t o = bk * L;
        const Vec<T> g0 = Load(q[0] + o) * scale[0], g1 = Load(q[1] + o) * scale[1],
                     g2 = Load(q[2] + o) * scale[2], g3 = Load(q[3] + o) * scale[3];
        dv[bk] = g0 * w0 + g1 * w1 + g2 * w2 + g3 * w3;
        sum_x += val[bk] * ((g1 - g0) * (T(1) - fy) + (g3 - g2) * fy);
        sum_y += val[bk] * ((g2 - g0) * (T(1) - fx) + (g3 - g1) * fx);
      }
      T tail_x = T(0), tail_y = T(0), dv_z = T(0);
      for (int64_t j = s.blocks * L; j < s.c; ++j) {
        const T g0 = q[0][j] * scale[0], g1 = q[1][j] * scale[1], g2 = q[2][j] * scale[2], g3 = q[3][j] * scale[3];
        dv_t[j] = g0 * w0 + g1 * w1 + g2 * w2 + g3 * w3;
        tail_x += val_t[j] * ((g1 - g0) * (T(1) - fy) + (g3 - g2) * fy);
        tail_y += val_t[j] * ((g2 - g0) * (T(1) - fx) + (g3 - g1) * fx);
      }
      for (int64_t j = 0; j < s.e; ++j) {
        T g0 = qe[0][j], g1 = qe[1][j], g2 = qe[2][j], g3 = qe[3][j];
        if (j == 0) {  // the normaliser (0 without normalize)
          g0 += g_den[0];
          g1 += g_den[1];
          g2 += g_den[2];
          g3 += g_den[3];
        }
        if (s.has_z && j == 0) dv_z = g0 * w0 + g1 * w1 + g2 * w2 + g3 * w3;
        tail_x += ext[j] * ((g1 - g0) * (T(1) - fy) + (g3 - g2) * fy);
        tail_y += ext[j] * ((g2 - g0) * (T(1) - fx) + (g3 - g1) * fx);
      }
      df[2 * p] = k.live_x ? Sum(sum_x) + tail_x : T(0);
      df[2 * p + 1] = k.live_y ? Sum(sum_y) + tail_y : T(0);
      T* dxp = dx + p * s.c;
      if (s.has_z) {
        // values [x z, z]: d x = d num z, d z = <d num, x> + d extra[0]
        for (int64_t bk = 0; bk < s.blocks; ++bk) Store(dxp + bk * L, dv[bk] * zp);
        for (int64_t j = s.blocks * L; j < s.c; ++j) dxp[j] = dv_t[j] * zp;
        dz[p] = Dot(dv_t, xp, s.blocks, s.c) + dv_z;
      } else {
        std::memcpy(dxp, dv_t, s.c * sizeof(T));
      }
    }
  };
  ParallelFor(pool, s.n, 4096, gather_piece);
  return ffi::Error::Success();
}

}  // namespace

#define GID_SPLAT_HANDLERS(SUFFIX, D)                                                              \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(GidSplatScatter##SUFFIX, Scatter<D>,                               \
                                ffi::Ffi::Bind()                                                   \
                                    .Ctx<ffi::ThreadPool>()                                        \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Attr<int64_t>("b")                                            \
                                    .Attr<int64_t>("h")                                            \
                                    .Attr<int64_t>("w")                                            \
                                    .Attr<bool>("coverage")                                        \
                                    .Attr<bool>("normalize")                                       \
                                    .Ret<ffi::Buffer<D>>()                                         \
                                    .Ret<ffi::Buffer<D>>());                                       \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(GidSplatGather##SUFFIX, Gather<D>,                                 \
                                ffi::Ffi::Bind()                                                   \
                                    .Ctx<ffi::ThreadPool>()                                        \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Attr<int64_t>("b")                                            \
                                    .Attr<int64_t>("h")                                            \
                                    .Attr<int64_t>("w")                                            \
                                    .Attr<bool>("coverage")                                        \
                                    .Attr<bool>("normalize")                                       \
                                    .Ret<ffi::Buffer<D>>()                                         \
                                    .Ret<ffi::Buffer<D>>()                                         \
                                    .Ret<ffi::Buffer<D>>());

GID_SPLAT_HANDLERS(F32, ffi::F32)
GID_SPLAT_HANDLERS(F64, ffi::F64)
