#include "cpu/pool.h"

#include <chrono>
#include <system_error>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define KOALA_X86_64 1
#endif

namespace koala {

namespace {

// How long a helper waits for the next pass, and the calling thread for the helpers, before
// sleeping (Note [fast wake-up]).
constexpr std::chrono::microseconds kSpin{50};

inline void pause() {
#ifdef KOALA_X86_64
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until done() or kSpin has passed; returns done().
template <class Done>
bool spin_until(Done&& done) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      pause();
    }
    if (std::chrono::steady_clock::now() - start > kSpin) return done();
  }
}

#ifdef KOALA_X86_64
constexpr unsigned int kDefaultMxcsr = 0x1F80;  // round to nearest, no FTZ/DAZ, exceptions masked
#endif

}  // namespace

FpuModeGuard::FpuModeGuard() : saved_(0) {
#ifdef KOALA_X86_64
  saved_ = _mm_getcsr();
  if (saved_ != kDefaultMxcsr) _mm_setcsr(kDefaultMxcsr);
#endif
}

FpuModeGuard::~FpuModeGuard() {
#ifdef KOALA_X86_64
  if (saved_ != kDefaultMxcsr) _mm_setcsr(saved_);
#endif
}

// One helper thread. `ticket` counts the passes it was handed; it sleeps on `cv` when idle.
struct ThreadPool::Helper {
  std::atomic<std::uint64_t> ticket{0};
  std::atomic<bool> sleeping{false};
  std::mutex mu;
  std::condition_variable cv;
  std::thread thread;

  void wake() {
    ticket.fetch_add(1);
    if (sleeping.load()) {
      // The helper checks `ticket` holding mu before it waits, so taking mu here orders this
      // notification after its check.
      { std::lock_guard<std::mutex> lock(mu); }
      cv.notify_one();
    }
  }
};

ThreadPool& ThreadPool::shared() {
  // Never destroyed (Note [shared pool]): helpers may still be sleeping on it at exit.
  static ThreadPool* const pool = new ThreadPool();
  return *pool;
}

void ThreadPool::reserve(int helpers) {
  if (helpers > kMaxHelpers) helpers = kMaxHelpers;
  if (count_.load(std::memory_order_acquire) >= helpers) return;
  std::lock_guard<std::mutex> lock(grow_mu_);
  for (int i = count_.load(std::memory_order_relaxed); i < helpers; ++i) {
    auto helper = std::make_unique<Helper>();
    Helper& h = *helper;
    try {
      h.thread = std::thread([this, &h] { helper_main(h); });
    } catch (const std::system_error&) {
      return;  // the system refuses another thread: the passes share those that run
    }
    h.thread.detach();
    helpers_[i] = std::move(helper);
    count_.store(i + 1, std::memory_order_release);
  }
}

void ThreadPool::run_parts(int threads, int parts, Task task) {
  FpuModeGuard fpu;
  const int available = count_.load(std::memory_order_acquire);
  if (threads <= 1 || parts <= 1 || available == 0 || busy_.exchange(true, std::memory_order_acquire)) {
    for (int p = 0; p < parts; ++p) task.call(task.fn, p);
    return;
  }
  int helpers = threads - 1 < available ? threads - 1 : available;
  if (helpers > parts - 1) helpers = parts - 1;
  task_ = task;
  parts_ = parts;
  next_part_.store(0, std::memory_order_relaxed);
  const std::uint64_t generation = (state_.load(std::memory_order_relaxed) & ~(kGeneration - 1)) + kGeneration;
  state_.store(generation);  // open, nobody inside; publishes the fields above
  for (int i = 0; i < helpers; ++i) helpers_[i]->wake();
  claim_parts();
  const std::uint64_t inside_mask = kClosed - 1;
  if ((state_.fetch_or(kClosed) & inside_mask) != 0) {
    const auto done = [&] { return (state_.load() & inside_mask) == 0; };
    if (!spin_until(done)) {
      caller_sleeping_.store(true);
      std::unique_lock<std::mutex> lock(done_mu_);
      done_cv_.wait(lock, done);
      caller_sleeping_.store(false);
    }
  }
  busy_.store(false, std::memory_order_release);
}

void ThreadPool::claim_parts() {
  for (int p = next_part_.fetch_add(1); p < parts_; p = next_part_.fetch_add(1)) task_.call(task_.fn, p);
}

void ThreadPool::helper_main(Helper& helper) {
  FpuModeGuard fpu;  // for the thread's lifetime: it never ends
  std::uint64_t seen = 0;
  for (;;) {
    const auto handed = [&] { return helper.ticket.load() != seen; };
    if (!spin_until(handed)) {
      helper.sleeping.store(true);
      std::unique_lock<std::mutex> lock(helper.mu);
      helper.cv.wait(lock, handed);
      helper.sleeping.store(false);
    }
    seen = helper.ticket.load();
    help();
  }
}

void ThreadPool::help() {
  std::uint64_t s = state_.load();
  do {
    if (s & kClosed) return;  // its caller ran every part already
  } while (!state_.compare_exchange_weak(s, s + kInside));
  claim_parts();
  const std::uint64_t before = state_.fetch_sub(kInside);
  if ((before & kClosed) && (before & (kClosed - 1)) == kInside && caller_sleeping_.load()) {
    { std::lock_guard<std::mutex> lock(done_mu_); }
    done_cv_.notify_one();
  }
}

}  // namespace koala
