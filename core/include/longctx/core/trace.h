// Timelines: a small in-process tracer whose spans become Chrome / Perfetto trace events (the
// JSON "traceEvents" format that chrome://tracing and ui.perfetto.dev open). Off by default; a
// span then costs one relaxed atomic load. When on, each thread appends complete events ("ph":
// "X") to its own buffer without a lock; SerializeEvents turns one process's events into a JSON
// fragment and MergeTraceFragments joins the fragments of several ranks into one document
// (launch/ gathers them over the communicator: core knows nothing of ranks).
//
//   trace::Enable();
//   { trace::TraceSpan span("halo_wait", "comm", "layer", l); ... }  // one event on scope exit
//
// Span and category names, and argument names, must be string literals (or otherwise outlive
// the process's use of the tracer): the hot path stores the pointer, not a copy.
// Timestamps: steady_clock nanoseconds (CLOCK_MONOTONIC on Linux: one clock for every process
// of a host), written as microseconds relative to an origin the caller chooses.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace longctx::trace {

namespace internal {
extern std::atomic<bool> g_enabled;
}  // namespace internal

// Whether spans started now record events (one relaxed load).
inline bool Enabled() { return internal::g_enabled.load(std::memory_order_relaxed); }
void Enable();
void Disable();

// steady_clock::now() in nanoseconds since steady_clock's epoch (boot, on Linux).
int64_t NowNanos();

// One complete event: [start_ns, start_ns + dur_ns) on the thread that recorded it, with up to
// two integer arguments (arg names null when absent).
struct Event {
  const char* name = nullptr;
  const char* cat = nullptr;
  int64_t start_ns = 0;
  int64_t dur_ns = 0;
  const char* arg_name[2] = {nullptr, nullptr};
  int64_t arg_value[2] = {0, 0};
};

// Appends one event to the calling thread's buffer (no lock; a thread's first event registers
// its buffer under a mutex). Events beyond kMaxEventsPerThread are dropped and counted.
void Record(const Event& e);
inline constexpr int64_t kMaxEventsPerThread = int64_t(1) << 22;  // 4 Mi events, 64 B each

// A span: records [construction, End() or destruction) when the tracer was on at
// construction. Not copyable; End() may be called once, earlier than the scope's end.
class TraceSpan {
 public:
  TraceSpan(const char* name, const char* cat) : TraceSpan(name, cat, nullptr, 0, nullptr, 0) {}
  TraceSpan(const char* name, const char* cat, const char* arg, int64_t value)
      : TraceSpan(name, cat, arg, value, nullptr, 0) {}
  TraceSpan(const char* name, const char* cat, const char* arg0, int64_t value0, const char* arg1,
            int64_t value1) {
    if (!Enabled()) return;
    e_.name = name;
    e_.cat = cat;
    e_.arg_name[0] = arg0;
    e_.arg_value[0] = value0;
    e_.arg_name[1] = arg1;
    e_.arg_value[1] = value1;
    e_.start_ns = NowNanos();
  }
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;
  ~TraceSpan() { End(); }
  void End() {
    if (e_.name == nullptr) return;
    e_.dur_ns = NowNanos() - e_.start_ns;
    Record(e_);
    e_.name = nullptr;
  }

 private:
  Event e_;  // name == nullptr: not recording
};

// Names the calling thread in the trace ("main", "kv-cache"); without it a thread is
// "thread <tid>". Cheap enough to call when the tracer is off (it then does nothing).
void SetThreadName(std::string_view name);

// Every thread's events so far (each thread's in the order recorded), with the trace thread id
// (1, 2, ... in order of each thread's first event). A thread still recording may add events
// after the snapshot; they are simply not in it.
struct ThreadEvents {
  int tid = 0;
  std::string name;
  std::vector<Event> events;
  int64_t dropped = 0;
};
std::vector<ThreadEvents> Snapshot();

// Forgets every recorded event (thread names and ids are kept). Only when no other thread is
// recording (before Enable, or in tests).
void Clear();

// This process's events as a JSON fragment: comma-separated trace events without the enclosing
// brackets (empty when there is nothing), with process and thread name metadata. `pid` is the
// trace's process id (the rank); timestamps are (start_ns - origin_ns) / 1000 microseconds.
std::string SerializeEvents(int pid, std::string_view process_name, int64_t origin_ns);

// The whole trace file from fragments of SerializeEvents (empty ones skipped):
// {"traceEvents":[...],"displayTimeUnit":"ms","otherData":{...}} with `other` (a JSON object
// text, or empty) as otherData.
std::string MergeTraceFragments(const std::vector<std::string>& fragments, std::string_view other);

// `s` as a JSON string literal, quotes included.
std::string JsonString(std::string_view s);

}  // namespace longctx::trace
