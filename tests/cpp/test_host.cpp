// Host unit tests for the shared host-device kernel math in csrc/include/pnerf/.
// Plain C++20, no torch: the same functors the CPU and CUDA launchers run, called
// directly on the host. Built and run by CMake (`ctest`); nonzero exit on failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

#include "pnerf/common.h"
#include "pnerf/composite.h"
#include "pnerf/encoding.h"
#include "pnerf/grid.h"
#include "pnerf/hashgrid.h"
#include "pnerf/mlp.h"
#include "pnerf/occgrid.h"
#include "pnerf/raymarch.h"
#include "pnerf/rays.h"

using namespace pnerf;
using V3 = Vec3<double>;

// ---------------------------------------------------------------- tiny harness
static int g_checks = 0, g_failures = 0;
static const char* g_test = "";

#define CHECK(cond)                                                                          \
  do {                                                                                       \
    ++g_checks;                                                                              \
    if (!(cond)) {                                                                           \
      ++g_failures;                                                                          \
      std::fprintf(stderr, "FAIL [%s] %s:%d: %s\n", g_test, __FILE__, __LINE__, #cond);      \
    }                                                                                        \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                \
  do {                                                                                       \
    ++g_checks;                                                                              \
    const double va_ = (double)(a), vb_ = (double)(b), vt_ = (double)(tol);                  \
    if (!(std::fabs(va_ - vb_) <= vt_)) {                                                    \
      ++g_failures;                                                                          \
      std::fprintf(stderr, "FAIL [%s] %s:%d: %s = %.17g vs %s = %.17g (tol %g)\n", g_test,   \
                   __FILE__, __LINE__, #a, va_, #b, vb_, vt_);                               \
    }                                                                                        \
  } while (0)

struct TestCase {
  const char* name;
  void (*fn)();
};
static std::vector<TestCase>& registry() {
  static std::vector<TestCase> r;
  return r;
}
struct Register {
  Register(const char* n, void (*f)()) { registry().push_back({n, f}); }
};
#define TEST(name)                                 \
  static void test_##name();                       \
  static Register reg_##name(#name, &test_##name); \
  static void test_##name()

// Deterministic generator (no <random> distribution differences across libstdc++).
struct Lcg {
  uint64_t s;
  explicit Lcg(uint64_t seed) : s(seed * 6364136223846793005ull + 1442695040888963407ull) {}
  double uniform() {  // [0, 1)
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(s >> 11) * (1.0 / 9007199254740992.0);
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
};

static V3 v3(double x, double y, double z) { return make_vec3(x, y, z); }

// ---------------------------------------------------------------- rays.h
TEST(ray_aabb_hits_and_misses) {
  const double box[6] = {-1, -1, -1, 1, 1, 1};
  double n = -7, f = -7;
  // straight through along x (y, z direction components are zero)
  CHECK(ray_aabb(v3(-3, 0, 0), v3(1, 0, 0), box, &n, &f));
  CHECK_NEAR(n, 2.0, 1e-12);
  CHECK_NEAR(f, 4.0, 1e-12);
  // zero direction components with the origin outside the slab: a miss, zeros written
  n = f = -7;
  CHECK(!ray_aabb(v3(-3, 2, 0), v3(1, 0, 0), box, &n, &f));
  CHECK(n == 0.0 && f == 0.0);
  CHECK(!ray_aabb(v3(0, 1.5, -3), v3(0, 0, 1), box, &n, &f));  // two zero components
  // zero components, origin inside the other slabs
  CHECK(ray_aabb(v3(0.5, -0.25, -3), v3(0, 0, 2), box, &n, &f));
  CHECK_NEAR(n, 1.0, 1e-12);
  CHECK_NEAR(f, 2.0, 1e-12);
  // origin inside: near clamps to 0
  CHECK(ray_aabb(v3(0, 0, 0), v3(1, 0, 0), box, &n, &f));
  CHECK_NEAR(n, 0.0, 0);
  CHECK_NEAR(f, 1.0, 1e-12);
  // box behind the origin
  CHECK(!ray_aabb(v3(3, 0, 0), v3(1, 0, 0), box, &n, &f));
  // diagonal miss: the x and y slab intervals do not overlap
  CHECK(!ray_aabb(v3(-3, 0, 0), v3(1, 1, 0), box, &n, &f));
  // diagonal hit through a corner region; entry and exit points lie on the box
  const V3 o = v3(-2, -1.5, 0.2), d = v3(1, 0.8, -0.1);
  CHECK(ray_aabb(o, d, box, &n, &f));
  CHECK(f > n && n > 0);
  for (double t : {n, f}) {
    const V3 p = o + d * t;
    const double m = std::fmax(std::fmax(std::fabs(p.x), std::fabs(p.y)), std::fabs(p.z));
    CHECK_NEAR(m, 1.0, 1e-12);
  }
  // negative direction components
  CHECK(ray_aabb(v3(0.3, 5, 0.1), v3(0, -1, 0), box, &n, &f));
  CHECK_NEAR(n, 4.0, 1e-12);
  CHECK_NEAR(f, 6.0, 1e-12);
  // float instantiation
  const float boxf[6] = {-1, -1, -1, 1, 1, 1};
  float nf, ff;
  CHECK(ray_aabb(make_vec3(-3.f, 0.f, 0.f), make_vec3(1.f, 0.f, 0.f), boxf, &nf, &ff));
  CHECK_NEAR(nf, 2.0, 1e-6);
  CHECK_NEAR(ff, 4.0, 1e-6);
}

TEST(warp_ray_identity_and_scaled_rotation) {
  V3 oc, dc;
  double len;
  // identity (no table row): origin unchanged, direction normalised, len = |d|
  warp_ray<double>(nullptr, v3(1, 2, 3), v3(0, 3, 4), &oc, &dc, &len);
  CHECK_NEAR(oc.x, 1, 0);
  CHECK_NEAR(oc.y, 2, 0);
  CHECK_NEAR(oc.z, 3, 0);
  CHECK_NEAR(dc.x, 0, 1e-15);
  CHECK_NEAR(dc.y, 0.6, 1e-15);
  CHECK_NEAR(dc.z, 0.8, 1e-15);
  CHECK_NEAR(len, 5, 1e-15);
  // identity as an explicit row
  const double eye[12] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0};
  warp_ray(eye, v3(1, 2, 3), v3(0, 3, 4), &oc, &dc, &len);
  CHECK_NEAR(oc.y, 2, 0);
  CHECK_NEAR(dc.z, 0.8, 1e-15);
  CHECK_NEAR(len, 5, 1e-15);
  // A = s R with s = 2, R = 90 degrees about z; t = (1, 2, 3)
  const double row[12] = {0, -2, 0, 2, 0, 0, 0, 0, 2, 1, 2, 3};
  warp_ray(row, v3(1, 0, 0), v3(1, 0, 0), &oc, &dc, &len);
  CHECK_NEAR(oc.x, 1, 1e-15);
  CHECK_NEAR(oc.y, 4, 1e-15);
  CHECK_NEAR(oc.z, 3, 1e-15);
  CHECK_NEAR(dc.x, 0, 1e-15);
  CHECK_NEAR(dc.y, 1, 1e-15);
  CHECK_NEAR(dc.z, 0, 1e-15);
  CHECK_NEAR(len, 2, 1e-15);
  // general direction: canonical point at t_c = len * t_w equals A x_w + t
  const V3 o = v3(0.3, -0.7, 1.1), d = v3(-0.2, 0.5, 0.9);
  warp_ray(row, o, d, &oc, &dc, &len);
  CHECK_NEAR(norm(dc), 1.0, 1e-14);
  CHECK_NEAR(len, 2.0 * norm(d), 1e-14);  // a rotation keeps lengths; the scale doubles them
  for (double tw : {0.0, 0.7, 2.5}) {
    const V3 xw = o + d * tw;
    const V3 ax = matvec3(row, xw);
    const V3 want = v3(ax.x + row[9], ax.y + row[10], ax.z + row[11]);
    const V3 got = oc + dc * (len * tw);
    CHECK_NEAR(got.x, want.x, 1e-13);
    CHECK_NEAR(got.y, want.y, 1e-13);
    CHECK_NEAR(got.z, want.z, 1e-13);
  }
}

// ---------------------------------------------------------------- grid.h
static GridSpec<double> make_grid(const uint8_t* bits, int levels, int res, V3 c, V3 h) {
  GridSpec<double> g{};
  g.bits = bits;
  g.levels = levels;
  g.res = res;
  g.center[0] = c.x, g.center[1] = c.y, g.center[2] = c.z;
  g.half[0] = h.x, g.half[1] = h.y, g.half[2] = h.z;
  for (int a = 0; a < 3; ++a) g.inv_half[a] = 1.0 / g.half[a];
  grid_spec_derive(g);
  return g;
}

TEST(grid_level_boundaries) {
  const auto g = make_grid(nullptr, 3, 8, v3(0.1, -0.2, 0.3), v3(1.0, 0.5, 2.0));
  CHECK(grid_level(g, v3(0.1, -0.2, 0.3)) == 0);
  CHECK(grid_level(g, v3(0.1 + 0.99, -0.2, 0.3)) == 0);
  CHECK(grid_level(g, v3(0.1, -0.2 + 0.49, 0.3 - 1.99)) == 0);
  CHECK(grid_level(g, v3(0.1 + 1.5, -0.2, 0.3)) == 1);
  CHECK(grid_level(g, v3(0.1, -0.2 - 0.9, 0.3)) == 1);   // |q_y| = 1.8
  CHECK(grid_level(g, v3(0.1, -0.2, 0.3 + 7.9)) == 2);   // |q_z| = 3.95
  CHECK(grid_level(g, v3(0.1 + 4.1, -0.2, 0.3)) == -1);  // outside the coarsest level
  int l = 7;
  CHECK(grid_cell(g, v3(0.1 + 4.1, -0.2, 0.3), &l) == -1);
  CHECK(l == -1);
  CHECK(!grid_occupied(g, v3(0.1 + 4.1, -0.2, 0.3)));
  CHECK(grid_occupied(g, v3(0.1, -0.2, 0.3)));  // bits == nullptr: every cell occupied
}

TEST(grid_cell_position_round_trip) {
  for (int res : {4, 8, 16}) {
    const auto g = make_grid(nullptr, 2, res, v3(0.1, -0.2, 0.3), v3(1.0, 0.5, 2.0));
    const int64_t n0 = (int64_t)res * res * res;
    for (int64_t idx = 0; idx < n0; ++idx) {
      for (double j : {0.5, 0.01, 0.99}) {
        int l = -7;
        const V3 p = grid_cell_position(g, idx, v3(j, j, 1.0 - j));
        CHECK(grid_cell(g, p, &l) == idx);
        CHECK(l == 0);
      }
    }
    // level-1 cells outside the level-0 box round-trip too (inner ones are level 0)
    for (int64_t idx = n0; idx < 2 * n0; ++idx) {
      const V3 p = grid_cell_position(g, idx, v3(0.5, 0.5, 0.5));
      int l = -7;
      const int64_t c = grid_cell(g, p, &l);
      CHECK(l == grid_level(g, p));
      if (l == 1) CHECK(c == idx);
      else CHECK(l == 0);
    }
  }
  // float: level-0 cell centres round-trip as well
  GridSpec<float> gf{};
  gf.levels = 1, gf.res = 8;
  for (int a = 0; a < 3; ++a) gf.center[a] = 0.25f, gf.half[a] = 1.5f, gf.inv_half[a] = float(1.0 / 1.5);
  grid_spec_derive(gf);
  for (int64_t idx = 0; idx < 512; ++idx) {
    const auto p = grid_cell_position(gf, idx, make_vec3(0.5f, 0.5f, 0.5f));
    CHECK(grid_cell(gf, p) == idx);
  }
}

// Bounds of the cell holding p at its level, along axis a.
static void cell_bounds(const GridSpec<double>& g, V3 p, int a, double* lo, double* hi) {
  const int l = grid_level(g, p);
  const double scale = double(int64_t(1) << l);
  const V3 q = grid_normalise(g, p);
  const double qa = a == 0 ? q.x : (a == 1 ? q.y : q.z);
  const int i = cell_coord_q(qa, 1.0 / scale, g.res);
  const double size = 2.0 * g.half[a] * scale / g.res;
  const double base = g.center[a] - g.half[a] * scale;
  *lo = base + i * size;
  *hi = base + (i + 1) * size;
}

TEST(cell_exit_consistency) {
  const auto g = make_grid(nullptr, 3, 8, v3(0.1, -0.2, 0.3), v3(1.0, 0.5, 2.0));
  Lcg rng(1);
  int tested = 0;
  for (int it = 0; it < 4000; ++it) {
    // a point inside the coarsest level and a random direction (some axis-aligned)
    const V3 p = v3(0.1 + rng.uniform(-3.9, 3.9), -0.2 + rng.uniform(-1.95, 1.95), 0.3 + rng.uniform(-7.8, 7.8));
    V3 d = v3(rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1));
    if (it % 7 == 0) d.y = 0;
    if (it % 11 == 0) d.x = d.z = 0;
    if (norm(d) < 1e-3) continue;
    d = d * (1.0 / norm(d));
    const double tp = rng.uniform(0.0, 3.0);
    const V3 o = p - d * tp;  // p = o + d tp
    const V3 inv_d = v3(1.0 / d.x, 1.0 / d.y, 1.0 / d.z);
    const int64_t cp = grid_cell(g, p);
    CHECK(cp >= 0);
    const double te = cell_exit_t(g, p, o, d, inv_d);
    CHECK(te > tp - 1e-12);
    const V3 e = o + d * te;
    // the exit point lies on the closed cell box and on one of its faces
    bool on_face = false;
    const double ec[3] = {e.x, e.y, e.z}, dc[3] = {d.x, d.y, d.z};
    for (int a = 0; a < 3; ++a) {
      double lo, hi;
      cell_bounds(g, p, a, &lo, &hi);
      const double tol = 1e-9 * (1 + std::fabs(hi) + std::fabs(lo));
      CHECK(ec[a] >= lo - tol && ec[a] <= hi + tol);
      if ((dc[a] > 0 && std::fabs(ec[a] - hi) <= tol) || (dc[a] < 0 && std::fabs(ec[a] - lo) <= tol)) on_face = true;
    }
    CHECK(on_face);
    // just before the exit: same cell; just past it: another cell (or outside)
    const double eps = 1e-7 * (1 + std::fabs(te));
    if (te - eps > tp) CHECK(grid_cell(g, o + d * (te - eps)) == cp);
    CHECK(grid_cell(g, o + d * (te + eps)) != cp);
    ++tested;
  }
  CHECK(tested > 3000);
}

TEST(occupied_exit_matches_the_two_lookups) {
  // grid_occupied_exit = grid_occupied + cell_exit_t, bit for bit, with and without bits,
  // inside every level and outside the grid
  const int levels = 3, res = 8;
  std::vector<uint8_t> bits(levels * res * res * res);
  Lcg rng(7);
  for (auto& b : bits) b = rng.uniform(0, 1) < 0.4 ? 1 : 0;
  for (const uint8_t* bp : {static_cast<const uint8_t*>(nullptr), static_cast<const uint8_t*>(bits.data())}) {
    const auto g = make_grid(bp, levels, res, v3(0.1, -0.2, 0.3), v3(1.0, 0.5, 2.0));
    int occupied = 0, outside = 0;
    for (int it = 0; it < 4000; ++it) {
      const V3 p = v3(0.1 + rng.uniform(-4.5, 4.5), -0.2 + rng.uniform(-2.3, 2.3), 0.3 + rng.uniform(-9.0, 9.0));
      V3 d = v3(rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1));
      if (it % 7 == 0) d.y = 0;
      if (norm(d) < 1e-3) continue;
      d = d * (1.0 / norm(d));
      const V3 o = p - d * rng.uniform(0.0, 3.0);
      const V3 inv_d = v3(1.0 / d.x, 1.0 / d.y, 1.0 / d.z);
      double te = -1;
      const bool occ = grid_occupied_exit(g, p, o, d, inv_d, &te);
      CHECK(occ == grid_occupied(g, p));
      CHECK(te == cell_exit_t(g, p, o, d, inv_d));
      occupied += occ;
      outside += grid_cell(g, p) < 0;
    }
    CHECK(occupied > 500 && outside > 100);
  }
}

// ---------------------------------------------------------------- raymarch.h
struct MarchOut {
  std::vector<int64_t> counts, offsets, ray_indices;
  std::vector<double> t_starts, t_ends, positions, dirs;
  int64_t total = 0;
};

static MarchOut run_march(MarchArgs<double> a) {
  MarchOut m;
  m.counts.assign(a.n_rays, -1);
  a.counts = m.counts.data();
  for (int64_t r = 0; r < a.n_rays; ++r) MarchRay<double, false>{a}(r);
  m.offsets.resize(a.n_rays);
  for (int64_t r = 0; r < a.n_rays; ++r) {
    m.offsets[r] = m.total;
    m.total += m.counts[r];
  }
  const double nan = std::nan("");
  m.ray_indices.assign(m.total, -1);
  m.t_starts.assign(m.total, nan);
  m.t_ends.assign(m.total, nan);
  m.positions.assign(3 * m.total, nan);
  m.dirs.assign(3 * m.total, nan);
  a.offsets = m.offsets.data();
  a.ray_indices = m.ray_indices.data();
  a.t_starts = m.t_starts.data();
  a.t_ends = m.t_ends.data();
  a.positions = m.positions.data();
  a.dirs = m.dirs.data();
  a.counts = nullptr;
  for (int64_t r = 0; r < a.n_rays; ++r) MarchRay<double, true>{a}(r);
  return m;
}

// Brute-force reference: every candidate sample, one occupancy lookup each (no skipping).
static std::vector<std::pair<double, double>> march_reference(const MarchArgs<double>& a, int64_t r) {
  std::vector<std::pair<double, double>> out;
  const double* row = a.warp_table ? a.warp_table + 12 * (a.warp_index ? a.warp_index[r] : 0) : nullptr;
  V3 o, d;
  double len, near, far;
  warp_ray(row, load3(a.rays_o + 3 * r), load3(a.rays_d + 3 * r), &o, &d, &len);
  if (!ray_aabb(o, d, a.box, &near, &far)) return out;
  near = std::max(near, a.near_plane * len);
  far = std::min(far, a.far_plane * len);
  const double u = a.jitter ? a.jitter[r] : 0.0;
  if (a.cone_angle <= 0) {
    for (int64_t k = 0; k < a.max_steps; ++k) {
      const double t0 = near + (k + u) * a.step, t1 = near + (k + 1 + u) * a.step, mid = 0.5 * (t0 + t1);
      if (!(mid < far)) break;
      if (grid_occupied(a.grid, o + d * mid)) out.push_back({t0 / len, t1 / len});
      if (a.max_samples > 0 && (int64_t)out.size() >= a.max_samples) break;
    }
  }
  return out;
}

static MarchArgs<double> march_args(const GridSpec<double>& g, int64_t n, const double* o, const double* d) {
  MarchArgs<double> a{};
  a.n_rays = n;
  a.rays_o = o;
  a.rays_d = d;
  a.grid = g;
  for (int k = 0; k < 3; ++k) {
    const double s = double(int64_t(1) << (g.levels - 1));
    a.box[k] = g.center[k] - g.half[k] * s;
    a.box[k + 3] = g.center[k] + g.half[k] * s;
  }
  a.near_plane = 0;
  a.far_plane = 1e10;
  a.step = 0.1;
  a.cone_angle = 0;
  a.max_step = 1;
  a.max_samples = 0;
  a.max_steps = 100000;
  return a;
}

static void check_march_invariants(const MarchArgs<double>& a, const MarchOut& m) {
  for (int64_t r = 0; r < a.n_rays; ++r) {
    const double* row = a.warp_table ? a.warp_table + 12 * (a.warp_index ? a.warp_index[r] : 0) : nullptr;
    const V3 ow = load3(a.rays_o + 3 * r), dw = load3(a.rays_d + 3 * r);
    for (int64_t k = 0; k < m.counts[r]; ++k) {
      const int64_t i = m.offsets[r] + k;
      CHECK(m.ray_indices[i] == r);
      CHECK(m.t_ends[i] > m.t_starts[i]);
      if (k > 0) CHECK(m.t_starts[i] >= m.t_ends[i - 1] - 1e-12);  // ordered, no overlap
      const V3 p = load3(m.positions.data() + 3 * i);
      CHECK(grid_occupied(a.grid, p));  // midpoints lie in occupied cells
      CHECK_NEAR(norm(load3(m.dirs.data() + 3 * i)), 1.0, 1e-12);
      // the canonical midpoint is the warped world midpoint (t is in world units)
      const V3 xw = ow + dw * (0.5 * (m.t_starts[i] + m.t_ends[i]));
      V3 xc = xw;
      if (row) {
        const V3 ax = matvec3(row, xw);
        xc = v3(ax.x + row[9], ax.y + row[10], ax.z + row[11]);
      }
      CHECK_NEAR(xc.x, p.x, 1e-9);
      CHECK_NEAR(xc.y, p.y, 1e-9);
      CHECK_NEAR(xc.z, p.z, 1e-9);
    }
  }
}

TEST(march_hand_made_grid) {
  // One level, res 4, box [-1, 1]^3. Occupied: the cells with iy = iz = 2 and ix in {1, 3},
  // i.e. x in [-0.5, 0) and [0.5, 1) for y, z in [0, 0.5).
  const int res = 4;
  std::vector<uint8_t> bits(res * res * res, 0);
  bits[(1 * res + 2) * res + 2] = 1;
  bits[(3 * res + 2) * res + 2] = 1;
  const auto g = make_grid(bits.data(), 1, res, v3(0, 0, 0), v3(1, 1, 1));
  // ray 0: along +x through the occupied row; ray 1: along -x (same cells, reversed);
  // ray 2: misses the occupied row (y < 0); ray 3: misses the box; ray 4: world direction
  // of length 2 (t in world units halves)
  const double o[15] = {-2, 0.1, 0.1, 2, 0.1, 0.1, -2, -0.1, 0.1, -2, 3, 0, -2, 0.1, 0.1};
  const double d[15] = {1, 0, 0, -1, 0, 0, 1, 0, 0, 1, 0, 0, 2, 0, 0};
  auto a = march_args(g, 5, o, d);
  const MarchOut m = run_march(a);
  // ray 0: midpoints x = -0.95 + 0.1 k; occupied for k = 5..9 and 15..19
  CHECK(m.counts[0] == 10);
  CHECK(m.counts[1] == 10);
  CHECK(m.counts[2] == 0);
  CHECK(m.counts[3] == 0);
  CHECK(m.counts[4] == 10);
  CHECK(m.total == 30);
  if (m.counts[0] == 10) {
    const int64_t i0 = m.offsets[0];
    CHECK_NEAR(m.t_starts[i0], 1.5, 1e-12);  // first occupied sample: t in [1.5, 1.6]
    CHECK_NEAR(m.t_ends[i0], 1.6, 1e-12);
    CHECK_NEAR(m.positions[3 * i0], -0.45, 1e-12);
    CHECK_NEAR(m.t_starts[i0 + 5], 2.5, 1e-12);
    CHECK_NEAR(m.t_ends[i0 + 9], 3.0, 1e-12);
  }
  if (m.counts[4] == 10) {
    const int64_t i4 = m.offsets[4];
    CHECK_NEAR(m.t_starts[i4], 0.75, 1e-12);
    CHECK_NEAR(m.t_ends[i4], 0.8, 1e-12);
  }
  check_march_invariants(a, m);
  // max_samples caps each ray; the far plane (world units) cuts ray 0 after the first row
  a.max_samples = 3;
  const MarchOut capped = run_march(a);
  CHECK(capped.counts[0] == 3 && capped.counts[1] == 3 && capped.counts[4] == 3);
  a.max_samples = 0;
  a.far_plane = 2.05;
  const MarchOut cut = run_march(a);
  CHECK(cut.counts[0] == 5);
}

TEST(march_matches_brute_force) {
  // Random occupancy on a 2-level grid, random rays, jitter and a warp table (identity
  // for half the rays, a scaled rotation for the rest); compare with per-sample lookups.
  const int res = 8, levels = 2;
  std::vector<uint8_t> bits(levels * res * res * res);
  Lcg rng(7);
  for (auto& b : bits) b = rng.uniform() < 0.3 ? 1 : 0;
  const auto g = make_grid(bits.data(), levels, res, v3(0.05, 0.0, -0.1), v3(0.6, 0.7, 0.5));
  const int n = 64;
  std::vector<double> o(3 * n), d(3 * n), jit(n);
  std::vector<int64_t> widx(n);
  for (int r = 0; r < n; ++r) {
    for (int k = 0; k < 3; ++k) o[3 * r + k] = rng.uniform(-3, 3), d[3 * r + k] = rng.uniform(-1, 1);
    if (r % 5 == 0) d[3 * r + 1] = 0;  // axis-parallel components
    jit[r] = rng.uniform();
    widx[r] = r % 2;
  }
  const double c = std::cos(0.4), s = std::sin(0.4), sc = 1.3;
  const double table[24] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0,
                            sc * c, -sc * s, 0, sc * s, sc * c, 0, 0, 0, sc, 0.1, -0.2, 0.05};
  auto a = march_args(g, n, o.data(), d.data());
  a.warp_table = table;
  a.warp_index = widx.data();
  a.jitter = jit.data();
  a.step = 0.013;
  a.near_plane = 0.2;
  const MarchOut m = run_march(a);
  int64_t total_ref = 0;
  for (int r = 0; r < n; ++r) {
    const auto ref = march_reference(a, r);
    total_ref += (int64_t)ref.size();
    CHECK(m.counts[r] == (int64_t)ref.size());
    if (m.counts[r] != (int64_t)ref.size()) continue;
    for (size_t k = 0; k < ref.size(); ++k) {
      CHECK_NEAR(m.t_starts[m.offsets[r] + k], ref[k].first, 1e-12);
      CHECK_NEAR(m.t_ends[m.offsets[r] + k], ref[k].second, 1e-12);
    }
  }
  CHECK(total_ref > 100);  // the test exercises something
  CHECK(m.total == total_ref);
  check_march_invariants(a, m);
  // cone tracing: count pass equals fill pass, invariants hold
  a.cone_angle = 0.02;
  a.max_step = 0.05;
  const MarchOut mc = run_march(a);
  int64_t filled = 0;
  for (auto ri : mc.ray_indices) filled += ri >= 0;
  CHECK(filled == mc.total);
  check_march_invariants(a, mc);
}

