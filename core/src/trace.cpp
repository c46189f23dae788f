#include "longctx/core/trace.h"

#include <fmt/format.h>

#include <chrono>
#include <memory>
#include <mutex>

namespace longctx::trace {
namespace internal {
std::atomic<bool> g_enabled{false};
}  // namespace internal

namespace {

constexpr int64_t kChunkEvents = 4096;
constexpr int64_t kMaxChunks = kMaxEventsPerThread / kChunkEvents;

// One thread's events: a single writer (the owner) appends; readers (Snapshot) see the first
// `count` events. Chunks never move once published, so a reader needs no lock: the owner writes
// the event, then publishes it with a release store of `count`.
struct ThreadBuffer {
  int tid = 0;
  std::string name;  // guarded by Registry::mu
  std::atomic<int64_t> count{0};
  std::atomic<int64_t> dropped{0};
  // Value-initialized: every chunk pointer starts null.
  std::unique_ptr<std::atomic<Event*>[]> chunks =
      std::make_unique<std::atomic<Event*>[]>(size_t(kMaxChunks));
  ~ThreadBuffer() {
    for (int64_t i = 0; i < kMaxChunks; ++i) delete[] chunks[size_t(i)].load();
  }
};

struct Registry {
  std::mutex mu;
  std::vector<std::unique_ptr<ThreadBuffer>> buffers;  // index = tid - 1
};

// Never destroyed: threads may still record while static destructors run.
Registry& TheRegistry() {
  static Registry* r = new Registry();
  return *r;
}

thread_local ThreadBuffer* t_buffer = nullptr;
thread_local std::string t_name;  // SetThreadName before the first event

ThreadBuffer* ThisThreadBuffer() {
  if (t_buffer != nullptr) return t_buffer;
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto b = std::make_unique<ThreadBuffer>();
  b->tid = int(r.buffers.size()) + 1;
  b->name = t_name;
  t_buffer = b.get();
  r.buffers.push_back(std::move(b));
  return t_buffer;
}

std::string Micros(int64_t ns) { return fmt::format("{:.3f}", double(ns) / 1000.0); }

}  // namespace

void Enable() { internal::g_enabled.store(true, std::memory_order_relaxed); }
void Disable() { internal::g_enabled.store(false, std::memory_order_relaxed); }

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Record(const Event& e) {
  ThreadBuffer* b = ThisThreadBuffer();
  const int64_t i = b->count.load(std::memory_order_relaxed);  // only this thread writes it
  if (i >= kMaxEventsPerThread) {
    b->dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::atomic<Event*>& slot = b->chunks[size_t(i / kChunkEvents)];
  Event* chunk = slot.load(std::memory_order_relaxed);
  if (chunk == nullptr) {
    chunk = new Event[kChunkEvents];
    slot.store(chunk, std::memory_order_release);
  }
  chunk[i % kChunkEvents] = e;
  b->count.store(i + 1, std::memory_order_release);
}

void SetThreadName(std::string_view name) {
  t_name = std::string(name);
  if (t_buffer != nullptr) {
    std::lock_guard<std::mutex> lock(TheRegistry().mu);
    t_buffer->name = t_name;
  }
}

std::vector<ThreadEvents> Snapshot() {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<ThreadEvents> out;
  for (const auto& b : r.buffers) {
    ThreadEvents t;
    t.tid = b->tid;
    t.name = b->name.empty() ? fmt::format("thread {}", b->tid) : b->name;
    t.dropped = b->dropped.load(std::memory_order_relaxed);
    const int64_t n = b->count.load(std::memory_order_acquire);
    t.events.reserve(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      t.events.push_back(
          b->chunks[size_t(i / kChunkEvents)].load(std::memory_order_acquire)[i % kChunkEvents]);
    }
    out.push_back(std::move(t));
  }
  return out;
}

void Clear() {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const auto& b : r.buffers) {
    b->count.store(0, std::memory_order_release);
    b->dropped.store(0, std::memory_order_relaxed);
  }
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20)
          out += fmt::format("\\u{:04x}", c);
        else
          out += ch;  // UTF-8 passes through; JSON allows it unescaped
    }
  }
  return out + "\"";
}

std::string SerializeEvents(int pid, std::string_view process_name, int64_t origin_ns) {
  const std::vector<ThreadEvents> threads = Snapshot();
  std::string out;
  auto add = [&](const std::string& event) {
    if (!out.empty()) out += ",\n";
    out += event;
  };
  add(fmt::format(R"({{"name":"process_name","ph":"M","pid":{},"tid":0,"args":{{"name":{}}}}})",
                  pid, JsonString(process_name)));
  add(fmt::format(
      R"({{"name":"process_sort_index","ph":"M","pid":{},"tid":0,"args":{{"sort_index":{}}}}})",
      pid, pid));
  for (const ThreadEvents& t : threads) {
    if (t.events.empty()) continue;
    add(fmt::format(R"({{"name":"thread_name","ph":"M","pid":{},"tid":{},"args":{{"name":{}}}}})",
                    pid, t.tid, JsonString(t.name)));
    add(fmt::format(
        R"({{"name":"thread_sort_index","ph":"M","pid":{},"tid":{},"args":{{"sort_index":{}}}}})",
        pid, t.tid, t.tid));
    if (t.dropped > 0) {
      add(fmt::format(R"({{"name":"events_dropped","ph":"i","s":"t","pid":{},"tid":{},"ts":{},)"
                      R"("args":{{"count":{}}}}})",
                      pid, t.tid, Micros(t.events.back().start_ns - origin_ns), t.dropped));
    }
    for (const Event& e : t.events) {
      std::string args;
      for (int a = 0; a < 2; ++a) {
        if (e.arg_name[a] == nullptr) continue;
        args += fmt::format("{}{}:{}", args.empty() ? "" : ",", JsonString(e.arg_name[a]),
                            e.arg_value[a]);
      }
      add(fmt::format(R"({{"name":{},"cat":{},"ph":"X","pid":{},"tid":{},"ts":{},"dur":{})"
                      R"({}}})",
                      JsonString(e.name), JsonString(e.cat ? e.cat : ""), pid, t.tid,
                      Micros(e.start_ns - origin_ns), Micros(e.dur_ns),
                      args.empty() ? "" : fmt::format(R"(,"args":{{{}}})", args)));
    }
  }
  return out;
}

std::string MergeTraceFragments(const std::vector<std::string>& fragments, std::string_view other) {
  std::string out = "{\"traceEvents\":[\n";
  bool first = true;
  for (const std::string& f : fragments) {
    if (f.empty()) continue;
    if (!first) out += ",\n";
    out += f;
    first = false;
  }
  out += "\n],\"displayTimeUnit\":\"ms\"";
  if (!other.empty()) {
    out += ",\"otherData\":";
    out += other;
  }
  out += "}\n";
  return out;
}

}  // namespace longctx::trace
