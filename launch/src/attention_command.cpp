// `longctx attention`: hybrid attention of Q/K/V arrays read from .npy files (DESIGN.md §1, §5).
// Also `--make-sample DIR`, which writes a deterministic random Q/K/V/globals set so the
// command can be tried (and checked with --check) without any other tool.
#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "longctx/attention/hybrid_attention.h"
#include "longctx/attention/reference.h"
#include "longctx/comm/communicator.h"
#include "longctx/core/npy.h"
#include "longctx/worker/distributed_attention.h"

namespace longctx::cli {
namespace {

struct AttentionFlags {
  std::string q, k, v, globals, out, lse;
  int64_t window = 64;
  bool bidirectional = false;
  std::string fusion = "union";
  double scale = 0.0;
  int threads = 0;
  std::string isa = "auto";
  bool check = false;
  bool stats = false;
  // --make-sample
  std::string sample_dir;
  int64_t n = 4096, heads = 8, kv_heads = 2, head_dim = 64;
  uint64_t seed = 1;
};

// Q/K/V arrays are [n, heads, head_dim] float32 or float16.
Status CheckTokenArray(const std::vector<int64_t>& shape, DType dtype, const std::string& path,
                       std::string_view name) {
  if (shape.size() != 3) {
    return InvalidArgument("{}: {} must have 3 dimensions [n, heads, head_dim], got {}", path,
                           name, shape.size());
  }
  if (dtype != DType::kF32 && dtype != DType::kF16) {
    return InvalidArgument("{}: {} must be float32 or float16, got {}", path, name,
                           DTypeName(dtype));
  }
  return Status::Ok();
}

Result<attention::TokenView> ViewOf(const NpyArray& a, const std::string& path,
                                    std::string_view name) {
  RETURN_IF_ERROR(CheckTokenArray(a.shape, a.dtype, path, name));
  return attention::TokenView::Dense(a.data.data(), a.dtype, a.shape[0], a.shape[1], a.shape[2]);
}

Result<attention::TokenView> ViewOf(const MappedNpy& a, const std::string& path,
                                    std::string_view name) {
  const NpyHeader& h = a.header();
  RETURN_IF_ERROR(CheckTokenArray(h.shape, h.dtype, path, name));
  return attention::TokenView::Dense(a.data(), h.dtype, h.shape[0], h.shape[1], h.shape[2]);
}

// Non-finite inputs would give NaN outputs silently; refuse them with the first position.
// Scans [n, H, d] elements at `data` in parallel slices; the error names the first bad one.
Status CheckFinite(const void* data, DType dtype, const std::vector<int64_t>& shape,
                   const std::string& path, ThreadPool* pool) {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;
  constexpr int64_t kSlice = int64_t{1} << 20;  // elements per task
  const int64_t tasks = (n + kSlice - 1) / kSlice;
  std::vector<int64_t> first_bad(size_t(tasks), -1);
  auto scan = [&](int64_t t, int) {
    const int64_t lo = t * kSlice, hi = std::min(n, lo + kSlice);
    // Branch-free over the slice on the exponent bits (all ones = inf or NaN), which the
    // compiler vectorises; the position is searched only when the slice has a bad value.
    if (dtype == DType::kF32) {
      const uint32_t* x = static_cast<const uint32_t*>(data);
      uint32_t bad = 0;
      for (int64_t i = lo; i < hi; ++i) bad |= uint32_t((x[i] & 0x7f800000u) == 0x7f800000u);
      if (!bad) return;
    } else {
      const uint16_t* x = static_cast<const uint16_t*>(data);
      uint32_t bad = 0;
      for (int64_t i = lo; i < hi; ++i) bad |= uint32_t((x[i] & 0x7c00u) == 0x7c00u);
      if (!bad) return;
    }
    for (int64_t i = lo; i < hi; ++i) {
      const float x = dtype == DType::kF32 ? static_cast<const float*>(data)[i]
                                           : HalfToFloat(static_cast<const uint16_t*>(data)[i]);
      if (!std::isfinite(x)) {
        first_bad[size_t(t)] = i;
        return;
      }
    }
  };
  if (pool) {
    pool->ParallelFor(tasks, scan);
  } else {
    for (int64_t t = 0; t < tasks; ++t) scan(t, 0);
  }
  for (int64_t i : first_bad) {
    if (i < 0) continue;
    const float x = dtype == DType::kF32 ? static_cast<const float*>(data)[i]
                                         : HalfToFloat(static_cast<const uint16_t*>(data)[i]);
    const int64_t inner = shape[1] * shape[2];
    return InvalidArgument("{}: non-finite value {} at [{}, {}, {}]", path, x, i / inner,
                           (i % inner) / shape[2], i % shape[2]);
  }
  return Status::Ok();
}

Status CheckFinite(const NpyArray& a, const std::string& path) {
  return CheckFinite(a.data.data(), a.dtype, a.shape, path, nullptr);
}

Result<std::vector<int64_t>> ReadGlobals(const std::string& path) {
  std::vector<int64_t> g;
  if (path.empty()) return g;
  ASSIGN_OR_RETURN(NpyArray a, ReadNpy(path));
  if (a.shape.size() != 1) {
    return InvalidArgument("{}: globals must be a 1-D array, got {} dimensions", path,
                           a.shape.size());
  }
  if (a.dtype == DType::kI64) {
    g.assign(a.as<int64_t>(), a.as<int64_t>() + a.numel());
  } else if (a.dtype == DType::kI32) {
    g.assign(a.as<int32_t>(), a.as<int32_t>() + a.numel());
  } else {
    return InvalidArgument("{}: globals must be int32 or int64, got {}", path, DTypeName(a.dtype));
  }
  return g;
}

Status MakeSample(const AttentionFlags& f) {
  if (f.n < 1 || f.heads < 1 || f.kv_heads < 1 || f.head_dim < 1 || f.heads % f.kv_heads) {
    return InvalidArgument("sample shape: need n, heads, kv-heads, head-dim >= 1 and heads % "
                           "kv-heads == 0");
  }
  std::error_code ec;
  std::filesystem::create_directories(f.sample_dir, ec);
  if (ec) return InvalidArgument("{}: cannot create directory: {}", f.sample_dir, ec.message());
  std::mt19937_64 rng(f.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](int64_t heads) {
    std::vector<float> x(size_t(f.n * heads * f.head_dim));
    for (float& e : x) e = normal(rng);
    return x;
  };
  const std::vector<float> q = fill(f.heads), k = fill(f.kv_heads), v = fill(f.kv_heads);
  // Globals within DESIGN.md §1's default budget, min(ceil(0.1 n), 16 ceil(log2 n)): 4 sinks,
  // then evenly spaced positions standing in for sentence ends.
  const int64_t budget = std::min<int64_t>(
      (f.n + 9) / 10, 16 * int64_t(std::ceil(std::log2(double(std::max<int64_t>(2, f.n))))));
  std::vector<int64_t> g;
  for (int64_t i = 0; i < std::min<int64_t>(4, budget); ++i) g.push_back(i);
  const int64_t rest = budget - int64_t(g.size());
  for (int64_t r = 0; r < rest; ++r) g.push_back(4 + (r + 1) * (f.n - 4) / (rest + 1));
  std::sort(g.begin(), g.end());
  g.erase(std::unique(g.begin(), g.end()), g.end());
  const std::string d = f.sample_dir + "/";
  RETURN_IF_ERROR(WriteNpy(d + "q.npy", DType::kF32, {f.n, f.heads, f.head_dim}, q.data()));
  RETURN_IF_ERROR(WriteNpy(d + "k.npy", DType::kF32, {f.n, f.kv_heads, f.head_dim}, k.data()));
  RETURN_IF_ERROR(WriteNpy(d + "v.npy", DType::kF32, {f.n, f.kv_heads, f.head_dim}, v.data()));
  RETURN_IF_ERROR(WriteNpy(d + "globals.npy", DType::kI64, {int64_t(g.size())}, g.data()));
  fmt::print("wrote {}{{q,k,v,globals}}.npy: n={} heads={} kv_heads={} head_dim={} globals={}\n",
             d, f.n, f.heads, f.kv_heads, f.head_dim, g.size());
  return Status::Ok();
}

struct Resolved {
  attention::AttentionSpec spec;
  attention::Isa isa = attention::Isa::kAuto;
};

Result<Resolved> ResolveFlags(const AttentionFlags& f) {
  if (f.q.empty() || f.k.empty() || f.v.empty() || f.out.empty()) {
    return InvalidArgument("--q, --k, --v and --out are required (or --make-sample DIR)");
  }
  Resolved r;
  r.spec.window = f.window;
  r.spec.causal = !f.bidirectional;
  r.spec.scale = float(f.scale);
  if (f.window < 1) return InvalidArgument("--window must be >= 1, got {}", f.window);
  if (!std::isfinite(f.scale) || f.scale < 0.0) {
    return InvalidArgument("--scale must be a positive number (0 = 1/sqrt(d)), got {}", f.scale);
  }
  RETURN_IF_ERROR(attention::ParseFusion(f.fusion, &r.spec));
  ASSIGN_OR_RETURN(r.isa, attention::ParseIsa(f.isa));
  if (r.isa != attention::Isa::kAuto && !attention::IsaSupported(r.isa)) {
    return InvalidArgument("--isa {} is not supported on this CPU/build", f.isa);
  }
  if (f.threads < 0) return InvalidArgument("--threads must be >= 0, got {}", f.threads);
  return r;
}

// Spot-checks written outputs against the float64 reference: every global row and up to 512
// others spread over the sequence (the reference is O(n) per row). Reads the whole inputs.
Status CheckAgainstReference(const AttentionFlags& f, const attention::AttentionSpec& spec,
                             const std::vector<int64_t>& globals, const float* out,
                             const float* lse) {
  ASSIGN_OR_RETURN(NpyArray q, ReadNpy(f.q));
  ASSIGN_OR_RETURN(NpyArray k, ReadNpy(f.k));
  ASSIGN_OR_RETURN(NpyArray v, ReadNpy(f.v));
  ASSIGN_OR_RETURN(attention::TokenView qv, ViewOf(q, f.q, "q"));
  ASSIGN_OR_RETURN(attention::TokenView kv, ViewOf(k, f.k, "k"));
  ASSIGN_OR_RETURN(attention::TokenView vv, ViewOf(v, f.v, "v"));
  const int64_t n = qv.rows, H = qv.heads, d = qv.head_dim;
  std::vector<int64_t> rows(globals.begin(), globals.end());
  const int64_t step = std::max<int64_t>(1, n / 512);
  for (int64_t i = 0; i < n; i += step) rows.push_back(i);
  rows.push_back(n - 1);
  std::vector<float> ref(rows.size() * size_t(H * d)), ref_lse(rows.size() * size_t(H));
  RETURN_IF_ERROR(attention::ReferenceAttentionRows(qv, kv, vv, globals, spec, rows, ref.data(),
                                                    ref_lse.data()));
  double worst = 0.0, worst_lse = 0.0;
  for (size_t ri = 0; ri < rows.size(); ++ri) {
    for (int64_t h = 0; h < H; ++h) {
      const float* o = out + (rows[ri] * H + h) * d;
      const float* r = ref.data() + (int64_t(ri) * H + h) * d;
      double err = 0.0, mag = 1e-30;
      for (int64_t e = 0; e < d; ++e) {
        err = std::max(err, double(std::fabs(o[e] - r[e])));
        mag = std::max(mag, double(std::fabs(r[e])));
      }
      worst = std::max(worst, err / mag);
      const double lr = ref_lse[ri * size_t(H) + size_t(h)];
      worst_lse = std::max(worst_lse, std::fabs(double(lse[rows[ri] * H + h]) - lr) /
                                          std::max(1.0, std::fabs(lr)));
    }
  }
  fmt::print("check vs float64 reference on {} rows: max relative error {:.3g} (output), "
             "{:.3g} (lse)\n", rows.size(), worst, worst_lse);
  if (worst > 1e-5 || worst_lse > 1e-5) {
    return Internal("result differs from the float64 reference by more than 1e-5");
  }
  return Status::Ok();
}

// Streams finished output chunks to the .npy file on a writer thread while the next chunk is
// computed: kSlots chunk buffers are lent to the kernel in turn, so the process never holds
// (or zero-fills) an [n, H, d] output and the file write overlaps the computation. The lse
// ([n, H], 1/d of the output) is gathered whole for --lse and --check.
class StreamingSink : public attention::ChunkSink {
 public:
  static constexpr int kSlots = 3;
  StreamingSink(NpyRowStream* out, int64_t H, int64_t d, float* lse_all)
      : out_(out), H_(H), d_(d), lse_all_(lse_all) {
    writer_ = std::thread([this] { WriterLoop(); });
  }
  ~StreamingSink() override { (void)Finish(); }