TEST(march_coarse_blocks_give_the_same_samples) {
  // A 2-level 16^3 grid: a ball of occupied cells and a few lone cells on level 0 (so most
  // 4^3 blocks are empty, some hold one cell, some inside the ball are full), random cells on
  // level 1. Marching with the level-0 block summary (0 empty, 1 mixed, 2 full) must emit
  // exactly the samples of marching without it.
  const int res = 16, levels = 2, sh = 2, cr = res >> sh;
  std::vector<uint8_t> bits(levels * res * res * res, 0), coarse(cr * cr * cr, 0), full(cr * cr * cr, 1);
  Lcg rng(11);
  for (int x = 0; x < res; ++x)
    for (int y = 0; y < res; ++y)
      for (int z = 0; z < res; ++z) {
        const double dx = x - 9.5, dy = y - 6.5, dz = z - 8.0;
        const int64_t i = ((int64_t)x * res + y) * res + z;
        bits[i] = (dx * dx + dy * dy + dz * dz < 20.0) || rng.uniform() < 0.004;
        bits[res * res * res + i] = rng.uniform() < 0.05;
        const int b = ((x >> sh) * cr + (y >> sh)) * cr + (z >> sh);
        if (bits[i]) coarse[b] = 1;
        else full[b] = 0;
      }
  int empty_blocks = 0, full_blocks = 0;
  for (int b = 0; b < cr * cr * cr; ++b) {
    coarse[b] = uint8_t(coarse[b] + full[b]);
    empty_blocks += coarse[b] == 0;
    full_blocks += coarse[b] == 2;
  }
  CHECK(empty_blocks > 20 && empty_blocks < cr * cr * cr);
  CHECK(full_blocks >= 1);
  auto g = make_grid(bits.data(), levels, res, v3(0.05, 0.0, -0.1), v3(0.6, 0.7, 0.5));
  const int n = 400;
  std::vector<double> o(3 * n), d(3 * n), jit(n);
  for (int r = 0; r < n; ++r) {
    // from a sphere of radius 3 towards points near the ball, some axis-parallel
    V3 from = v3(rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1));
    from = from * (3.0 / norm(from));
    const V3 to = v3(rng.uniform(-0.5, 0.5), rng.uniform(-0.6, 0.6), rng.uniform(-0.5, 0.5));
    V3 dir = to - from;
    if (r % 9 == 0) dir.x = dir.z = 0, from.x = to.x, from.z = to.z;
    dir = dir * (1.0 / norm(dir));
    o[3 * r] = from.x, o[3 * r + 1] = from.y, o[3 * r + 2] = from.z;
    d[3 * r] = dir.x, d[3 * r + 1] = dir.y, d[3 * r + 2] = dir.z;
    jit[r] = rng.uniform();
  }
  for (const int max_samples : {0, 5}) {
    auto a = march_args(g, n, o.data(), d.data());
    a.jitter = jit.data();
    a.step = 0.011;
    a.max_samples = max_samples;
    const MarchOut plain = run_march(a);
    a.grid.coarse = coarse.data();
    a.grid.coarse_shift = sh;
    const MarchOut fast = run_march(a);
    CHECK(plain.total > 1000);
    CHECK(fast.counts == plain.counts);
    CHECK(fast.ray_indices == plain.ray_indices);
    CHECK(fast.t_starts == plain.t_starts);
    CHECK(fast.t_ends == plain.t_ends);
    CHECK(fast.positions == plain.positions);
    check_march_invariants(a, fast);
  }
}

