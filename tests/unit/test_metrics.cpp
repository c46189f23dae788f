// The metrics registry (core/metrics.h): values under concurrent updates, histogram buckets
// against a plain count, and the OpenMetrics text parsed back line by line.
#include "longctx/core/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace longctx::metrics {
namespace {

// A parsed exposition: families (name -> type, help) and samples ("name{labels}" -> value).
struct Parsed {
  std::map<std::string, std::string> types, helps;
  std::map<std::string, std::string> samples;  // key as written, value text
  std::vector<std::string> order;              // sample keys in order
  bool eof_last = false;
};

Parsed Parse(const std::string& text) {
  Parsed p;
  std::istringstream in(text);
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l == "# EOF") {
      p.eof_last = i + 1 == lines.size();
      continue;
    }
    if (l.rfind("# TYPE ", 0) == 0) {
      const std::string rest = l.substr(7);
      const size_t sp = rest.find(' ');
      EXPECT_EQ(p.types.count(rest.substr(0, sp)), 0u) << "family twice: " << l;
      p.types[rest.substr(0, sp)] = rest.substr(sp + 1);
      continue;
    }
    if (l.rfind("# HELP ", 0) == 0) {
      const std::string rest = l.substr(7);
      const size_t sp = rest.find(' ');
      p.helps[rest.substr(0, sp)] = rest.substr(sp + 1);
      continue;
    }
    EXPECT_NE(l[0], '#') << l;
    const size_t sp = l.rfind(' ');
    EXPECT_NE(sp, std::string::npos) << l;
    p.samples[l.substr(0, sp)] = l.substr(sp + 1);
    p.order.push_back(l.substr(0, sp));
  }
  return p;
}

TEST(Metrics, CounterGaugeExposition) {
  Registry r;
  Counter& done = r.MustCounter("longctx_jobs", "Job transitions", {{"event", "done"}});
  Counter& failed = r.MustCounter("longctx_jobs", "Job transitions", {{"event", "failed"}});
  Gauge& g = r.MustGauge("longctx_pool_used_bytes", "Bytes \\ in use\nnow");
  done.Inc(3);
  failed.Inc();
  g.Set(1.5);
  g.Add(-0.25);
  // The same name and labels give the same series.
  EXPECT_EQ(&done, &r.MustCounter("longctx_jobs", "Job transitions", {{"event", "done"}}));

  const Parsed p = Parse(r.Expose());
  EXPECT_TRUE(p.eof_last);
  EXPECT_EQ(p.types.at("longctx_jobs"), "counter");
  EXPECT_EQ(p.types.at("longctx_pool_used_bytes"), "gauge");
  EXPECT_EQ(p.helps.at("longctx_pool_used_bytes"), "Bytes \\\\ in use\\nnow");
  EXPECT_EQ(p.samples.at("longctx_jobs_total{event=\"done\"}"), "3");
  EXPECT_EQ(p.samples.at("longctx_jobs_total{event=\"failed\"}"), "1");
  EXPECT_EQ(p.samples.at("longctx_pool_used_bytes"), "1.25");
  EXPECT_EQ(p.samples.size(), 3u);
  // Counters count seconds too.
  Counter& stall = r.MustCounter("longctx_stall_seconds", "");
  stall.Inc(0.5);
  stall.Inc(0.25);
  EXPECT_EQ(Parse(r.Expose()).samples.at("longctx_stall_seconds_total"), "0.75");
}

TEST(Metrics, LabelValuesAreEscaped) {
  Registry r;
  r.MustGauge("longctx_x", "", {{"b", "say \"hi\"\n"}, {"a", "back\\slash"}}).Set(2);
  const Parsed p = Parse(r.Expose());
  // Sorted by label name, escaped.
  EXPECT_EQ(p.samples.count("longctx_x{a=\"back\\\\slash\",b=\"say \\\"hi\\\"\\n\"}"), 1u)
      << r.Expose();
}

TEST(Metrics, HistogramMatchesAPlainCount) {
  Registry r;
  const std::vector<double> bounds = {0.1, 0.5, 1, 10};
  Histogram& h = r.MustHistogram("longctx_phase_seconds", "Latency", bounds, {{"phase", "run"}});
  const std::vector<double> values = {0.05, 0.1, 0.2, 0.5, 0.7, 1, 3, 10, 11, 500, -1};
  for (double v : values) h.Observe(v);
  const Parsed p = Parse(r.Expose());
  EXPECT_EQ(p.types.at("longctx_phase_seconds"), "histogram");
  double sum = 0;
  for (double v : values) sum += v;
  for (double le : {0.1, 0.5, 1.0, 10.0}) {
    int expected = 0;  // le is inclusive, cumulative
    for (double v : values) expected += v <= le;
    const std::string key = "longctx_phase_seconds_bucket{phase=\"run\",le=\"" + FormatValue(le) + "\"}";
    ASSERT_EQ(p.samples.count(key), 1u) << key << "\n" << r.Expose();
    EXPECT_EQ(std::stoi(p.samples.at(key)), expected) << key;
  }
  EXPECT_EQ(p.samples.at("longctx_phase_seconds_bucket{phase=\"run\",le=\"+Inf\"}"),
            std::to_string(values.size()));
  EXPECT_EQ(p.samples.at("longctx_phase_seconds_count{phase=\"run\"}"),
            std::to_string(values.size()));
  EXPECT_DOUBLE_EQ(std::stod(p.samples.at("longctx_phase_seconds_sum{phase=\"run\"}")), sum);
  // Buckets in increasing le order, then _count and _sum.
  EXPECT_EQ(p.order.front(), "longctx_phase_seconds_bucket{phase=\"run\",le=\"0.1\"}");
  EXPECT_EQ(p.order.back(), "longctx_phase_seconds_sum{phase=\"run\"}");
}

