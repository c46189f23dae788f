// The metrics registry and its OpenMetrics exposition (metrics.h).
#include "longctx/core/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace longctx::metrics {
namespace {

bool ValidName(const std::string& s, bool colon) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                       (colon && c == ':');
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool EndsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Label values escape \ " and newline; HELP text escapes \ and newline (OpenMetrics 1.0 ABNF).
std::string Escape(const std::string& s, bool quotes) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '"' && quotes) out += "\\\"";
    else out += c;
  }
  return out;
}

// {a="x",b="y"} plus an optional extra pair (a histogram's le) last; "" when there is nothing.
std::string LabelText(const Labels& labels, const char* extra_name = nullptr,
                      const std::string& extra_value = "") {
  if (labels.empty() && extra_name == nullptr) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    out += fmt::format("{}=\"{}\"", k, Escape(v, true));
  }
  if (extra_name != nullptr) {
    if (!first) out += ',';
    out += fmt::format("{}=\"{}\"", extra_name, extra_value);
  }
  return out + "}";
}

[[noreturn]] void Die(const Status& st) {
  std::fprintf(stderr, "longctx: metrics registry: %s\n", st.message().c_str());
  std::abort();
}

}  // namespace

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", int64_t(v));
  return fmt::format("{}", v);  // fmt's shortest round-trip form
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  // The first bound >= v (le is inclusive); NaN lands in +Inf.
  const size_t i = std::isnan(v) ? bounds_.size()
                                 : size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                          bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
          2.5,   5,      10,    30,   60,    120,  300, 600,  1800, 3600};
}

Result<Registry::Family*> Registry::FamilyFor(const std::string& name, Type type,
                                              const std::string& help, const Labels& labels,
                                              const std::vector<double>* bounds) {
  if (!ValidName(name, true) || name.rfind("longctx_", 0) != 0) {
    return InvalidArgument("metric name '{}' is not [a-zA-Z_:][a-zA-Z0-9_:]* starting longctx_",
                           name);
  }
  if (type == Type::kCounter && EndsWith(name, "_total")) {
    return InvalidArgument("counter '{}': give the name without _total (the exposition adds it)",
                           name);
  }
  for (const auto& [k, v] : labels) {
    if (!ValidName(k, false) || k.rfind("__", 0) == 0 || k == "le" || k == "quantile") {
      return InvalidArgument("metric '{}': label name '{}' is not allowed", name, k);
    }
  }
  if (bounds != nullptr) {
    if (bounds->empty()) return InvalidArgument("histogram '{}' has no bucket bound", name);
    for (size_t i = 0; i < bounds->size(); ++i) {
      if (!std::isfinite((*bounds)[i]) || (i > 0 && !((*bounds)[i] > (*bounds)[i - 1]))) {
        return InvalidArgument("histogram '{}': bounds must be finite and strictly increasing",
                               name);
      }
    }
  }
  auto [it, inserted] = families_.try_emplace(name);
  Family& f = it->second;
  if (inserted) {
    f.type = type;
    f.help = help;
    if (bounds != nullptr) f.bounds = *bounds;
  } else if (f.type != type) {
    return InvalidArgument("metric '{}' registered twice with different types", name);
  } else if (bounds != nullptr && f.bounds != *bounds) {
    return InvalidArgument("histogram '{}' registered twice with different bounds", name);
  }
  return &f;
}

Result<Counter*> Registry::AddCounter(const std::string& name, const std::string& help,
                                      const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Family * f, FamilyFor(name, Type::kCounter, help, labels, nullptr));
  auto& slot = f->counters[labels];
  if (!slot) slot = std::make_unique<Counter>();
  return slot.get();
}

Result<Gauge*> Registry::AddGauge(const std::string& name, const std::string& help,
                                  const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Family * f, FamilyFor(name, Type::kGauge, help, labels, nullptr));
  auto& slot = f->gauges[labels];
  if (!slot) slot = std::make_unique<Gauge>();
  return slot.get();
}

Result<Histogram*> Registry::AddHistogram(const std::string& name, const std::string& help,
                                          std::vector<double> bounds, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Family * f, FamilyFor(name, Type::kHistogram, help, labels, &bounds));
  auto& slot = f->histograms[labels];
  if (!slot) slot = std::make_unique<Histogram>(std::move(bounds));
  return slot.get();
}

Counter& Registry::MustCounter(const std::string& name, const std::string& help,
                               const Labels& labels) {
  Result<Counter*> r = AddCounter(name, help, labels);
  if (!r.ok()) Die(r.status());
  return **r;
}
Gauge& Registry::MustGauge(const std::string& name, const std::string& help,
                           const Labels& labels) {
  Result<Gauge*> r = AddGauge(name, help, labels);
  if (!r.ok()) Die(r.status());
  return **r;
}
Histogram& Registry::MustHistogram(const std::string& name, const std::string& help,
                                   std::vector<double> bounds, const Labels& labels) {
  Result<Histogram*> r = AddHistogram(name, help, std::move(bounds), labels);
  if (!r.ok()) Die(r.status());
  return **r;
}

void Registry::AddCollector(std::function<void()> collect) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(collect));
}

std::string Registry::Expose() const {
  std::vector<std::function<void()>> collectors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    collectors = collectors_;
  }
  for (const auto& collect : collectors) collect();
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    const char* type = f.type == Type::kCounter ? "counter"
                       : f.type == Type::kGauge ? "gauge"
                                                : "histogram";
    out += fmt::format("# TYPE {} {}\n", name, type);
    if (!f.help.empty()) out += fmt::format("# HELP {} {}\n", name, Escape(f.help, false));
    for (const auto& [labels, c] : f.counters) {
      out += fmt::format("{}_total{} {}\n", name, LabelText(labels), FormatValue(c->value()));
    }
    for (const auto& [labels, g] : f.gauges) {
      out += fmt::format("{}{} {}\n", name, LabelText(labels), FormatValue(g->value()));
    }
    for (const auto& [labels, h] : f.histograms) {
      // Read every bucket once; the cumulative counts, +Inf and _count come from that one read.
      const std::vector<uint64_t> counts = h->BucketCounts();
      uint64_t cumulative = 0;
      for (size_t i = 0; i < counts.size(); ++i) {
        cumulative += counts[i];
        const std::string le = i < h->bounds().size() ? FormatValue(h->bounds()[i]) : "+Inf";
        out += fmt::format("{}_bucket{} {}\n", name, LabelText(labels, "le", le), cumulative);
      }
      out += fmt::format("{}_count{} {}\n", name, LabelText(labels), cumulative);
      out += fmt::format("{}_sum{} {}\n", name, LabelText(labels), FormatValue(h->sum()));
    }
  }
  out += "# EOF\n";
  return out;
}

}  // namespace longctx::metrics