// ---------------------------------------------------------------- composite.h
struct CompBuf {
  std::vector<int64_t> packed;
  std::vector<double> sig, rgb, ts, te, w, tr, orgb, od, oo, grgb, gd, go, gsig, grgbs;
};

static CompositeArgs<double> comp_args(CompBuf& b, double thresh) {
  const int64_t n_rays = (int64_t)b.packed.size() / 2, S = (int64_t)b.sig.size();
  b.w.assign(S, -1);
  b.tr.assign(S, -1);
  b.orgb.assign(3 * n_rays, -1);
  b.od.assign(n_rays, -1);
  b.oo.assign(n_rays, -1);
  b.gsig.assign(S, -1);
  b.grgbs.assign(3 * S, -1);
  CompositeArgs<double> a{};
  a.n_rays = n_rays;
  a.packed_info = b.packed.data();
  a.sigmas = b.sig.data();
  a.rgbs = b.rgb.data();
  a.t_starts = b.ts.data();
  a.t_ends = b.te.data();
  a.t_thresh = thresh;
  a.weights = b.w.data();
  a.trans = b.tr.data();
  a.out_rgb = b.orgb.data();
  a.out_depth = b.od.data();
  a.out_opacity = b.oo.data();
  a.grad_rgb = b.grgb.data();
  a.grad_depth = b.gd.data();
  a.grad_opacity = b.go.data();
  a.grad_sigmas = b.gsig.data();
  a.grad_rgbs = b.grgbs.data();
  return a;
}

