// The element-wise passes of a step over one chunk, for float or double storage. Loads widen to
// double, koala/math.h does the arithmetic, stores round once. The reductions keep kLanes
// independent partial sums and add them up in a fixed order.
//
// Included only by cpu/kernels_isa.inc, once per instruction set, inside the namespace that
// KOALA_CPU_ISA names (Note [instruction sets], cpu/kernels.h).
//
// Note [vector lanes]
// A pass walks its chunk in blocks of kLanes elements held in one `Lanes` value, a vector of
// kLanes doubles (GCC/Clang vector extensions): element i of the chunk is lane i % kLanes of
// block i / kLanes, and each sum keeps one partial per lane, added to in block order, then the
// lanes added up 0, 1, ..., kLanes - 1. The last block may be partial: it is loaded zero-padded,
// stored only for its real elements, and its padding lanes add nothing to a sum (masked, or +0
// added to a sum of squares, which is never -0). So the result depends on nothing but the data:
// the compiler maps a Lanes to one 512-bit register (AVX-512), two 256-bit (AVX2) or four 128-bit
// (SSE2) ones, each doing the same IEEE operations on the same lanes, and with no fused
// multiply-add (-ffp-contract=off) but where it rounds as the two operations do (Note [exact
// squares]) the instruction sets give bitwise the same results. The loops
// are written on whole vectors because the compilers left the per-element form (a loop over
// i with a lane array) partly scalar, with the partial sums kept in memory.
#include <cstddef>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "koala/math.h"
#include "koala/types.h"

#ifndef KOALA_CPU_ISA
#error "cpu/passes.h is included through cpu/kernels_isa.inc, with KOALA_CPU_ISA defined"
#endif

