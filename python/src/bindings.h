// Shared by the pieces of the `longctx._core` extension module (python/): how a longctx::Status
// becomes a Python exception, and the three Add* functions that register the bindings. Nothing
// here throws across a library boundary: the libraries return Status; only this layer turns it
// into a C++ exception, which pybind11 translates into `longctx.Error` before Python sees it.
#pragma once

#include <pybind11/pybind11.h>

#include <atomic>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "longctx/core/status.h"

namespace longctx::python {

// Carries a non-OK Status to the translator registered in module.cpp (-> longctx.Error with
// .code = "InvalidArgument" etc. and .message = the one-line message).
class StatusError : public std::exception {
 public:
  explicit StatusError(Status status) : status_(std::move(status)), what_(status_.ToString()) {}
  const Status& status() const { return status_; }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  Status status_;
  std::string what_;
};

inline void ThrowIfError(const Status& s) {
  if (!s.ok()) throw StatusError(s);
}

template <typename T>
T ValueOrThrow(Result<T> r) {
  if (!r.ok()) throw StatusError(r.status());
  return std::move(*r);
}

// A Python exception raised inside a callback the C++ code called (progress, tokens, events):
// the first one is kept and re-raised once the call returns, since the library loop it runs in
// cannot be unwound by an exception.
class CallbackError {
 public:
  // Runs fn() under the GIL; a Python exception is kept (the first one) instead of escaping.
  template <typename Fn>
  void Run(Fn&& fn) {
    pybind11::gil_scoped_acquire gil;
    if (error_) return;  // one failure is enough: later callbacks are skipped
    try {
      fn();
    } catch (pybind11::error_already_set& e) {
      error_ = std::make_unique<pybind11::error_already_set>(std::move(e));
    }
  }
  // Re-raises the kept exception (GIL held by the caller).
  void Rethrow() {
    if (error_) {
      auto e = std::move(error_);
      throw std::move(*e);
    }
  }
  ~CallbackError() {
    if (error_) {
      pybind11::gil_scoped_acquire gil;
      error_.reset();
    }
  }

 private:
  std::unique_ptr<pybind11::error_already_set> error_;
};

// One call at a time on an object whose C++ side is not thread-safe (Engine, Client): calls from
// other threads wait (the GIL is released first, so they cannot deadlock on it); a call from
// inside one of the object's own callbacks — the same thread, already inside — would wait for
// itself forever, so it fails with FailedPrecondition instead.
class CallLock {
 public:
  // Call with the GIL held (it may throw StatusError).
  void CheckNotReentered(const char* what) const {
    if (owner_.load() == std::this_thread::get_id()) {
      throw StatusError(Status(StatusCode::kFailedPrecondition,
                               std::string(what) + " was called from inside its own callback"));
    }
  }
  class Held {
   public:
    explicit Held(CallLock& l) : l_(l) {
      l_.mu_.lock();
      l_.owner_.store(std::this_thread::get_id());
    }
    ~Held() {
      l_.owner_.store(std::thread::id());
      l_.mu_.unlock();
    }
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;

   private:
    CallLock& l_;
  };

 private:
  std::mutex mu_;
  std::atomic<std::thread::id> owner_{};
};

void AddAttention(pybind11::module_& m);
void AddEngine(pybind11::module_& m);
void AddClient(pybind11::module_& m);

}  // namespace longctx::python