static void composite_all(const CompositeArgs<double>& a) {
  for (int64_t r = 0; r < a.n_rays; ++r) CompositeForward<double>{a}(r);
}

static CompBuf three_sample_ray() {
  CompBuf b;
  // ray 0: three samples; ray 1: no samples
  b.packed = {0, 3, 3, 0};
  b.sig = {1.0, 2.0, 0.5};
  b.ts = {0.0, 0.5, 1.0};
  b.te = {0.5, 1.0, 2.0};
  b.rgb = {0.9, 0.1, 0.2, 0.3, 0.8, 0.4, 0.5, 0.6, 0.7};
  b.grgb = {0.7, -0.3, 1.1, 0.2, 0.2, 0.2};
  b.gd = {0.4, 1.0};
  b.go = {-0.6, 1.0};
  return b;
}

TEST(composite_forward_hand_computed) {
  CompBuf b = three_sample_ray();
  auto a = comp_args(b, 1e-4);
  composite_all(a);
  // tau = sigma * delta = 0.5, 1.0, 0.5
  const double T0 = 1.0, T1 = std::exp(-0.5), T2 = std::exp(-1.5);
  const double w0 = T0 * (1 - std::exp(-0.5)), w1 = T1 * (1 - std::exp(-1.0)), w2 = T2 * (1 - std::exp(-0.5));
  CHECK_NEAR(b.tr[0], T0, 1e-15);
  CHECK_NEAR(b.tr[1], T1, 1e-15);
  CHECK_NEAR(b.tr[2], T2, 1e-15);
  CHECK_NEAR(b.w[0], w0, 1e-15);
  CHECK_NEAR(b.w[1], w1, 1e-15);
  CHECK_NEAR(b.w[2], w2, 1e-15);
  CHECK_NEAR(b.oo[0], w0 + w1 + w2, 1e-15);
  CHECK_NEAR(b.oo[0], 1 - std::exp(-2.0), 1e-15);  // opacity = 1 - T_end
  CHECK_NEAR(b.od[0], w0 * 0.25 + w1 * 0.75 + w2 * 1.5, 1e-15);
  for (int c = 0; c < 3; ++c) CHECK_NEAR(b.orgb[c], w0 * b.rgb[c] + w1 * b.rgb[3 + c] + w2 * b.rgb[6 + c], 1e-15);
  // the empty ray composites to zero
  CHECK(b.orgb[3] == 0 && b.orgb[4] == 0 && b.orgb[5] == 0 && b.od[1] == 0 && b.oo[1] == 0);
  // early termination: T2 = 0.223 < 0.3, so sample 2 gets weight and transmittance 0
  CompBuf e = three_sample_ray();
  auto ae = comp_args(e, 0.3);
  composite_all(ae);
  CHECK_NEAR(e.w[1], w1, 1e-15);
  CHECK(e.w[2] == 0 && e.tr[2] == 0);
  CHECK_NEAR(e.oo[0], w0 + w1, 1e-15);
  // backward of the terminated sample is zero
  for (int64_t r = 0; r < ae.n_rays; ++r) CompositeBackward<double>{ae}(r);
  CHECK(e.gsig[2] == 0 && e.grgbs[6] == 0 && e.grgbs[7] == 0 && e.grgbs[8] == 0);
}

