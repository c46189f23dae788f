// A small Prometheus metrics registry: counters, gauges and histograms with fixed buckets, and
// their OpenMetrics 1.0 text exposition (# TYPE / # HELP lines, histogram _bucket/_count/_sum
// with cumulative `le` buckets, # EOF). The HTTP endpoint that serves it is
// coordinator/metrics_http.h; the metric names and labels longctx exports are in docs/metrics.md.
//
// Threads: registering a series takes a mutex (do it once, at start); the returned reference stays
// valid for the registry's life and its updates are relaxed atomics (no lock on the hot path).
// Expose() may run on any thread at any time: it reads each atomic once, so a scrape is never
// torn within one value, and a histogram's +Inf bucket and _count are the same number.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::metrics {

// Label name -> value of one series (sorted by name; the exposition writes them in this order).
using Labels = std::map<std::string, std::string>;

// A monotonically increasing count (events, bytes, seconds). Exposed as NAME_total. A double,
// as in Prometheus: integers are exact up to 2^53.
class Counter {
 public:
  void Inc(double n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }  // n >= 0
  // For a count kept elsewhere and copied in by a collector (Registry::AddCollector); the source
  // must itself only grow.
  void Set(double total) { value_.store(total, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down (bytes in use, groups alive, a ratio).
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double d) { value_.fetch_add(d, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into fixed buckets. `bounds` are the buckets' upper bounds (inclusive, as
// Prometheus's `le`), strictly increasing and finite; +Inf is implicit.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Per-bucket (not cumulative) counts, bounds().size() + 1 of them (the last: above every
  // bound), and the sum of the observations.
  std::vector<uint64_t> BucketCounts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
};

// Bucket bounds for latencies, seconds: 1 ms .. 1 h, roughly x2.5 apart.
std::vector<double> LatencyBuckets();

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The series NAME{labels}, created on the first call and returned by later ones with the same
  // name and labels. Names match [a-zA-Z_:][a-zA-Z0-9_:]* and start with "longctx_"; a counter's
  // name does not end in "_total" (the exposition adds it). One name has one type, one help text
  // and (for histograms) one set of bounds; label names match [a-zA-Z_][a-zA-Z0-9_]*, and "le" is
  // reserved. A broken rule is a programming error: these return an error Status through
  // Result and the Must* forms abort with the message.
  Result<Counter*> AddCounter(const std::string& name, const std::string& help,
                              const Labels& labels = {});
  Result<Gauge*> AddGauge(const std::string& name, const std::string& help,
                          const Labels& labels = {});
  Result<Histogram*> AddHistogram(const std::string& name, const std::string& help,
                                  std::vector<double> bounds, const Labels& labels = {});
  Counter& MustCounter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& MustGauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& MustHistogram(const std::string& name, const std::string& help,
                           std::vector<double> bounds, const Labels& labels = {});

  // `collect` runs at the start of every Expose(), on the scraping thread, to copy figures that
  // another component keeps (e.g. PoolServer::Stats()) into this registry's series. It must be
  // thread-safe and quick, and must not register series or call Expose().
  void AddCollector(std::function<void()> collect);

  // The OpenMetrics text of every series, families sorted by name, ending in "# EOF\n".
  std::string Expose() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    Type type;
    std::string help;
    std::vector<double> bounds;  // histograms
    std::map<Labels, std::unique_ptr<Counter>> counters;
    std::map<Labels, std::unique_ptr<Gauge>> gauges;
    std::map<Labels, std::unique_ptr<Histogram>> histograms;
  };
  Result<Family*> FamilyFor(const std::string& name, Type type, const std::string& help,
                            const Labels& labels, const std::vector<double>* bounds);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
  std::vector<std::function<void()>> collectors_;  // guarded by mu_; run outside it
};

// The content type of Expose()'s text.
inline constexpr const char* kOpenMetricsContentType =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

// A number as OpenMetrics writes it: integers without a fraction, others in the shortest form
// that reads back to the same double, "NaN", "+Inf", "-Inf".
std::string FormatValue(double v);

}  // namespace longctx::metrics