  Result<Buffer> Acquire(int64_t row0, int64_t rows) override {
    Slot& s = slots_[size_t(next_ % kSlots)];
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !s.pending || !status_.ok(); });
    if (!status_.ok()) return status_;
    s.row0 = row0;
    s.rows = rows;
    // Sized by the first chunk (the largest); each slot is faulted in once and then reused.
    if (s.out.size() < size_t(rows * H_ * d_)) {
      s.out.resize(size_t(rows * H_ * d_));
      s.lse.resize(size_t(rows * H_));
    }
    return Buffer{s.out.data(), s.lse.data()};
  }

  Status Done(int64_t, int64_t) override {
    Slot& s = slots_[size_t(next_++ % kSlots)];
    std::memcpy(lse_all_ + s.row0 * H_, s.lse.data(), size_t(s.rows * H_) * sizeof(float));
    std::lock_guard lock(mu_);
    s.pending = true;
    queue_.push_back(&s);
    cv_.notify_all();
    return status_;
  }

  // Waits for every queued chunk to be written; the first write error, if any.
  Status Finish() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    if (writer_.joinable()) writer_.join();
    return status_;
  }

 private:
  struct Slot {
    std::vector<float> out, lse;
    int64_t row0 = 0, rows = 0;
    bool pending = false;  // queued or being written; guarded by mu_
  };

  void WriterLoop() {
    for (;;) {
      Slot* s = nullptr;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty() || stop_; });
        if (queue_.empty()) return;
        s = queue_.front();
        queue_.pop_front();
      }
      Status st = status_.ok() ? out_->Append(s->out.data(), s->rows) : Status::Ok();
      std::lock_guard lock(mu_);
      if (!st.ok() && status_.ok()) status_ = st;
      s->pending = false;
      cv_.notify_all();
    }
  }

  NpyRowStream* out_;
  const int64_t H_, d_;
  float* lse_all_;
  std::array<Slot, kSlots> slots_;
  int64_t next_ = 0;  // chunks handed out (compute thread only)
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Slot*> queue_;
  bool stop_ = false;
  Status status_;  // the first write error; guarded by mu_
  std::thread writer_;
};