static double comp_loss(CompBuf b, double thresh) {
  auto a = comp_args(b, thresh);
  composite_all(a);
  double L = 0;
  for (int64_t r = 0; r < a.n_rays; ++r) {
    for (int c = 0; c < 3; ++c) L += b.grgb[3 * r + c] * b.orgb[3 * r + c];
    L += b.gd[r] * b.od[r] + b.go[r] * b.oo[r];
  }
  return L;
}

TEST(composite_backward_hand_and_finite_difference) {
  const double thresh = 0.0;  // no termination: the loss is smooth
  CompBuf b = three_sample_ray();
  auto a = comp_args(b, thresh);
  composite_all(a);
  for (int64_t r = 0; r < a.n_rays; ++r) CompositeBackward<double>{a}(r);
  // dL/dc_k = w_k g_rgb
  for (int k = 0; k < 3; ++k)
    for (int c = 0; c < 3; ++c) CHECK_NEAR(b.grgbs[3 * k + c], b.w[k] * b.grgb[c], 1e-15);
  // dL/dsigma_2 by hand: delta_2 * T_2 e^{-tau_2} v_2 (nothing follows the last sample)
  const double v2 = 0.7 * 0.5 - 0.3 * 0.6 + 1.1 * 0.7 + 0.4 * 1.5 - 0.6;
  CHECK_NEAR(b.gsig[2], 1.0 * std::exp(-1.5) * std::exp(-0.5) * v2, 1e-14);
  // central differences in double
  const double h = 1e-6;
  for (int k = 0; k < 3; ++k) {
    CompBuf p = three_sample_ray(), m = three_sample_ray();
    p.sig[k] += h;
    m.sig[k] -= h;
    const double fd = (comp_loss(p, thresh) - comp_loss(m, thresh)) / (2 * h);
    CHECK_NEAR(b.gsig[k], fd, 1e-8);
    for (int c = 0; c < 3; ++c) {
      CompBuf pc = three_sample_ray(), mc = three_sample_ray();
      pc.rgb[3 * k + c] += h;
      mc.rgb[3 * k + c] -= h;
      const double fdc = (comp_loss(pc, thresh) - comp_loss(mc, thresh)) / (2 * h);
      CHECK_NEAR(b.grgbs[3 * k + c], fdc, 1e-8);
    }
  }
}

