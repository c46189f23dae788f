// The tracer (core/trace.h): disabled records nothing, spans nest in time on one thread, each
// thread gets its own tid and name, and the serialized trace is JSON that a parser reads back
// with the same events (checked with nlohmann::json, an independent parser).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "longctx/core/trace.h"

namespace longctx::trace {
namespace {

using Json = nlohmann::json;

// Each test starts with the tracer off and empty, and leaves it so.
class Trace : public ::testing::Test {
 protected:
  void SetUp() override {
    Disable();
    Clear();
  }
  void TearDown() override {
    Disable();
    Clear();
  }
  static size_t CountEvents() {
    size_t n = 0;
    for (const ThreadEvents& t : Snapshot()) n += t.events.size();
    return n;
  }
  // The "X" events of a parsed trace.
  static std::vector<Json> Spans(const Json& doc) {
    std::vector<Json> out;
    for (const Json& e : doc.at("traceEvents")) {
      if (e.at("ph") == "X") out.push_back(e);
    }
    return out;
  }
};

void Spin(std::chrono::microseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
  }
}

TEST_F(Trace, DisabledRecordsNothing) {
  { TraceSpan s("off", "test"); }
  {
    TraceSpan s("off_too", "test", "layer", 1);
    s.End();
  }
  EXPECT_EQ(CountEvents(), 0u);
  // A span started while off records nothing even if the tracer is switched on before its end.
  {
    TraceSpan s("started_off", "test");
    Enable();
  }
  EXPECT_EQ(CountEvents(), 0u);
}

TEST_F(Trace, SpansNestAndCarryArguments) {
  Enable();
  {
    TraceSpan outer("outer", "test", "layer", 7);
    Spin(std::chrono::microseconds(200));
    {
      TraceSpan inner("inner", "test", "layer", 7, "chunk", 2);
      Spin(std::chrono::microseconds(100));
    }
    TraceSpan early("early", "test");
    early.End();
    early.End();  // a second End does nothing
    Spin(std::chrono::microseconds(50));
  }
  Disable();
  std::map<std::string, Event> by_name;
  for (const ThreadEvents& t : Snapshot()) {
    for (const Event& e : t.events) by_name[e.name] = e;
  }
  ASSERT_EQ(by_name.size(), 3u);
  const Event &o = by_name["outer"], &i = by_name["inner"], &e = by_name["early"];
  EXPECT_GE(o.dur_ns, 350'000);
  EXPECT_GE(i.dur_ns, 100'000);
  // Containment: the inner span lies inside the outer one.
  EXPECT_LE(o.start_ns, i.start_ns);
  EXPECT_LE(i.start_ns + i.dur_ns, o.start_ns + o.dur_ns);
  EXPECT_GE(e.start_ns, i.start_ns + i.dur_ns);
  EXPECT_LT(e.dur_ns, 50'000);
  EXPECT_STREQ(i.arg_name[1], "chunk");
  EXPECT_EQ(i.arg_value[1], 2);
  EXPECT_EQ(o.arg_value[0], 7);
  EXPECT_EQ(o.arg_name[1], nullptr);
}

TEST_F(Trace, ThreadsGetTheirOwnBuffersAndNames) {
  Enable();
  constexpr int kThreads = 4, kSpans = 10000;  // crosses a 4096-event chunk boundary
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t] {
      SetThreadName("worker " + std::to_string(t));
      for (int i = 0; i < kSpans; ++i) TraceSpan s("work", "test", "i", i);
    });
  }
  {
    TraceSpan main_span("main_span", "test");
    for (auto& th : threads) th.join();
  }
  Disable();
  std::map<std::string, std::vector<Event>> by_thread;
  std::set<int> tids;
  for (const ThreadEvents& t : Snapshot()) {
    if (t.events.empty()) continue;
    EXPECT_TRUE(tids.insert(t.tid).second) << "tid " << t.tid << " twice";
    by_thread[t.name] = t.events;
  }
  for (int t = 0; t < kThreads; ++t) {
    const auto& ev = by_thread["worker " + std::to_string(t)];
    ASSERT_EQ(ev.size(), size_t(kSpans)) << t;
    for (int i = 0; i < kSpans; ++i) {  // in the order recorded, none lost or mixed in
      ASSERT_EQ(ev[size_t(i)].arg_value[0], i);
      if (i > 0) {
        ASSERT_GE(ev[size_t(i)].start_ns, ev[size_t(i - 1)].start_ns);
      }
    }
  }
  EXPECT_EQ(CountEvents(), size_t(kThreads * kSpans + 1));
}

TEST_F(Trace, SerializedTraceIsValidJsonWithTheSameEvents) {
  SetThreadName("main \"quoted\"\tthread");  // escaped in the output
  Enable();
  const int64_t origin = NowNanos();
  {
    TraceSpan a("prefill", "compute");
    TraceSpan b("halo_wait", "comm", "layer", 3);
  }
  Disable();
  const std::string rank0 = SerializeEvents(0, "rank 0 (host-a)", origin);
  const std::string rank1 = SerializeEvents(1, "rank 1 (host-b)", origin);
  const std::string doc_text =
      MergeTraceFragments({rank0, "", rank1}, R"({"ranks":2,"clock":"steady"})");
  Json doc;
  ASSERT_NO_THROW(doc = Json::parse(doc_text)) << doc_text;
  EXPECT_EQ(doc.at("displayTimeUnit"), "ms");
  EXPECT_EQ(doc.at("otherData").at("ranks"), 2);
  std::map<int, std::string> process_names;
  std::set<std::string> thread_names;
  for (const Json& e : doc.at("traceEvents")) {
    if (e.at("name") == "process_name") process_names[e.at("pid")] = e.at("args").at("name");
    if (e.at("name") == "thread_name") thread_names.insert(e.at("args").at("name"));
  }
  EXPECT_EQ(process_names,
            (std::map<int, std::string>{{0, "rank 0 (host-a)"}, {1, "rank 1 (host-b)"}}));
  EXPECT_TRUE(thread_names.count("main \"quoted\"\tthread"));
  const std::vector<Json> spans = Spans(doc);
  ASSERT_EQ(spans.size(), 4u);  // two spans, once per pid
  for (const Json& s : spans) {
    EXPECT_GE(s.at("ts").get<double>(), 0.0);
    EXPECT_GE(s.at("dur").get<double>(), 0.0);
    if (s.at("name") == "halo_wait") {
      EXPECT_EQ(s.at("cat"), "comm");
      EXPECT_EQ(s.at("args").at("layer"), 3);
    } else {
      EXPECT_EQ(s.at("name"), "prefill");
      EXPECT_FALSE(s.contains("args"));
    }
  }
  // An empty process still names itself; an empty merge is a valid, empty trace.
  Clear();
  EXPECT_NO_THROW(Json::parse(MergeTraceFragments({SerializeEvents(5, "idle", 0)}, "")));
  EXPECT_EQ(Spans(Json::parse(MergeTraceFragments({}, ""))).size(), 0u);
}

// The cost of a span, off and on (printed; docs/observability.md quotes it). The bound is loose
// on purpose (a loaded CI machine): it catches a lock, an allocation or a syscall per event.
TEST_F(Trace, SpanCostIsSmall) {
  constexpr int kSpans = 1'000'000;
  auto time_spans = [] {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kSpans; ++i) TraceSpan s("cost", "test", "i", i);
    return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
           kSpans;
  };
  const double off_ns = time_spans();
  Enable();
  const double on_ns = time_spans();
  Disable();
  EXPECT_EQ(CountEvents(), size_t(kSpans));
  std::printf("trace span cost: off %.2f ns, on %.1f ns\n", off_ns, on_ns);
  EXPECT_LT(off_ns, 100.0);
  EXPECT_LT(on_ns, 5000.0);
}

TEST_F(Trace, JsonStringEscapesControlCharacters) {
  const std::string s = JsonString(std::string("a\x01\\b\"\n\xc3\xa9", 8));
  EXPECT_EQ(Json::parse(s).get<std::string>(), std::string("a\x01\\b\"\n\xc3\xa9", 8));
}

}  // namespace
}  // namespace longctx::trace
