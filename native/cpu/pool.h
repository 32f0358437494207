// The process-wide thread pool the CPU passes run on, and the floating-point mode they run in.
//
// Note [shared pool]
// One pool serves every optimizer of the process (and the development addon's benchmark kernels):
// an optimizer asks for at most its `threads` parts per pass, and the pool grows to the largest
// number of helpers any optimizer asked for, never beyond, so thousands of optimizers, live or
// dropped, cost no thread each. A pass is cut into parts that the calling thread and the helpers
// claim one at a time; which thread runs which part never enters the result (Note [deterministic
// sums], core/plan.h); a pass is cut into kPartsPerThread parts per thread, so that a helper the
// system is slow to schedule, or preempts, holds up little. The pool runs one pass at a time: a pass that finds it busy (another JS
// thread's optimizer, from a worker_thread) runs all its parts on its own calling thread instead of
// waiting, so no pass ever waits for another and nothing can deadlock; results stay the same. The
// pool lives until the process exits (it is never destroyed, so no thread outlives what it uses).
// It is one per addon file: the development addon (native/dev), linked apart, has its own, so a
// benchmark that alternates the two meets the other's helper still spinning (for at most kSpin).
//
// Note [process-wide pool lifetime]
// The helpers run this library's code for as long as the process lives, so the library must stay
// mapped as long: Node unloads (dlclose) an addon that only worker threads loaded when the last of
// them exits, and a helper would then run unmapped code (a segfault at some later wake-up or thread
// start; worker.terminate() in a loop found it). The addons are linked with -z nodelete
// (CMakeLists.txt, binding.gyp), which makes dlclose leave them loaded.
//
// Note [fast wake-up]
// A helper that has run a part spins for kSpin (checking a counter, with the processor's pause
// hint) before it sleeps on its condition variable, and the calling thread spins as long for the
// helpers to finish: the three passes of a KOALA-M step follow each other within microseconds,
// and waking a sleeping thread costs about 15 to 20 us here, more than a 2-thread pass of 100k
// parameters takes. Beyond kSpin both sleep, so an idle pool costs no processor time.
//
// Note [pinned floating-point mode]
// A pass runs with the default SSE mode (MXCSR 0x1F80: round to nearest, no flush-to-zero, no
// denormals-are-zero, exceptions masked), whatever mode the caller's thread is in: the calling
// thread sets it around every pass and restores the caller's afterwards, and the helpers set it
// when they start. With FTZ or DAZ on, subnormal float32 values would read or round to zero, so
// results would depend on the caller (and on which thread ran which part). Other architectures
// run in the caller's mode.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

namespace koala {

// Sets the default floating-point mode for its lifetime (Note [pinned floating-point mode]).
class FpuModeGuard {
 public:
  FpuModeGuard();
  ~FpuModeGuard();
  FpuModeGuard(const FpuModeGuard&) = delete;
  FpuModeGuard& operator=(const FpuModeGuard&) = delete;

 private:
  unsigned int saved_;
};

class ThreadPool {
 public:
  // Helpers at most: one less than the largest `threads` option (lib/options.ts).
  static constexpr int kMaxHelpers = 255;
  // Parts a pass is cut into per thread, claimed one at a time (Note [shared pool]).
  static constexpr int kPartsPerThread = 4;

  // The process's pool (Note [shared pool]).
  static ThreadPool& shared();

  // Starts helpers until there are `helpers` (at most kMaxHelpers), or until the system refuses a
  // thread: a pass then runs its parts on the threads there are (the results are the same).
  void reserve(int helpers);
  int helpers() const { return count_.load(std::memory_order_acquire); }

  // Runs fn(part) for every part in [0, parts) on the calling thread and at most threads - 1
  // helpers, in the default floating-point mode, and returns when all have returned.
  template <class Fn>
  void run(int threads, int parts, const Fn& fn) {
    run_parts(threads, parts, Task{&call<Fn>, &fn});
  }

 private:
  struct Task {
    void (*call)(const void* fn, int part);
    const void* fn;
  };
  struct Helper;

  ThreadPool() = default;
  template <class Fn>
  static void call(const void* fn, int part) {
    (*static_cast<const Fn*>(fn))(part);
  }
  void run_parts(int threads, int parts, Task task);
  void claim_parts();  // runs unclaimed parts of the current pass until none is left
  void help();         // a helper's turn: joins the current pass if it is still open
  void helper_main(Helper& helper);

  std::mutex grow_mu_;
  std::array<std::unique_ptr<Helper>, kMaxHelpers> helpers_;
  std::atomic<int> count_{0};

  // The current pass; one at a time (busy_). state_ packs the pass's generation, whether it is
  // closed (its caller has run out of parts and waits) and how many helpers are in it: a helper
  // that wakes after the close stays out, so the caller never waits for one that has not started.
  std::atomic<bool> busy_{false};
  Task task_{nullptr, nullptr};
  int parts_ = 0;
  std::atomic<int> next_part_{0};
  std::atomic<std::uint64_t> state_{kClosed};
  static constexpr std::uint64_t kInside = 1;           // one helper in the pass
  static constexpr std::uint64_t kClosed = 1u << 16;    // above any count of helpers
  static constexpr std::uint64_t kGeneration = 1u << 17;
  // The calling thread sleeps here when the helpers inside take longer than kSpin.
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  std::atomic<bool> caller_sleeping_{false};
};

}  // namespace koala
