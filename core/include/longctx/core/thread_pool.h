// A fixed pool of worker threads for data-parallel loops over independent tasks (attention
// tiles, per-head work). ParallelFor hands out task indices [0, n) dynamically through an
// atomic counter, so uneven tasks (global-query rows vs window rows) balance themselves.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace longctx {

class ThreadPool {
 public:
  // threads <= 0 means std::thread::hardware_concurrency(). The calling thread takes part,
  // so a pool of N threads starts N-1 workers.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  // Runs fn(task, thread_index) for task in [0, n); returns when all are done.
  // thread_index in [0, size()) identifies per-thread scratch. Not reentrant.
  void ParallelFor(int64_t n, const std::function<void(int64_t task, int thread)>& fn);

 private:
  void WorkerLoop(int thread_index);
  void RunTasks(int thread_index);

  int size_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t next_ = 0;      // guarded by mu_
  uint64_t generation_ = 0;
  int busy_ = 0;
  bool stop_ = false;
};

}  // namespace longctx