namespace koala {
namespace cpu {
namespace KOALA_CPU_ISA {

constexpr std::size_t kLanes = 8;

// kLanes doubles: the value type of the math (Note [vector lanes]), held as kParts vectors of the
// instruction set's width (KOALA_CPU_VECTOR_BYTES) so that the compiler keeps them in registers.
typedef double Part __attribute__((vector_size(KOALA_CPU_VECTOR_BYTES)));
typedef float FloatPart __attribute__((vector_size(KOALA_CPU_VECTOR_BYTES / 2)));
constexpr std::size_t kPartLanes = sizeof(Part) / sizeof(double);
constexpr std::size_t kParts = kLanes / kPartLanes;
static_assert(kParts * kPartLanes == kLanes, "a vector register holds at most kLanes doubles");

struct Lanes {
  Part part[kParts];
};

// The operations koala/math.h applies, lane by lane.
inline Lanes operator+(Lanes a, const Lanes& b) {
  for (std::size_t k = 0; k < kParts; ++k) a.part[k] += b.part[k];
  return a;
}
inline Lanes operator-(Lanes a, const Lanes& b) {
  for (std::size_t k = 0; k < kParts; ++k) a.part[k] -= b.part[k];
  return a;
}
inline Lanes operator*(Lanes a, const Lanes& b) {
  for (std::size_t k = 0; k < kParts; ++k) a.part[k] *= b.part[k];
  return a;
}
inline Lanes operator*(double s, Lanes a) {
  for (std::size_t k = 0; k < kParts; ++k) a.part[k] = s * a.part[k];
  return a;
}
inline Lanes& operator+=(Lanes& a, const Lanes& b) { return a = a + b; }

// Note [emulated AVX-512]
// The AVX-512 passes run only on a processor with AVX-512, which the development and CI machines
// lack. So that their code still runs and is compared, a test build (cmake
// -DKOALA_EMULATED_AVX512=ON, which scripts/install.js passes in a source checkout on x86-64, or
// `npm run build:avx512-emulated`: the addon koala_optim_avx512_emulated.node, never shipped) compiles kernels_avx512.cpp's passes unchanged,
// on the same 64-byte vectors, for AVX2 instead, and the three AVX-512 instructions they name are
// done by the three functions below as Intel documents them, each on two 256-bit halves.
// test/parity/isa.test.ts compares that build's avx512 set with the baseline bitwise. What it
// cannot check is the compiler's own AVX-512 code: that takes the processor.
#if KOALA_CPU_VECTOR_BYTES == 64 && (defined(__AVX512F__) || defined(KOALA_EMULATED_AVX512))
#define KOALA_CPU_AVX512 1
#if defined(KOALA_EMULATED_AVX512)
inline Part avx512_join(__m256d lo, __m256d hi) {
  Part r;
  std::memcpy(&r, &lo, sizeof lo);
  std::memcpy(reinterpret_cast<char*>(&r) + sizeof lo, &hi, sizeof hi);
  return r;
}
inline __m256d avx512_half(const Part& v, int h) {
  __m256d r;
  std::memcpy(&r, reinterpret_cast<const char*>(&v) + h * sizeof r, sizeof r);
  return r;
}
inline Part avx512_widen(__m256 f) {
  return avx512_join(_mm256_cvtps_pd(_mm256_castps256_ps128(f)), _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
}
inline __m256 avx512_narrow(const Part& v) {
  return _mm256_set_m128(_mm256_cvtpd_ps(avx512_half(v, 1)), _mm256_cvtpd_ps(avx512_half(v, 0)));
}
inline Part avx512_fmadd(const Part& a, const Part& b, const Part& c) {
  return avx512_join(_mm256_fmadd_pd(avx512_half(a, 0), avx512_half(b, 0), avx512_half(c, 0)),
                     _mm256_fmadd_pd(avx512_half(a, 1), avx512_half(b, 1), avx512_half(c, 1)));
}
#else
// vcvtps2pd, vcvtpd2ps and vfmadd on all eight lanes (the masked forms with every lane selected:
// GCC 12 warns on the plain conversions).
inline Part avx512_widen(__m256 f) { return _mm512_maskz_cvtps_pd(0xFF, f); }
inline __m256 avx512_narrow(Part v) { return _mm512_maskz_cvtpd_ps(0xFF, v); }
inline Part avx512_fmadd(Part a, Part b, Part c) { return _mm512_fmadd_pd(a, b, c); }
#endif
#else
#define KOALA_CPU_AVX512 0
#endif

// A full block's element count, known at compile time; a partial block passes a std::size_t.
using Full = std::integral_constant<std::size_t, kLanes>;

inline Lanes load(const double* p, Full) {
  Lanes v;
  for (std::size_t k = 0; k < kParts; ++k) std::memcpy(&v.part[k], p + k * kPartLanes, sizeof(Part));
  return v;
}
// kPartLanes floats widened to double, and back. On x86-64 with the instruction set's own
// conversion, in one instruction: GCC 12 splits __builtin_convertvector of a wide vector into
// halves that it converts and joins again, which made the float32 passes a third slower.
inline Part widen(const float* p) {
#if KOALA_CPU_AVX512
  return avx512_widen(_mm256_loadu_ps(p));
#elif defined(__AVX__) && KOALA_CPU_VECTOR_BYTES == 32
  return _mm256_cvtps_pd(_mm_loadu_ps(p));
#elif defined(__SSE2__) && KOALA_CPU_VECTOR_BYTES == 16
  return _mm_cvtps_pd(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#else
  FloatPart f;
  std::memcpy(&f, p, sizeof f);
  return __builtin_convertvector(f, Part);
#endif
}
inline void narrow(float* p, Part v) {
#if KOALA_CPU_AVX512
  _mm256_storeu_ps(p, avx512_narrow(v));
#elif defined(__AVX__) && KOALA_CPU_VECTOR_BYTES == 32
  _mm_storeu_ps(p, _mm256_cvtpd_ps(v));
#elif defined(__SSE2__) && KOALA_CPU_VECTOR_BYTES == 16
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_castps_si128(_mm_cvtpd_ps(v)));
#else
  const FloatPart f = __builtin_convertvector(v, FloatPart);
  std::memcpy(p, &f, sizeof f);
#endif
}

// The same, from a register.
inline Part widen(FloatPart f) {
#if KOALA_CPU_AVX512
  return avx512_widen(f);
#elif defined(__AVX__) && KOALA_CPU_VECTOR_BYTES == 32
  return _mm256_cvtps_pd(f);
#else
  return __builtin_convertvector(f, Part);
#endif
}

inline Lanes load(const float* p, Full) {
  Lanes v;
  for (std::size_t k = 0; k < kParts; ++k) v.part[k] = widen(p + k * kPartLanes);
  return v;
}
inline void store(double* p, const Lanes& v, Full) {
  for (std::size_t k = 0; k < kParts; ++k) std::memcpy(p + k * kPartLanes, &v.part[k], sizeof(Part));
}
inline void store(float* p, const Lanes& v, Full) {
  for (std::size_t k = 0; k < kParts; ++k) narrow(p + k * kPartLanes, v.part[k]);
}

// A partial block: m < kLanes elements, loaded with zeros after them, stored without them.
template <class T>
inline Lanes load(const T* p, std::size_t m) {
  T block[kLanes] = {};
  std::memcpy(block, p, m * sizeof(T));
  return load(block, Full{});
}
template <class T>
inline void store(T* p, const Lanes& v, std::size_t m) {
  T block[kLanes];
  store(block, v, Full{});
  std::memcpy(p, block, m * sizeof(T));
}

// kLanes floats as they are stored, for Note [float32 predict].
struct FloatLanes {
  FloatPart part[kParts];
};
inline FloatLanes load_float(const float* p, Full) {
  FloatLanes v;
  for (std::size_t k = 0; k < kParts; ++k) std::memcpy(&v.part[k], p + k * kPartLanes, sizeof(FloatPart));
  return v;
}
inline FloatLanes load_float(const float* p, std::size_t m) {
  float block[kLanes] = {};
  std::memcpy(block, p, m * sizeof(float));
  return load_float(block, Full{});
}
inline void store_float(float* p, const FloatLanes& v, Full) {
  for (std::size_t k = 0; k < kParts; ++k) std::memcpy(p + k * kPartLanes, &v.part[k], sizeof(FloatPart));
}
inline void store_float(float* p, const FloatLanes& v, std::size_t m) {
  float block[kLanes];
  store_float(block, v, Full{});
  std::memcpy(p, block, m * sizeof(float));
}

// A block rounded to the storage type T (the pointer only picks the overload): KOALA++ takes H
// and v as stored (Note [KOALA++ passes], core/step_pp.h), a deferred decay the velocity as the
// predict would have stored it (Note [deferred decay], cpu/optimizer.h).
inline Lanes rounded(const Lanes& v, const double*) { return v; }
inline Lanes rounded(Lanes v, const float*) {
  for (std::size_t k = 0; k < kParts; ++k) {
#if KOALA_CPU_AVX512
    v.part[k] = avx512_widen(avx512_narrow(v.part[k]));
#elif defined(__AVX__) && KOALA_CPU_VECTOR_BYTES == 32
    v.part[k] = _mm256_cvtps_pd(_mm256_cvtpd_ps(v.part[k]));
#elif defined(__SSE2__) && KOALA_CPU_VECTOR_BYTES == 16
    v.part[k] = _mm_cvtps_pd(_mm_cvtpd_ps(v.part[k]));
#else
    v.part[k] = __builtin_convertvector(__builtin_convertvector(v.part[k], FloatPart), Part);
#endif
  }
  return v;
}

// The lanes of a partial block past its m elements set to zero, so that they add nothing to a sum.
inline Lanes keep_first(const Lanes& v, Full) { return v; }
inline Lanes keep_first(const Lanes& v, std::size_t m) {
  double block[kLanes];
  store(block, v, Full{});
  for (std::size_t j = m; j < kLanes; ++j) block[j] = 0.0;
  return load(block, Full{});
}

inline double sum_lanes(const Lanes& lanes) {
  double s = 0.0;
  for (std::size_t j = 0; j < kLanes; ++j) s += lanes.part[j / kPartLanes][j % kPartLanes];
  return s;
}

// Calls body(i, m) for each block of the chunk [0, n): i its first element, m its size (Full,
// or a std::size_t below kLanes for the last, partial block).
template <class Body>
inline void for_each_block(std::size_t n, Body&& body) {
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) body(i, Full{});
  if (i < n) body(i, n - i);
}

// Note [exact squares]
// acc + v * v, for a v widened from float32: the square of a float is exact in double (48
// significant bits at most, and far from overflow and underflow), so a fused multiply-add, which
// rounds the exact v * v + acc once, gives bitwise the sum that the multiplication then the
// addition give. Where the instruction set has FMA it is used: on Zen 3 the additions and the
// float/double conversions share two pipes and the multiplications have two of their own, so the
// layer-sums pass, bound by the former, ran a quarter faster in cache. No other product of a pass
// is exact, so everywhere else the operations stay apart (-ffp-contract=off).
inline void add_exact_square(Lanes& acc, const Lanes& v) {
#if KOALA_CPU_AVX512
  for (std::size_t k = 0; k < kParts; ++k) acc.part[k] = avx512_fmadd(v.part[k], v.part[k], acc.part[k]);
#elif defined(__FMA__) && KOALA_CPU_VECTOR_BYTES == 32
  for (std::size_t k = 0; k < kParts; ++k) acc.part[k] = _mm256_fmadd_pd(v.part[k], v.part[k], acc.part[k]);
#else
  acc += v * v;
#endif
}

template <class T>
LayerSums stats_chunk(const T* __restrict__ g, const T* __restrict__ x, std::size_t n, double wd) {
  Lanes hh = {}, xx = {}, gg = {};
  for_each_block(n, [&](std::size_t i, auto m) {
    if constexpr (std::is_same<T, float>::value) {
      // math::accumulate_stats with |x|^2 and |g|^2 through Note [exact squares].
      const Lanes gi = load(g + i, m), xi = load(x + i, m);
      const Lanes h = math::decayed_grad<Lanes>(gi, xi, wd);
      hh += h * h;
      add_exact_square(xx, xi);
      add_exact_square(gg, gi);
    } else {
      math::accumulate_stats<Lanes>(load(g + i, m), load(x + i, m), wd, hh, xx, gg);
    }
  });
  return {sum_lanes(hh), sum_lanes(xx), sum_lanes(gg)};
}

// Note [float32 predict]
// In float32 storage the predict's move x += v is a float addition, and its decay v *= kappa a
// float multiplication when kappa is a float (lib/options.ts rounds it so, as the reference does):
// rounding the double result to float gives the float operation's result. The product is exact in
// double (48 bits); for x + v, double has 53 >= 2 * 24 + 2 bits, enough that rounding twice (to
// double, then to float) equals rounding once, for every finite or infinite input. The sum of
// (a - x)^2 stays in double. So the results are bitwise those of the double formula, with fewer
// conversions in and out per element. Another kappa takes the double formula for the decay.
inline bool is_float(double v) { return static_cast<double>(static_cast<float>(v)) == v; }

// One block of the KOALA-M predict's move, x += v (Note [float32 predict]); returns (a - x)^2 on
// the pre-move x.
template <class T, class M>
inline Lanes move_block(T* __restrict__ x, const T* __restrict__ v, const T* __restrict__ a, M m) {
  if constexpr (std::is_same<T, float>::value) {
    const Lanes gap = math::squared_gap<Lanes>(load(a, m), load(x, m));
    FloatLanes xi = load_float(x, m);
    const FloatLanes vi = load_float(v, m);
    for (std::size_t k = 0; k < kParts; ++k) xi.part[k] = math::momentum_move<FloatPart>(xi.part[k], vi.part[k]);
    store_float(x, xi, m);
    return gap;
  } else {
    const Lanes xi = load(x, m);
    store(x, math::momentum_move<Lanes>(xi, load(v, m)), m);
    return math::squared_gap<Lanes>(load(a, m), xi);
  }
}

// One block of the velocity's decay, v *= kappa as the predict stores it, widened: with float
// storage and a float kappa (FloatKappa) a float multiplication (Note [float32 predict]), else the
// double formula rounded to T.
template <bool FloatKappa, class T, class M>
inline Lanes decayed(const T* v, M m, double kappa) {
  if constexpr (FloatKappa) {
    const float kappa_f = static_cast<float>(kappa);
    const FloatLanes f = load_float(v, m);
    Lanes out;
    for (std::size_t k = 0; k < kParts; ++k) out.part[k] = widen(math::velocity_decay<FloatPart, float>(f.part[k], kappa_f));
    return out;
  } else {
    return rounded(math::velocity_decay<Lanes>(load(v, m), kappa), v);
  }
}

// Calls fn(std::true_type{}) when T is float and kappa a float (the float decay of decayed()),
// else fn(std::false_type{}), so that a loop is compiled for either case and tests neither.
template <class T, class Fn>
inline void with_decay_kind(double kappa, Fn&& fn) {
  if constexpr (std::is_same<T, float>::value) {
    if (is_float(kappa)) return fn(std::true_type{});
  }
  fn(std::false_type{});
}

// KOALA-M predict over one chunk: x += v, v *= kappa; returns the chunk's sum of (a - x)^2 on the
// pre-predict x. Without lazy predict the decay waits for the update pass (Note [deferred decay],
// cpu/optimizer.h), and the predict is momentum_move_chunk.
template <class T>
double momentum_predict_chunk(T* __restrict__ x, T* __restrict__ v, const T* __restrict__ a, std::size_t n,
                              double kappa) {
  Lanes dd = {};
  with_decay_kind<T>(kappa, [&](auto float_kappa) {
    for_each_block(n, [&](std::size_t i, auto m) {
      dd += move_block(x + i, v + i, a + i, m);
      store(v + i, decayed<decltype(float_kappa)::value>(v + i, m, kappa), m);
    });
  });
  return sum_lanes(dd);
}

// The predict's move alone, x += v, the decay left pending (Note [deferred decay]); returns the
// chunk's sum of (a - x)^2 on the pre-predict x.
template <class T>
double momentum_move_chunk(T* __restrict__ x, const T* __restrict__ v, const T* __restrict__ a, std::size_t n) {
  Lanes dd = {};
  for_each_block(n, [&](std::size_t i, auto m) { dd += move_block(x + i, v + i, a + i, m); });
  return sum_lanes(dd);
}

// The deferred decay alone, v *= kappa: a layer the update skips, or a second predict before an
// update (Note [deferred decay]).
template <class T>
void momentum_decay_chunk(T* __restrict__ v, std::size_t n, double kappa) {
  with_decay_kind<T>(kappa, [&](auto float_kappa) {
    for_each_block(n, [&](std::size_t i, auto m) { store(v + i, decayed<decltype(float_kappa)::value>(v + i, m, kappa), m); });
  });
}

// The KOALA-M update on a velocity whose decay is deferred: v *= kappa, then the update.
template <class T>
void momentum_decay_update_chunk(const T* __restrict__ g, T* __restrict__ x, T* __restrict__ v, T* __restrict__ a,
                                 std::size_t n, double wd, double k1, double k2, double kappa) {
  with_decay_kind<T>(kappa, [&](auto float_kappa) {
    for_each_block(n, [&](std::size_t i, auto m) {
      Lanes xi = load(x + i, m), vi = decayed<decltype(float_kappa)::value>(v + i, m, kappa), ai = load(a + i, m);
      math::momentum_update<Lanes>(load(g + i, m), xi, vi, ai, wd, k1, k2);
      store(x + i, xi, m);
      store(v + i, vi, m);
      store(a + i, ai, m);
    });
  });
}

// Lazy predict: the KOALA-M update, then at once the next step's element-wise predict; returns the
// chunk's sum of (a - x)^2 on the updated values (Note [lazy predict], cpu/optimizer.h).
template <class T>
double momentum_update_predict_chunk(const T* __restrict__ g, T* __restrict__ x, T* __restrict__ v,
                                     T* __restrict__ a, std::size_t n, double wd, double k1, double k2,
                                     double kappa) {
  Lanes dd = {};
  for_each_block(n, [&](std::size_t i, auto m) {
    Lanes xi = load(x + i, m), vi = load(v + i, m), ai = load(a + i, m);
    math::momentum_update<Lanes>(load(g + i, m), xi, vi, ai, wd, k1, k2);
    // Masked: with a non-finite gain the padding would add NaN where the data adds Inf.
    dd += keep_first(math::momentum_predict<Lanes>(xi, vi, ai, kappa), m);
    store(x + i, xi, m);
    store(v + i, vi, m);
    store(a + i, ai, m);
  });
  return sum_lanes(dd);
}

template <class T>
void momentum_update_chunk(const T* __restrict__ g, T* __restrict__ x, T* __restrict__ v,
                           T* __restrict__ a, std::size_t n, double wd, double k1, double k2) {
  for_each_block(n, [&](std::size_t i, auto m) {
    Lanes xi = load(x + i, m), vi = load(v + i, m), ai = load(a + i, m);
    math::momentum_update<Lanes>(load(g + i, m), xi, vi, ai, wd, k1, k2);
    store(x + i, xi, m);
    store(v + i, vi, m);
    store(a + i, ai, m);
  });
}

// wd: the decay inside the direction, direction_decay() (0: along the raw g, the official code).
template <class T>
void vanilla_update_chunk(const T* __restrict__ g, T* __restrict__ x, std::size_t n, double wd, double k) {
  for_each_block(n, [&](std::size_t i, auto m) {
    store(x + i, math::vanilla_update<Lanes>(load(g + i, m), load(x + i, m), wd, k), m);
  });
}

// KOALA++'s first pass over one chunk: |g|^2, |x|^2, and with H = g + wd x rounded to T, |H|^2,
// H . Hp, H . v and |v|^2 (a partial block's padding is zeros and adds +0 to each).
template <class T>
PPLayerSums pp_dots_chunk(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ v,
                          const T* __restrict__ hp, std::size_t n, double wd) {
  Lanes gg = {}, xx = {}, hh = {}, a = {}, b = {}, vv = {};
  for_each_block(n, [&](std::size_t i, auto m) {
    const Lanes gi = load(g + i, m), xi = load(x + i, m), vi = load(v + i, m);
    const Lanes h = rounded(math::decayed_grad<Lanes>(gi, xi, wd), x);
    gg += gi * gi;
    xx += xi * xi;
    hh += h * h;
    a += h * load(hp + i, m);
    b += h * vi;
    vv += vi * vi;
  });
  return {sum_lanes(gg), sum_lanes(xx), sum_lanes(hh), sum_lanes(a), sum_lanes(b), sum_lanes(vv)};
}

// KOALA++'s second pass over one chunk of an updated layer: v <- v', Hp <- H, x <- x - k (v' + Q H),
// with v' and H as stored. On the layer's first update (First) the previous direction is H and the
// previous product sigma H (as stored). Compiled for either case, so that the loop tests neither.
template <bool First, class T>
void pp_update_blocks(const T* __restrict__ g, T* __restrict__ x, T* __restrict__ v, T* __restrict__ hp, std::size_t n,
                      double wd, double sigma, double q, double cv, double lambda, double rk, double k) {
  for_each_block(n, [&](std::size_t i, auto m) {
    const Lanes xi = load(x + i, m);
    const Lanes h = rounded(math::decayed_grad<Lanes>(load(g + i, m), xi, wd), x);
    const Lanes v_prev = First ? rounded(sigma * h, x) : load(v + i, m);
    const Lanes h_prev = First ? h : load(hp + i, m);
    const Lanes v_next = rounded(math::pp_product<Lanes>(h, v_prev, h_prev, cv, q, lambda, rk), x);
    store(x + i, xi - k * (v_next + q * h), m);
    store(v + i, v_next, m);
    store(hp + i, h, m);
  });
}

template <class T>
void pp_update_chunk(const T* __restrict__ g, T* __restrict__ x, T* __restrict__ v, T* __restrict__ hp,
                     std::size_t n, double wd, bool first, double sigma, double q, double cv, double lambda, double rk,
                     double k) {
  if (first) {
    pp_update_blocks<true>(g, x, v, hp, n, wd, sigma, q, cv, lambda, rk, k);
  } else {
    pp_update_blocks<false>(g, x, v, hp, n, wd, sigma, q, cv, lambda, rk, k);
  }
}

}  // namespace KOALA_CPU_ISA
}  // namespace cpu
}  // namespace koala
