// Preconditions that cost a device sync (or a sort) to verify, checked in a debug mode.
//
// Normal mode: index bounds are checked on the CPU (reading a CPU tensor is no sync) and
// not at all on CUDA, so a kernel call never waits for the device. Debug mode (the
// environment variable PNERF_DEBUG_CHECKS=1 when the extension loads, or
// pnerf_fast._C.set_debug_checks(True)) checks on every device: index bounds, index
// uniqueness where a kernel writes through the indices, and packed_info segments.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "pnerf/env.h"
#include "pnerf/torch_utils.h"

namespace pnerf {

bool env_switch(const char* name, bool default_on) {
  const char* v = std::getenv(name);
  if (v == nullptr) return default_on;
  if (std::strcmp(v, "1") == 0 || std::strcmp(v, "true") == 0 || std::strcmp(v, "yes") == 0) return true;
  if (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0 || std::strcmp(v, "false") == 0) return false;
  return default_on;
}

namespace {
std::atomic<bool>& debug_flag() {
  static std::atomic<bool> flag(env_switch("PNERF_DEBUG_CHECKS", false));
  return flag;
}
}  // namespace

bool debug_checks() { return debug_flag().load(std::memory_order_relaxed); }
void set_debug_checks(bool on) { debug_flag().store(on, std::memory_order_relaxed); }

void check_index_range(const at::Tensor& idx, const char* name, int64_t hi) {
  if (idx.numel() == 0 || (idx.is_cuda() && !debug_checks())) return;
  const auto mn = idx.min().item<int64_t>(), mx = idx.max().item<int64_t>();
  TORCH_CHECK(mn >= 0 && mx < hi, "pnerf: argument '", name, "' must be in [0, ", hi, "), got [", mn, ", ", mx, "]");
}

void check_unique(const at::Tensor& idx, const char* name) {
  if (idx.numel() < 2 || !debug_checks()) return;
  const auto sorted = std::get<0>(idx.sort());
  const int64_t n = sorted.numel();
  const bool dup = sorted.slice(0, 1, n).eq(sorted.slice(0, 0, n - 1)).any().item<bool>();
  TORCH_CHECK(!dup, "pnerf: argument '", name, "' must hold unique indices (kernels write through them in parallel)");
}

void check_packed_info(const at::Tensor& packed_info, int64_t n_samples) {
  if (packed_info.size(0) == 0 || (packed_info.is_cuda() && !debug_checks())) return;
  const auto start = packed_info.select(1, 0), count = packed_info.select(1, 1);
  const bool ok = start.ge(0).all().item<bool>() && count.ge(0).all().item<bool>() &&
                  (start + count).le(n_samples).all().item<bool>();
  TORCH_CHECK(ok, "pnerf: argument 'packed_info' must hold (start >= 0, count >= 0) rows with start + count <= ",
              n_samples, " (the number of samples)");
  if (!debug_checks()) return;
  // Segments must not overlap: the backward writes each sample's gradient from its ray.
  const auto nonempty = count.gt(0);  // empty segments may share a start with their neighbour
  const auto s0 = start.masked_select(nonempty), c0 = count.masked_select(nonempty);
  const auto order = std::get<1>(s0.sort());
  const auto s = s0.index_select(0, order), c = c0.index_select(0, order);
  const int64_t n = s.numel();
  const bool disjoint = n < 2 || (s.slice(0, 0, n - 1) + c.slice(0, 0, n - 1)).le(s.slice(0, 1, n)).all().item<bool>();
  TORCH_CHECK(disjoint, "pnerf: argument 'packed_info' has overlapping (start, count) segments");
}

void bind_checks(pybind11::module_& m) {
  m.def("debug_checks", &debug_checks, "Whether the debug-mode precondition checks are on");
  m.def("set_debug_checks", &set_debug_checks, "Turn the debug-mode precondition checks on or off", pybind11::arg("on"));
}

}  // namespace pnerf
