#include "longctx/attention/shard_plan.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>

#include <fmt/format.h>

namespace longctx::attention {
namespace {

// Streams the cost model over tokens 0..n-1: fn(i, cost_i). Two pointers over the globals
// keep it O(n + g) time and O(1) extra memory.
template <typename Fn>
void ForEachTokenCost(int64_t n, std::span<const int64_t> g, const AttentionSpec& spec, Fn fn) {
  const int64_t W = spec.window, ng = int64_t(g.size());
  size_t le = 0;                 // globals[0, le) are <= i
  size_t wlo = 0, whi = 0;       // globals[wlo, whi) lie in the window of i
  for (int64_t i = 0; i < n; ++i) {
    while (le < g.size() && g[le] <= i) ++le;
    const int64_t lo = std::max<int64_t>(0, i - W + 1);
    const int64_t hi = spec.causal ? i + 1 : std::min(n, i + W);  // window = [lo, hi)
    while (wlo < g.size() && g[wlo] < lo) ++wlo;
    if (whi < wlo) whi = wlo;
    while (whi < g.size() && g[whi] < hi) ++whi;
    const bool is_global = le > 0 && g[le - 1] == i;
    int64_t c = hi - lo;  // window keys (a global query's window component, on its owner)
    if (!is_global) c += (spec.causal ? int64_t(le) : ng) - int64_t(whi - wlo);
    // As a key, i is read by the global queries that see it; their partials over i run here.
    c += spec.causal ? ng - int64_t(is_global ? le - 1 : le) : ng;
    fn(i, c);
  }
}

}  // namespace

int ShardPlan::Owner(int64_t t) const {
  const auto it = std::upper_bound(bounds.begin() + 1, bounds.end(), t);
  return int(it - (bounds.begin() + 1));
}

std::pair<int64_t, int64_t> ShardPlan::KeyRange(int r) const {
  const int64_t s = begin(r), e = end(r);
  if (s == e) return {s, s};
  const int64_t lo = std::max<int64_t>(0, s - window + 1);
  const int64_t hi = causal ? e : std::min(n, e + window - 1);
  return {lo, hi};
}

std::string ShardPlan::ToString() const {
  std::string out = fmt::format("shard plan: n={} window={} {} ranks={}\n", n, window,
                                causal ? "causal" : "bidirectional", ranks());
  int64_t total = 0;
  for (int64_t c : cost) total += c;
  for (int r = 0; r < ranks(); ++r) {
    const auto [lo, hi] = KeyRange(r);
    out += fmt::format("  rank {:>3}: tokens [{}, {}) ({} rows), keys [{}, {}), cost {} ({:.1f}%)\n",
                       r, begin(r), end(r), rows(r), lo, hi, cost[size_t(r)],
                       total ? 100.0 * double(cost[size_t(r)]) / double(total) : 0.0);
  }
  return out;
}

std::string ShardPlan::Serialize() const {
  return fmt::format("longctx-shard-plan/1 n={} window={} causal={} bounds={} cost={}", n, window,
                     causal ? 1 : 0, fmt::join(bounds, ","), fmt::join(cost, ","));
}

Result<ShardPlan> ShardPlan::Parse(std::string_view text) {
  constexpr std::string_view kMagic = "longctx-shard-plan/1";
  if (text.substr(0, kMagic.size()) != kMagic) {
    return InvalidArgument("shard plan: expected '{}' at the start", kMagic);
  }
  ShardPlan p;
  bool have_n = false, have_w = false, have_c = false, have_b = false, have_cost = false;
  auto parse_int = [](std::string_view s, int64_t* v) {
    const auto r = std::from_chars(s.data(), s.data() + s.size(), *v);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
  };
  auto parse_list = [&](std::string_view s, std::vector<int64_t>* v) {
    v->clear();
    while (!s.empty()) {
      const size_t comma = s.find(',');
      int64_t x;
      if (!parse_int(s.substr(0, comma), &x)) return false;
      v->push_back(x);
      if (comma == std::string_view::npos) break;
      s.remove_prefix(comma + 1);
    }
    return !v->empty();
  };
  std::string_view rest = text.substr(kMagic.size());
  while (!rest.empty()) {
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\n')) rest.remove_prefix(1);
    if (rest.empty()) break;
    const size_t sp = rest.find_first_of(" \n");
    const std::string_view field = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp);
    const size_t eq = field.find('=');
    if (eq == std::string_view::npos) return InvalidArgument("shard plan: bad field '{}'", field);
    const std::string_view key = field.substr(0, eq), val = field.substr(eq + 1);
    int64_t x = 0;
    bool ok = true;
    if (key == "n") ok = have_n = parse_int(val, &p.n);
    else if (key == "window") ok = have_w = parse_int(val, &p.window);
    else if (key == "causal") { ok = have_c = parse_int(val, &x) && (x == 0 || x == 1); p.causal = x == 1; }
    else if (key == "bounds") ok = have_b = parse_list(val, &p.bounds);
    else if (key == "cost") ok = have_cost = parse_list(val, &p.cost);
    else return InvalidArgument("shard plan: unknown field '{}'", key);
    if (!ok) return InvalidArgument("shard plan: bad value in '{}'", field);
  }
  if (!(have_n && have_w && have_c && have_b && have_cost)) {
    return InvalidArgument("shard plan: needs n, window, causal, bounds and cost");
  }
  if (p.n < 0 || p.window < 1 || p.bounds.size() < 2 || p.cost.size() + 1 != p.bounds.size() ||
      p.bounds.front() != 0 || p.bounds.back() != p.n ||
      !std::is_sorted(p.bounds.begin(), p.bounds.end())) {
    return InvalidArgument("shard plan: inconsistent (bounds must run 0..n, one cost per rank)");
  }
  return p;
}

Result<ShardPlan> MakeShardPlan(int64_t n, std::span<const int64_t> globals,
                                const AttentionSpec& spec, int ranks) {
  if (ranks < 1) return InvalidArgument("shard plan: ranks must be >= 1, got {}", ranks);
  if (n < 0) return InvalidArgument("shard plan: n must be >= 0, got {}", n);
  if (spec.window < 1) return InvalidArgument("shard plan: window must be >= 1");
  for (size_t i = 0; i < globals.size(); ++i) {
    if (globals[i] < 0 || globals[i] >= n || (i > 0 && globals[i] <= globals[i - 1])) {
      return InvalidArgument("shard plan: globals must be sorted, unique and in [0, {})", n);
    }
  }
  ShardPlan p;
  p.n = n;
  p.window = spec.window;
  p.causal = spec.causal;
  p.bounds.assign(size_t(ranks) + 1, n);
  p.bounds[0] = 0;
  p.cost.assign(size_t(ranks), 0);
  int64_t total = 0;
  ForEachTokenCost(n, globals, spec, [&](int64_t, int64_t c) { total += c; });
  // Boundary r goes where the prefix cost is closest to r*total/ranks: token i starts a new
  // shard when more than half of its cost would fall past the target.
  int r = 1;
  int64_t prefix = 0;
  ForEachTokenCost(n, globals, spec, [&](int64_t i, int64_t c) {
    // 128-bit: with every token global the total grows as n^2.
    __extension__ typedef __int128 Wide;
    while (r < ranks && Wide(2) * prefix * ranks + Wide(c) * ranks > Wide(2) * r * total) {
      p.bounds[size_t(r)] = i;
      ++r;
    }
    prefix += c;
    p.cost[size_t(r - 1)] += c;
  });
  return p;
}

}  // namespace longctx::attention