TEST(Metrics, ConcurrentUpdatesLoseNothing) {
  Registry r;
  Counter& c = r.MustCounter("longctx_events", "");
  Gauge& g = r.MustGauge("longctx_level", "");
  Histogram& h = r.MustHistogram("longctx_latency_seconds", "", {1, 2});
  constexpr int kThreads = 4, kPerThread = 20000;
  std::vector<std::thread> threads;
  std::atomic<bool> stop{false};
  std::thread scraper([&] {
    while (!stop.load()) {
      const Parsed p = Parse(r.Expose());
      // Within one scrape a histogram's +Inf bucket and _count agree.
      EXPECT_EQ(p.samples.at("longctx_latency_seconds_bucket{le=\"+Inf\"}"),
                p.samples.at("longctx_latency_seconds_count"));
    }
  });
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        c.Inc();
        g.Add(1);
        h.Observe(double((i + t) % 3));  // 0, 1, 2: buckets le=1 gets 0 and 1
      }
    });
  }
  for (auto& th : threads) th.join();
  stop = true;
  scraper.join();
  EXPECT_EQ(c.value(), double(kThreads) * kPerThread);
  EXPECT_EQ(g.value(), double(kThreads) * kPerThread);
  const std::vector<uint64_t> counts = h.BucketCounts();
  uint64_t total = 0;
  for (uint64_t n : counts) total += n;
  EXPECT_EQ(total, uint64_t(kThreads) * kPerThread);
}

TEST(Metrics, CollectorRunsAtEachScrape) {
  Registry r;
  Gauge& g = r.MustGauge("longctx_pool_used_bytes", "");
  Counter& c = r.MustCounter("longctx_refused", "");
  int scrapes = 0;
  r.AddCollector([&] {
    ++scrapes;
    g.Set(scrapes * 100);
    c.Set(scrapes);
  });
  (void)r.Expose();
  const Parsed p = Parse(r.Expose());
  EXPECT_EQ(p.samples.at("longctx_pool_used_bytes"), "200");
  EXPECT_EQ(p.samples.at("longctx_refused_total"), "2");
}

TEST(Metrics, BadRegistrationsAreErrors) {
  Registry r;
  EXPECT_FALSE(r.AddCounter("jobs", "").ok());                  // no longctx_ prefix
  EXPECT_FALSE(r.AddCounter("longctx_jobs_total", "").ok());    // _total is added
  EXPECT_FALSE(r.AddGauge("longctx_bad-name", "").ok());
  EXPECT_FALSE(r.AddGauge("longctx_x", "", {{"le", "1"}}).ok());  // reserved
  EXPECT_FALSE(r.AddGauge("longctx_x", "", {{"9x", "1"}}).ok());
  EXPECT_FALSE(r.AddHistogram("longctx_h", "", {2, 1}).ok());
  EXPECT_FALSE(r.AddHistogram("longctx_h", "", {}).ok());
  EXPECT_FALSE(r.AddHistogram("longctx_h", "", {1, INFINITY}).ok());
  ASSERT_TRUE(r.AddGauge("longctx_y", "").ok());
  EXPECT_FALSE(r.AddCounter("longctx_y", "").ok());  // one name, one type
  ASSERT_TRUE(r.AddHistogram("longctx_h", "", {1, 2}).ok());
  EXPECT_FALSE(r.AddHistogram("longctx_h", "", {1, 3}, {{"a", "b"}}).ok());
  // An empty registry still ends in # EOF.
  EXPECT_EQ(Registry().Expose(), "# EOF\n");
}

TEST(Metrics, FormatValue) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(std::stod(FormatValue(0.1)), 0.1);
  EXPECT_EQ(std::stod(FormatValue(1e300)), 1e300);
  EXPECT_EQ(FormatValue(NAN), "NaN");
  EXPECT_EQ(FormatValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatValue(-INFINITY), "-Inf");
}

}  // namespace
}  // namespace longctx::metrics