// ---------------------------------------------------------------- occgrid.h
TEST(occgrid_positions_ema_threshold) {
  const auto g = make_grid(nullptr, 2, 4, v3(0, 0, 0), v3(1, 1, 1));
  const int64_t n = 2 * 64;
  std::vector<double> pos(3 * n), dens(n, 0.5), newd(n);
  std::vector<uint8_t> bits(n, 9);
  for (int64_t i = 0; i < n; ++i) newd[i] = (i % 3) * 0.4;  // 0, 0.4, 0.8
  OccGridArgs<double> a{};
  a.n = n;
  a.grid = g;
  a.positions = pos.data();
  a.density = dens.data();
  a.new_density = newd.data();
  a.decay = 0.9;
  a.threshold = 0.42;
  a.bits = bits.data();
  for (int64_t i = 0; i < n; ++i) OccCellPositions<double>{a}(i);
  for (int64_t i = 0; i < 64; ++i) CHECK(grid_cell(g, load3(pos.data() + 3 * i)) == i);
  for (int64_t i = 0; i < n; ++i) OccEmaUpdate<double>{a}(i);
  for (int64_t i = 0; i < n; ++i) CHECK_NEAR(dens[i], std::max(0.45, newd[i]), 1e-15);
  for (int64_t i = 0; i < n; ++i) OccThreshold<double>{a}(i);
  for (int64_t i = 0; i < n; ++i) CHECK(bits[i] == (dens[i] > 0.42 ? 1 : 0));
}