// One process: the inputs are mapped (no copy, no zero-filled buffer), the output is computed
// in row chunks and streamed to the file as it is produced (HybridAttentionInChunks).
Status RunSingle(const AttentionFlags& f, const Resolved& r) {
  const attention::AttentionSpec& spec = r.spec;
  const auto t_start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(MappedNpy q, MappedNpy::Open(f.q));
  ASSIGN_OR_RETURN(MappedNpy k, MappedNpy::Open(f.k));
  ASSIGN_OR_RETURN(MappedNpy v, MappedNpy::Open(f.v));
  ASSIGN_OR_RETURN(std::vector<int64_t> globals, ReadGlobals(f.globals));
  ASSIGN_OR_RETURN(attention::TokenView qv, ViewOf(q, f.q, "q"));
  ASSIGN_OR_RETURN(attention::TokenView kv, ViewOf(k, f.k, "k"));
  ASSIGN_OR_RETURN(attention::TokenView vv, ViewOf(v, f.v, "v"));
  if (k.header().shape != v.header().shape || k.header().dtype != v.header().dtype) {
    return InvalidArgument("{} and {}: k and v must have the same shape and dtype", f.k, f.v);
  }
  ThreadPool pool(f.threads);
  RETURN_IF_ERROR(CheckFinite(q.data(), q.header().dtype, q.header().shape, f.q, &pool));
  RETURN_IF_ERROR(CheckFinite(k.data(), k.header().dtype, k.header().shape, f.k, &pool));
  RETURN_IF_ERROR(CheckFinite(v.data(), v.header().dtype, v.header().shape, f.v, &pool));
  RETURN_IF_ERROR(attention::ValidateAttentionInputs(qv, kv, vv, globals, spec));
  const double prepare_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();

  const int64_t n = qv.rows, H = qv.heads, d = qv.head_dim;
  // About 4096 rows x H x d floats per chunk (4 MiB at H = 4, d = 64): small enough to stay
  // warm in the cache hierarchy between kernel and writer, large enough that one write() per
  // chunk costs nothing.
  constexpr int64_t kChunkRows = 4096;
  std::vector<float> lse(size_t(n * H));
  ASSIGN_OR_RETURN(NpyRowStream out_file, NpyRowStream::Create(f.out, DType::kF32, {n, H, d}));
  attention::ExecOptions exec{&pool, r.isa};
  const auto t0 = std::chrono::steady_clock::now();
  StreamingSink sink(&out_file, H, d, lse.data());
  Status st = attention::HybridAttentionInChunks(qv, kv, vv, globals, spec, kChunkRows, sink, exec);
  const Status written = sink.Finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  RETURN_IF_ERROR(st);
  RETURN_IF_ERROR(written);
  RETURN_IF_ERROR(out_file.Commit());
  if (!f.lse.empty()) RETURN_IF_ERROR(WriteNpy(f.lse, DType::kF32, {n, H}, lse.data()));
  const double total =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  const double pairs = double(attention::AllowedPairs(n, H, globals, spec));
  fmt::print("attention n={} heads={}/{} head_dim={} globals={} {} isa={} threads={}: "
             "{:.3f} s, {:.2f} GFLOP/s (allowed pairs x 4d); {:.3f} s in all: inputs mapped and "
             "checked {:.3f} s, computed and streamed {:.3f} s, committed {:.3f} s\n",
             n, H, kv.heads, d, globals.size(), spec.ToString(),
             attention::IsaName(r.isa == attention::Isa::kAuto ? attention::BestIsa() : r.isa),
             pool.size(), secs, pairs * 4.0 * double(d) / secs * 1e-9, total, prepare_s, secs,
             total - prepare_s - secs);
  if (f.check) {
    ASSIGN_OR_RETURN(MappedNpy o, MappedNpy::Open(f.out));
    RETURN_IF_ERROR(CheckAgainstReference(f, spec, globals,
                                          reinterpret_cast<const float*>(o.data()), lse.data()));
  }
  return Status::Ok();
}

