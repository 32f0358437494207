// How the CUDA optimizer launches a step and handles CUDA's error state. Plain C++ (no CUDA
// types): the CUDA runtime is one ErrorSource, and the development addon drives the same code with
// a scripted one, so that these rules are tested on machines without a GPU (test/cuda/launch.test.ts).
#pragma once

#include <stdexcept>
#include <string>

namespace koala {
namespace cuda {

// Note [launch errors]
// CUDA keeps the last error of a thread until someone reads it (cudaGetLastError), whoever caused
// it; an error of a lost context ("sticky") is returned by every later call. So:
//  1. Before a call's first launch, the error left by an earlier, unrelated call is taken and
//     dropped: it must not be reported as this launch's (a failed cudaSetDevice in someone's
//     try/catch made the next predict() throw "invalid device ordinal"). A sticky error shows again
//     at the launch itself.
//  2. After each launch its error is taken; on the first failure nothing more is launched.
//  3. If a launch fails after an earlier one of the same call was queued, the device holds a
//     half-done step: the optimizer is marked broken and every later call refuses to run, so that
//     a caller who catches the error and retries cannot apply a step twice. A failure at the
//     first launch leaves nothing queued, and the optimizer usable.
class BrokenOptimizer : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ErrorSource: int take() returns the thread's last error (0: none) and clears it;
// std::string message(int code) describes one.
template <class ErrorSource>
class LaunchSequence {
 public:
  // Throws BrokenOptimizer when an earlier call left the optimizer broken.
  LaunchSequence(ErrorSource& errors, bool& broken, const char* call) : errors_(errors), broken_(broken), call_(call) {
    if (broken_) {
      throw BrokenOptimizer(std::string(call_) + ": an earlier step failed half-way on the device; this optimizer's state is unknown, create a new one");
    }
    errors_.take();  // rule 1
  }

  // Runs `enqueue` (one kernel launch) and checks its error (rules 2 and 3); throws std::runtime_error.
  template <class Enqueue>
  void launch(const char* what, Enqueue&& enqueue) {
    enqueue();
    const int err = errors_.take();
    if (err == 0) {
      ++launched_;
      return;
    }
    if (launched_ > 0) broken_ = true;
    throw std::runtime_error(std::string(call_) + ", " + what + ": " + errors_.message(err) +
                             (launched_ > 0 ? " (the step was half done: this optimizer is unusable now)" : ""));
  }

  int launched() const { return launched_; }

 private:
  ErrorSource& errors_;
  bool& broken_;
  const char* call_;
  int launched_ = 0;
};

}  // namespace cuda
}  // namespace koala