// ---------------------------------------------------------------- common.h
TEST(host_atomic_add_two_threads) {
  float f = 0.f;
  double dd = 0.0;
  int64_t k = 0;
  const int iters = 200000;
  auto work = [&] {
    for (int i = 0; i < iters; ++i) {
      atomic_add(&f, 1.0f);
      atomic_add(&dd, 0.5);
      atomic_add(&k, int64_t(3));
    }
  };
  std::thread t1(work), t2(work);
  t1.join();
  t2.join();
  CHECK(f == float(2 * iters));  // exact: integers below 2^24
  CHECK(dd == 0.5 * 2 * iters);
  CHECK(k == int64_t(3) * 2 * iters);
}

// ---------------------------------------------------------------- hashgrid.h
TEST(hashgrid_dense_level_is_trilinear) {
  // One dense level, R = 4, table filled with a linear function of the vertex: trilinear
  // interpolation reproduces it exactly, inside the box and clamped outside.
  HashGridArgs<double> a{};
  const int R = 4, F = 2;
  const int64_t rows = (R + 1) * (R + 1) * (R + 1);
  std::vector<double> params(rows * F);
  for (int cz = 0; cz <= R; ++cz)
    for (int cy = 0; cy <= R; ++cy)
      for (int cx = 0; cx <= R; ++cx) {
        const int64_t idx = cx + (R + 1) * (cy + (R + 1) * cz);
        params[idx * F + 0] = 1.0 + 2.0 * cx - 0.5 * cy + 0.25 * cz;
        params[idx * F + 1] = -cx + 3.0 * cz;
      }
  std::vector<double> x = {0.1, 0.2, 0.3, -0.9, 0.95, 0.0, 2.0, -3.0, 0.5};  // last one outside
  const int64_t n = 3;
  std::vector<double> out(n * F), gout(n * F, 1.0), gx(3 * n), gparams(rows * F, 0.0);
  a.n = n;
  a.n_levels = 1;
  a.n_features = F;
  a.level_offset[0] = 0;
  a.level_res[0] = R;
  a.level_dense[0] = 1;
  a.hash_mask = 0xffffffffu;
  for (int k = 0; k < 3; ++k) a.aabb_min[k] = -1.0, a.inv_extent[k] = 0.5;
  a.x = x.data();
  a.params = params.data();
  a.out = out.data();
  a.grad_out = gout.data();
  a.grad_params = gparams.data();
  a.grad_x = gx.data();
  for (int64_t i = 0; i < n; ++i) HashGridForward<double>{a}(i);
  for (int64_t p = 0; p < n; ++p) {
    double u[3];
    for (int k = 0; k < 3; ++k) u[k] = std::min(1.0, std::max(0.0, (x[3 * p + k] + 1.0) * 0.5)) * R;
    CHECK_NEAR(out[p * F + 0], 1.0 + 2.0 * u[0] - 0.5 * u[1] + 0.25 * u[2], 1e-12);
    CHECK_NEAR(out[p * F + 1], -u[0] + 3.0 * u[2], 1e-12);
  }
  // input gradient of sum(out): d/dx = (2 - 1, -0.5, 0.25 + 3) * R * inv_extent inside
  for (int64_t p = 0; p < n; ++p) HashGridBackwardInput<double>{a}(p);
  CHECK_NEAR(gx[0], 1.0 * R * 0.5, 1e-12);
  CHECK_NEAR(gx[1], -0.5 * R * 0.5, 1e-12);
  CHECK_NEAR(gx[2], 3.25 * R * 0.5, 1e-12);
  CHECK(gx[6] == 0 && gx[7] == 0);  // clamped axes pass no gradient
  CHECK_NEAR(gx[8], 3.25 * R * 0.5, 1e-12);
  // parameter gradient: trilinear weights of each point sum to one per feature
  for (int64_t i = 0; i < n; ++i) HashGridBackwardParams<double, true>{a}(i);
  double s = 0;
  for (double v : gparams) s += v;
  CHECK_NEAR(s, double(n * F), 1e-12);
}

// ---------------------------------------------------------------- encoding.h
TEST(sh_encoding_addition_theorem) {
  // sum_m Y_lm(d)^2 = (2l + 1) / (4 pi) for every unit direction.
  Lcg rng(3);
  for (int it = 0; it < 50; ++it) {
    V3 d = v3(rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1));
    d = d * (1.0 / norm(d));
    double out[16];
    sh_encode(4, d.x, d.y, d.z, out);
    for (int l = 0; l < 4; ++l) {
      double s = 0;
      for (int m = l * l; m < (l + 1) * (l + 1); ++m) s += out[m] * out[m];
      CHECK_NEAR(s, (2 * l + 1) / (4 * M_PI), 1e-12);
    }
  }
}