// ---- mpirun -np P longctx attention ---------------------------------------------------------


// Reads this rank's rows [s, e) of a [n, heads, d] float array.
Result<NpyArray> ReadShard(const std::string& path, std::string_view name, int64_t s, int64_t e) {
  ASSIGN_OR_RETURN(NpyArray a, ReadNpyRows(path, s, e));
  RETURN_IF_ERROR(CheckTokenArray(a.shape, a.dtype, path, name));
  RETURN_IF_ERROR(CheckFinite(a, path));
  return a;
}

Status RunDistributed(const AttentionFlags& f, const Resolved& r, comm::Communicator& c) {
  const attention::AttentionSpec& spec = r.spec;
  const int P = c.size(), me = c.rank();
  // Every rank reads the headers and the (small) globals; then plans the same shards.
  std::vector<int64_t> globals;
  attention::ShardPlan plan;
  NpyHeader qh, kh, vh;
  Status st = [&]() -> Status {
    ASSIGN_OR_RETURN(qh, ReadNpyHeader(f.q));
    ASSIGN_OR_RETURN(kh, ReadNpyHeader(f.k));
    ASSIGN_OR_RETURN(vh, ReadNpyHeader(f.v));
    RETURN_IF_ERROR(CheckTokenArray(qh.shape, qh.dtype, f.q, "q"));
    RETURN_IF_ERROR(CheckTokenArray(kh.shape, kh.dtype, f.k, "k"));
    RETURN_IF_ERROR(CheckTokenArray(vh.shape, vh.dtype, f.v, "v"));
    if (kh.shape != vh.shape || kh.dtype != vh.dtype) {
      return InvalidArgument("{} and {}: k and v must have the same shape and dtype", f.k, f.v);
    }
    ASSIGN_OR_RETURN(globals, ReadGlobals(f.globals));
    const int64_t n = qh.shape[0];
    if (kh.shape[0] != n) return InvalidArgument("q has {} tokens but k/v have {}", n, kh.shape[0]);
    ASSIGN_OR_RETURN(plan, attention::MakeShardPlan(n, globals, spec, P));
    return Status::Ok();
  }();
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
  const int64_t n = qh.shape[0], H = qh.shape[1], Hkv = kh.shape[1], d = qh.shape[2];
  const int64_t s = plan.begin(me), e = plan.end(me);

  // Each rank reads only its own rows (positioned reads).
  NpyArray q, k, v;
  st = [&]() -> Status {
    ASSIGN_OR_RETURN(q, ReadShard(f.q, "q", s, e));
    ASSIGN_OR_RETURN(k, ReadShard(f.k, "k", s, e));
    ASSIGN_OR_RETURN(v, ReadShard(f.v, "v", s, e));
    // Shapes are checked on every rank with the full n, so the error is the same everywhere.
    // Validation reads no element: the views only need a non-null address.
    static const float kNoElements = 0.0f;
    const auto qv = attention::TokenView::Dense(&kNoElements, qh.dtype, n, H, d);
    const auto kv = attention::TokenView::Dense(&kNoElements, kh.dtype, n, Hkv, kh.shape[2]);
    return attention::ValidateAttentionInputs(qv, kv, kv, globals, spec);
  }();
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));

  const int64_t rows = e - s;
  std::vector<float> out(size_t(rows * H * d)), lse(size_t(rows * H));
  ThreadPool pool(f.threads);
  attention::ExecOptions exec{&pool, r.isa};
  worker::ShardTensors shard{attention::TokenView::Dense(q.data.data(), q.dtype, rows, H, d),
                             attention::TokenView::Dense(k.data.data(), k.dtype, rows, Hkv, d),
                             attention::TokenView::Dense(v.data.data(), v.dtype, rows, Hkv, d)};
  worker::DistributedStats stats;
  MaybeKillForTest(c);
  st = worker::DistributedAttention(c, plan, globals, spec, shard, out.data(), lse.data(), exec,
                                    &stats);
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));

  // One output file, written by every rank at its rows, renamed into place when complete.
  const auto deadline = [] { return comm::DeadlineIn(comm::DefaultTimeout()); };
  st = Status::Ok();
  if (me == 0) {
    st = CreateNpyForRows(f.out, DType::kF32, {n, H, d});
    if (st.ok() && !f.lse.empty()) st = CreateNpyForRows(f.lse, DType::kF32, {n, H});
  }
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
  st = WriteNpyRows(f.out, s, rows, out.data());
  if (st.ok() && !f.lse.empty()) st = WriteNpyRows(f.lse, s, rows, lse.data());
  Status agreed = comm::AgreeOnStatus(c, st);
  if (agreed.ok() && me == 0) {
    st = CommitNpyRows(f.out);
    if (st.ok() && !f.lse.empty()) st = CommitNpyRows(f.lse);
  }
  if (agreed.ok()) agreed = comm::AgreeOnStatus(c, st);
  if (!agreed.ok()) {
    if (me == 0) {
      AbortNpyRows(f.out);
      if (!f.lse.empty()) AbortNpyRows(f.lse);
    }
    return agreed;
  }

  // Stats and the summary, printed by rank 0.
  std::vector<worker::DistributedStats> all(static_cast<size_t>(P));
  std::vector<size_t> counts(static_cast<size_t>(P), sizeof(worker::DistributedStats));
  RETURN_IF_ERROR(c.AllGatherV(comm::HostBuffer(&stats, sizeof stats),
                               comm::HostBuffer(all.data(), all.size() * sizeof stats), counts,
                               deadline()));
  if (me == 0) {
    double slowest = 0.0;
    for (const auto& x : all) slowest = std::max(slowest, x.total_seconds);
    const double pairs = double(attention::AllowedPairs(n, H, globals, spec));
    fmt::print("attention n={} heads={}/{} head_dim={} globals={} {} ranks={} threads/rank={}: "
               "{:.3f} s, {:.2f} GFLOP/s (allowed pairs x 4d)\n",
               n, H, Hkv, d, globals.size(), spec.ToString(), P, pool.size(), slowest,
               pairs * 4.0 * double(d) / slowest * 1e-9);
    if (f.stats) {
      fmt::print("{}", plan.ToString());
      const size_t kv_row = size_t(Hkv * d) * DTypeSize(kh.dtype);
      const size_t g = globals.size();
      fmt::print("per-rank traffic (DESIGN.md §2 bound per rank: halo <= {} B, globals {} B K/V + "
                 "{} B Q, partials O(g*H*(d+1)*4*P) at owners):\n",
                 2 * size_t(2 * (spec.window - 1)) * kv_row, 2 * g * kv_row,
                 g * size_t(H * d) * DTypeSize(qh.dtype));
      for (const auto& x : all) fmt::print("{}", worker::FormatStats(x));
    }
  }
  if (f.check && me == 0) {
    ASSIGN_OR_RETURN(NpyArray o_all, ReadNpy(f.out));
    std::vector<float> l_all;
    if (!f.lse.empty()) {
      ASSIGN_OR_RETURN(NpyArray la, ReadNpy(f.lse));
      l_all.assign(la.as<float>(), la.as<float>() + la.numel());
    } else {
      return InvalidArgument("--check with several ranks needs --lse");
    }
    RETURN_IF_ERROR(CheckAgainstReference(f, spec, globals, o_all.as<float>(), l_all.data()));
  }
  return Status::Ok();
}

