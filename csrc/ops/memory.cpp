// Output memory for the kernels' large per-sample tensors (torch_utils.h: empty_output).
//
// A march writes 40 bytes per sample (ray index, t_start, t_end, position, direction):
// ~150 MB for the 3.9 M samples of the kernel benchmark, ~20 MB per segment of a 256²
// frame. at::empty gets such blocks from fresh mmaps, and on this VM first touching them
// cost ~38,000 page faults and 50-80 ms of system time per 150 MB. Placed on 2 MiB-aligned
// memory advised MADV_HUGEPAGE, the same block takes ~600 faults (11-18 ms): the kernel
// backs it with transparent huge pages where its THP mode allows (always or madvise);
// where it does not, the advice is ignored and the memory is ordinary pages. Each block is
// its own anonymous mapping, unmapped when the tensor's storage dies (at::from_blob with a
// deleter). Such a tensor cannot be resized in place (resize_, out= that must grow) and
// is not counted by torch's allocator statistics; nothing here resizes kernel outputs.
//
// Only CPU tensors of 2 MiB or more take this path. torch's THP_MEM_ALLOC_ENABLE=1 does
// the same for every allocation of the process, but must be set before torch's first large
// allocation; this one is local to our outputs. PNERF_HUGEPAGES=0 (read on first use) or
// _C.set_huge_page_outputs(False) turns it off (at::empty), for comparisons.
#include <atomic>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "pnerf/env.h"
#include "pnerf/torch_utils.h"

namespace pnerf {

namespace {
std::atomic<bool>& huge_flag() {
  static std::atomic<bool> flag(env_switch("PNERF_HUGEPAGES", true));
  return flag;
}
}  // namespace

bool huge_page_outputs() { return huge_flag().load(std::memory_order_relaxed); }
void set_huge_page_outputs(bool on) { huge_flag().store(on, std::memory_order_relaxed); }

namespace {
// The huge-page block of empty_output, or an undefined tensor where it does not apply. A
// fresh anonymous mapping reads as zeros (the kernel hands out zeroed pages on first
// touch), which zeroed_output relies on.
at::Tensor huge_page_block(at::IntArrayRef sizes, const at::TensorOptions& opt) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (opt.device().is_cpu() && huge_page_outputs()) {
    constexpr size_t kHuge = size_t(2) << 20;
    const size_t bytes = (size_t)c10::multiply_integers(sizes) * opt.dtype().itemsize();
    if (bytes >= kHuge) {
      // Its own mapping (not malloc's heap, whose ranges would keep the advice after this
      // tensor is gone): map one huge page more, keep the 2 MiB-aligned part.
      const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
      void* raw = mmap(nullptr, rounded + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (raw != MAP_FAILED) {
        const uintptr_t r = reinterpret_cast<uintptr_t>(raw);
        const uintptr_t a = (r + kHuge - 1) & ~(uintptr_t)(kHuge - 1);
        if (a > r) munmap(raw, a - r);                                     // the head before the boundary
        if (a + rounded < r + rounded + kHuge) munmap((void*)(a + rounded), r + kHuge - a);  // the tail
        void* p = reinterpret_cast<void*>(a);
        madvise(p, rounded, MADV_HUGEPAGE);  // advice only; refused, it leaves 4 KiB pages
        return at::from_blob(p, sizes, [rounded](void* q) { munmap(q, rounded); }, opt);
      }
    }
  }
#endif
  return at::Tensor();
}
}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& opt) {
  at::Tensor t = huge_page_block(sizes, opt);
  return t.defined() ? t : at::empty(sizes, opt);
}

at::Tensor zeroed_output(at::IntArrayRef sizes, const at::TensorOptions& opt) {
  at::Tensor t = huge_page_block(sizes, opt);
  return t.defined() ? t : at::zeros(sizes, opt);
}

void bind_memory(pybind11::module_& m) {
  m.def("huge_page_outputs", &huge_page_outputs,
        "Whether large CPU outputs (march samples) go on memory advised for transparent huge pages");
  m.def("set_huge_page_outputs", &set_huge_page_outputs,
        "Turn the huge-page advice for large CPU outputs on or off (same results; for benchmarks)",
        pybind11::arg("on"));
}

}  // namespace pnerf