// ---------------------------------------------------------------- mlp.h
namespace {
struct TinyMlp {
  // in 3 -> 5 (relu) -> 2 (sigmoid), padded to 16 wide
  static constexpr int kIn = 3, kHid = 5, kOut = 2, kP = 16;
  double W0[kHid][kIn], b0[kHid], W1[kOut][kHid], b1[kOut];
  std::vector<double> pf, pb;
  MlpArgs<double> args(int64_t n, const double* x, double* y, const double* gy, double* gx, double* gp) {
    pf.assign(2 * (kP * kP + kP), 0.0);
    pb.assign(2 * kP * kP, 0.0);
    for (int j = 0; j < kHid; ++j) {
      for (int k = 0; k < kIn; ++k) pf[k * kP + j] = W0[j][k], pb[j * kP + k] = W0[j][k];
      pf[kP * kP + j] = b0[j];
    }
    const int64_t o1 = kP * kP + kP;
    for (int j = 0; j < kOut; ++j) {
      for (int k = 0; k < kHid; ++k) pf[o1 + k * kP + j] = W1[j][k], pb[kP * kP + j * kP + k] = W1[j][k];
      pf[o1 + kP * kP + j] = b1[j];
    }
    MlpArgs<double> a{};
    a.n_rows = n;
    a.n_layers = 2;
    a.in_dim = kIn;
    a.out_dim = kOut;
    a.out_act = kMlpActSigmoid;
    a.block_rows = 8;
    a.dims[0] = a.dims[1] = a.dims[2] = kP;
    a.fwd_off[0] = 0;
    a.fwd_off[1] = o1;
    a.bwd_off[0] = 0;
    a.bwd_off[1] = kP * kP;
    a.n_params = (int64_t)pf.size();
    a.x = x;
    a.pf = pf.data();
    a.pb = pb.data();
    a.y = y;
    a.gy = gy;
    a.gx = gx;
    a.gparams = gp;
    return a;
  }
  void reference(const double* x, double* y) const {
    double h[kHid];
    for (int j = 0; j < kHid; ++j) {
      double z = b0[j];
      for (int k = 0; k < kIn; ++k) z += W0[j][k] * x[k];
      h[j] = z > 0 ? z : 0;
    }
    for (int j = 0; j < kOut; ++j) {
      double z = b1[j];
      for (int k = 0; k < kHid; ++k) z += W1[j][k] * h[k];
      y[j] = 1.0 / (1.0 + std::exp(-z));
    }
  }
};
}  // namespace

TEST(mlp_block_forward_backward) {
  TinyMlp net;
  Lcg rng(11);
  for (auto& r : net.W0) for (auto& v : r) v = rng.uniform(-1, 1);
  for (auto& v : net.b0) v = rng.uniform(-0.5, 0.5);
  for (auto& r : net.W1) for (auto& v : r) v = rng.uniform(-1, 1);
  for (auto& v : net.b1) v = rng.uniform(-0.5, 0.5);
  const int64_t n = 11;  // one full block of 8 and a tail of 3
  std::vector<double> x(3 * n), y(2 * n, -1), gy(2 * n), gx(3 * n, -1);
  for (auto& v : x) v = rng.uniform(-1, 1);
  for (auto& v : gy) v = rng.uniform(-1, 1);
  std::vector<double> gp;
  auto a = net.args(n, x.data(), y.data(), gy.data(), gx.data(), nullptr);
  gp.assign(a.n_params, 0.0);
  a.gparams = gp.data();
  MlpBlock<double, 4, 16, false> blk{a};
  std::vector<double> scratch(mlp_scratch_size(a, a.block_rows));
  for (int64_t b = 0; b < 2; ++b) blk.forward(b, scratch.data());
  for (int64_t r = 0; r < n; ++r) {
    double want[2];
    net.reference(&x[3 * r], want);
    CHECK_NEAR(y[2 * r], want[0], 1e-14);
    CHECK_NEAR(y[2 * r + 1], want[1], 1e-14);
  }
  for (int64_t b = 0; b < 2; ++b) blk.backward(b, gp.data(), scratch.data());
  auto loss = [&](const TinyMlp& m, const std::vector<double>& xs) {
    double L = 0, yy[2];
    for (int64_t r = 0; r < n; ++r) {
      m.reference(&xs[3 * r], yy);
      L += gy[2 * r] * yy[0] + gy[2 * r + 1] * yy[1];
    }
    return L;
  };
  const double h = 1e-6;
  for (int64_t i = 0; i < 3 * n; ++i) {
    auto xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    CHECK_NEAR(gx[i], (loss(net, xp) - loss(net, xm)) / (2 * h), 1e-8);
  }
  // a few weight and bias gradients (pf layout: Wt_l[k][j], then b_l[j])
  for (int j = 0; j < TinyMlp::kHid; ++j) {
    for (int k = 0; k < TinyMlp::kIn; ++k) {
      TinyMlp p = net, m = net;
      p.W0[j][k] += h;
      m.W0[j][k] -= h;
      CHECK_NEAR(gp[k * 16 + j], (loss(p, x) - loss(m, x)) / (2 * h), 1e-8);
    }
  }
  for (int j = 0; j < TinyMlp::kOut; ++j) {
    TinyMlp p = net, m = net;
    p.b1[j] += h;
    m.b1[j] -= h;
    CHECK_NEAR(gp[(16 * 16 + 16) + 16 * 16 + j], (loss(p, x) - loss(m, x)) / (2 * h), 1e-8);
  }
}

// ---------------------------------------------------------------- main
int main() {
  for (const auto& t : registry()) {
    g_test = t.name;
    const int before = g_failures;
    t.fn();
    std::printf("%-48s %s\n", t.name, g_failures == before ? "ok" : "FAILED");
  }
  std::printf("%d checks, %d failures, %zu tests\n", g_checks, g_failures, registry().size());
  return g_failures == 0 ? 0 : 1;
}