Status RunAttention(const AttentionFlags& f) {
  if (!f.sample_dir.empty()) return MakeSample(f);
  ASSIGN_OR_RETURN(Resolved r, ResolveFlags(f));
  if (!comm::LaunchedByMpi()) return RunSingle(f, r);
  ASSIGN_OR_RETURN(std::shared_ptr<comm::Communicator> world, comm::WorldCommunicator("auto"));
  return RunDistributed(f, r, *world);
}

}  // namespace

Runner AddAttentionCommand(CLI::App& app) {
  auto f = std::make_shared<AttentionFlags>();
  app.add_option("--q", f->q, "queries [n, H, d] .npy (float32 or float16)");
  app.add_option("--k", f->k, "keys [n, Hkv, d] .npy");
  app.add_option("--v", f->v, "values [n, Hkv, d] .npy");
  app.add_option("--globals", f->globals, "global positions: 1-D sorted unique int32/int64 .npy");
  app.add_option("--window", f->window, "window W in tokens (causal: i-W < j <= i)")
      ->capture_default_str();
  app.add_flag("--bidirectional", f->bidirectional, "bidirectional window |i-j| < W");
  app.add_option("--fusion", f->fusion, "union | weighted:A")->capture_default_str();
  app.add_option("--scale", f->scale, "softmax scale (default 1/sqrt(d))");
  app.add_option("--out", f->out, "output O [n, H, d] float32 .npy");
  app.add_option("--lse", f->lse, "log-sum-exp L [n, H] float32 .npy (natural log)");
  app.add_option("--threads", f->threads, "worker threads (0 = all cores)")->capture_default_str();
  app.add_option("--isa", f->isa, "auto | avx512 | avx2 | generic")->capture_default_str();
  app.add_flag("--check", f->check, "also run the float64 reference and report the error");
  app.add_flag("--stats", f->stats, "under mpirun: the shard plan and per-rank bytes per phase");
  app.add_option("--make-sample", f->sample_dir, "write a random sample q/k/v/globals to DIR");
  app.add_option("--n", f->n, "sample: tokens")->capture_default_str();
  app.add_option("--heads", f->heads, "sample: query heads")->capture_default_str();
  app.add_option("--kv-heads", f->kv_heads, "sample: kv heads")->capture_default_str();
  app.add_option("--head-dim", f->head_dim, "sample: head dim")->capture_default_str();
  app.add_option("--seed", f->seed, "sample: random seed")->capture_default_str();
  return [f] { return RunAttention(*f); };
}

}  // namespace longctx::cli
