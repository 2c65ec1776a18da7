// Shared by every kernel: the host-device macro, small vector math and the one
// helper behind which backward reductions hide (atomics on the GPU; on the CPU a
// relaxed atomic add on the host, or a caller-provided per-thread buffer).
// Everything here compiles with g++ (host only) and with nvcc (host + device).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define PNERF_HD __host__ __device__ __forceinline__
#define PNERF_HD_HOT PNERF_HD
#define PNERF_DEVICE_CODE 1
#else
#define PNERF_HD inline
// For a helper in a kernel's innermost loop that g++ would otherwise call (the march's
// cell lookup: inlined, its arguments stay in registers).
#define PNERF_HD_HOT inline __attribute__((always_inline))
#endif

namespace pnerf {

// Float and double overloads on the host; CUDA provides the same names on the device.
using std::ceil;
using std::exp;
using std::fabs;
using std::floor;
using std::log;
using std::sqrt;

template <typename T>
struct Vec3 {
  T x, y, z;
};

template <typename T> PNERF_HD Vec3<T> make_vec3(T x, T y, T z) { return Vec3<T>{x, y, z}; }
template <typename T> PNERF_HD Vec3<T> load3(const T* p) { return Vec3<T>{p[0], p[1], p[2]}; }
template <typename T> PNERF_HD void store3(T* p, const Vec3<T>& v) { p[0] = v.x; p[1] = v.y; p[2] = v.z; }
template <typename T> PNERF_HD Vec3<T> operator+(Vec3<T> a, Vec3<T> b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
template <typename T> PNERF_HD Vec3<T> operator-(Vec3<T> a, Vec3<T> b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
template <typename T> PNERF_HD Vec3<T> operator*(Vec3<T> a, T s) { return {a.x * s, a.y * s, a.z * s}; }
template <typename T> PNERF_HD T dot(Vec3<T> a, Vec3<T> b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
template <typename T> PNERF_HD T norm(Vec3<T> a) { return sqrt(dot(a, a)); }

template <typename T> PNERF_HD T min_(T a, T b) { return a < b ? a : b; }
template <typename T> PNERF_HD T max_(T a, T b) { return a > b ? a : b; }
template <typename T> PNERF_HD T clamp_(T v, T lo, T hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Row-major 3x3 matrix times vector.
template <typename T>
PNERF_HD Vec3<T> matvec3(const T* m, Vec3<T> v) {
  return {m[0] * v.x + m[1] * v.y + m[2] * v.z, m[3] * v.x + m[4] * v.y + m[5] * v.z,
          m[6] * v.x + m[7] * v.y + m[8] * v.z};
}

#if !defined(__CUDA_ARCH__)
// Host: a relaxed compare-and-swap loop (std::atomic_ref is C++20; extensions build as C++17).
template <typename T>
inline void host_atomic_add(T* dst, T v) {
  T old;
  __atomic_load(dst, &old, __ATOMIC_RELAXED);
  T desired;
  do {
    desired = old + v;
  } while (!__atomic_compare_exchange(dst, &old, &desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}
#endif

// The one reduction helper: add `v` into `*dst` from many threads at once.
template <typename T>
PNERF_HD void atomic_add(T* dst, T v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(dst, v);
#else
  host_atomic_add(dst, v);
#endif
}

}  // namespace pnerf
