// Bilinear splatting (the scatter at the heart of gid_jax.render.splat) as XLA FFI kernels for the CPU.
//
// XLA:CPU lowers a scatter-add to a generic loop that costs several nanoseconds per updated row; these
// loops do the same arithmetic as the pure-JAX path in gid_jax/render/splat.py (_corners, _scatter_chunks,
// _gather_chunks), source by source, in the same float type. They are built on first use by
// gid_jax/render/native/__init__.py with the system C++ compiler against the FFI headers that ship with
// jaxlib; without a compiler the pure-JAX scatter runs instead.
//
// Layout (all row-major): x (N, C); z (N, 1) or (0, 1) when the sources carry no weight; flow (N, 2)
// (x right, y down, in pixels); N = B * H * W sources. The source values are v = [x z, z] with a weight z,
// else x, then a column of ones when `coverage` is set: V = C + has_z + coverage floats per source.
//
//   forward:  out (N, V)   out[q] = sum over sources p and their corners q of w_q(p) v(p)
//   backward: g (N, V) -> d x (N, C), d z (N or 0, 1), d flow (N, 2)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

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
inline void FindCorners(int64_t p, int64_t base, int64_t r, int64_t c, const T* flow, int64_t h, int64_t w,
                        Corners<T>& k) {
  T gx = static_cast<T>(c) + flow[2 * p];
  T gy = static_cast<T>(r) + flow[2 * p + 1];
  const bool finite = std::isfinite(gx) && std::isfinite(gy);
  const T wmax = static_cast<T>(w) + T(1), hmax = static_cast<T>(h) + T(1);
  k.live_x = finite && gx >= T(-2) && gx <= wmax;
  k.live_y = finite && gy >= T(-2) && gy <= hmax;
  gx = finite ? std::min(std::max(gx, T(-2)), wmax) : T(-2);
  gy = finite ? std::min(std::max(gy, T(-2)), hmax) : T(-2);
  const T x0f = std::floor(gx), y0f = std::floor(gy);
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

template <typename T>
inline T Sum(const Vec<T>& v) {
  T s = T(0);
  for (int64_t l = 0; l < kLanes<T>; ++l) s += v[l];
  return s;
}

struct Shape {
  int64_t n, c, v;  // sources, channels of x, floats per source value
  int64_t blocks;   // whole vectors per source value; the last v % lanes floats go one by one
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
  s.v = s.c + (s.has_z ? 1 : 0) + (coverage ? 1 : 0);
  s.blocks = s.v / lanes;
  return ffi::Error::Success();
}

// Source p's value v = [x z, z, 1] into val (s.v floats).
template <typename T>
inline void SourceValue(const Shape& s, const T* xp, T zp, bool coverage, T* val) {
  if (s.has_z) {
    for (int64_t j = 0; j < s.c; ++j) val[j] = xp[j] * zp;
    val[s.c] = zp;
  } else {
    for (int64_t j = 0; j < s.c; ++j) val[j] = xp[j];
  }
  if (coverage) val[s.v - 1] = T(1);
}

template <ffi::DataType D>
ffi::Error Scatter(ffi::Buffer<D> x, ffi::Buffer<D> z, ffi::Buffer<D> flow, int64_t b, int64_t h, int64_t w,
                   bool coverage, ffi::Result<ffi::Buffer<D>> out) {
  using T = ffi::NativeType<D>;
  constexpr int64_t L = kLanes<T>;
  Shape s;
  if (auto e = CheckShapes(x.dimensions(), z.dimensions(), flow.dimensions(), b, h, w, coverage, L, s);
      e.failure()) {
    return e;
  }
  if (out->dimensions().size() != 2 || out->dimensions()[0] != s.n || out->dimensions()[1] != s.v) {
    return ffi::Error::InvalidArgument("splat kernel: output must be (N, V)");
  }
  const T* xs = x.typed_data();
  const T* zs = z.typed_data();
  const T* fs = flow.typed_data();
  T* acc = out->typed_data();
  std::fill(acc, acc + s.n * s.v, T(0));
  std::vector<Vec<T>> val(s.blocks + 1, Vec<T>{});
  T* val_t = reinterpret_cast<T*>(val.data());
  Corners<T> k;
  for (int64_t p = 0, base = 0, r = 0, col = 0; p < s.n; ++p) {
    FindCorners(p, base, r, col, fs, h, w, k);
    Advance(base, r, col, h, w);
    SourceValue(s, xs + p * s.c, s.has_z ? zs[p] : T(1), coverage, val_t);
    for (int i = 0; i < 4; ++i) {
      if (k.index[i] < 0) continue;
      T* o = acc + k.index[i] * s.v;
      const T a = k.weight[i];
      for (int64_t bk = 0; bk < s.blocks; ++bk) Store(o + bk * L, Load(o + bk * L) + val[bk] * a);
      for (int64_t j = s.blocks * L; j < s.v; ++j) o[j] += val_t[j] * a;
    }
  }
  return ffi::Error::Success();
}

template <ffi::DataType D>
ffi::Error Gather(ffi::Buffer<D> x, ffi::Buffer<D> z, ffi::Buffer<D> flow, ffi::Buffer<D> g, int64_t b,
                  int64_t h, int64_t w, bool coverage, ffi::Result<ffi::Buffer<D>> d_x,
                  ffi::Result<ffi::Buffer<D>> d_z, ffi::Result<ffi::Buffer<D>> d_flow) {
  using T = ffi::NativeType<D>;
  constexpr int64_t L = kLanes<T>;
  Shape s;
  if (auto e = CheckShapes(x.dimensions(), z.dimensions(), flow.dimensions(), b, h, w, coverage, L, s);
      e.failure()) {
    return e;
  }
  if (g.dimensions().size() != 2 || g.dimensions()[0] != s.n || g.dimensions()[1] != s.v) {
    return ffi::Error::InvalidArgument("splat kernel: cotangent must be (N, V)");
  }
  const T* xs = x.typed_data();
  const T* zs = z.typed_data();
  const T* fs = flow.typed_data();
  const T* gs = g.typed_data();
  T* dx = d_x->typed_data();
  T* dz = d_z->typed_data();
  T* df = d_flow->typed_data();
  std::vector<Vec<T>> val(s.blocks + 1, Vec<T>{}), dv(s.blocks + 1, Vec<T>{});
  T* val_t = reinterpret_cast<T*>(val.data());
  T* dv_t = reinterpret_cast<T*>(dv.data());
  const std::vector<T> zero(s.v, T(0));  // the cotangent of a dropped corner
  Corners<T> k;
  for (int64_t p = 0, base = 0, r = 0, col = 0; p < s.n; ++p) {
    FindCorners(p, base, r, col, fs, h, w, k);
    Advance(base, r, col, h, w);
    const T* xp = xs + p * s.c;
    const T zp = s.has_z ? zs[p] : T(1);
    SourceValue(s, xp, zp, coverage, val_t);
    const T* q[4];
    for (int i = 0; i < 4; ++i) q[i] = k.index[i] < 0 ? zero.data() : gs + k.index[i] * s.v;
    // weight = (1 - fx)(1 - fy), fx (1 - fy), (1 - fx) fy, fx fy, so
    // d fx = <v, (1 - fy)(g1 - g0) + fy (g3 - g2)>, d fy = <v, (1 - fx)(g2 - g0) + fx (g3 - g1)>
    const T fx = k.fx, fy = k.fy;
    Vec<T> sum_x = {}, sum_y = {};
    for (int64_t bk = 0; bk < s.blocks; ++bk) {
      const int64_t o = bk * L;
      const Vec<T> g0 = Load(q[0] + o), g1 = Load(q[1] + o), g2 = Load(q[2] + o), g3 = Load(q[3] + o);
      dv[bk] = g0 * k.weight[0] + g1 * k.weight[1] + g2 * k.weight[2] + g3 * k.weight[3];
      sum_x += val[bk] * ((g1 - g0) * (T(1) - fy) + (g3 - g2) * fy);
      sum_y += val[bk] * ((g2 - g0) * (T(1) - fx) + (g3 - g1) * fx);
    }
    T tail_x = T(0), tail_y = T(0);
    for (int64_t j = s.blocks * L; j < s.v; ++j) {
      const T g0 = q[0][j], g1 = q[1][j], g2 = q[2][j], g3 = q[3][j];
      dv_t[j] = g0 * k.weight[0] + g1 * k.weight[1] + g2 * k.weight[2] + g3 * k.weight[3];
      tail_x += val_t[j] * ((g1 - g0) * (T(1) - fy) + (g3 - g2) * fy);
      tail_y += val_t[j] * ((g2 - g0) * (T(1) - fx) + (g3 - g1) * fx);
    }
    df[2 * p] = k.live_x ? Sum<T>(sum_x) + tail_x : T(0);
    df[2 * p + 1] = k.live_y ? Sum<T>(sum_y) + tail_y : T(0);
    T* dxp = dx + p * s.c;
    if (s.has_z) {
      // v = [x z, z]: d x = d v[:C] z, d z = <d v[:C], x> + d v[C]
      T dot = T(0);
      for (int64_t j = 0; j < s.c; ++j) {
        dxp[j] = dv_t[j] * zp;
        dot += dv_t[j] * xp[j];
      }
      dz[p] = dot + dv_t[s.c];
    } else {
      for (int64_t j = 0; j < s.c; ++j) dxp[j] = dv_t[j];
    }
  }
  return ffi::Error::Success();
}

}  // namespace

#define GID_SPLAT_HANDLERS(SUFFIX, D)                                                              \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(GidSplatScatter##SUFFIX, Scatter<D>,                               \
                                ffi::Ffi::Bind()                                                   \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Attr<int64_t>("b")                                            \
                                    .Attr<int64_t>("h")                                            \
                                    .Attr<int64_t>("w")                                            \
                                    .Attr<bool>("coverage")                                        \
                                    .Ret<ffi::Buffer<D>>());                                       \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(GidSplatGather##SUFFIX, Gather<D>,                                 \
                                ffi::Ffi::Bind()                                                   \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Arg<ffi::Buffer<D>>()                                         \
                                    .Attr<int64_t>("b")                                            \
                                    .Attr<int64_t>("h")                                            \
                                    .Attr<int64_t>("w")                                            \
                                    .Attr<bool>("coverage")                                        \
                                    .Ret<ffi::Buffer<D>>()                                         \
                                    .Ret<ffi::Buffer<D>>()                                         \
                                    .Ret<ffi::Buffer<D>>());

GID_SPLAT_HANDLERS(F32, ffi::F32)
GID_SPLAT_HANDLERS(F64, ffi::F64)
