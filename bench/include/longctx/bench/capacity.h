// A capacity model of the main job (`longctx run`): per-rank memory, bytes sent per layer,
// prefill seconds and decode ms per token for N tokens on P ranks, predicted from figures
// measured on this machine (a machine profile) and the model's shape. docs/scaling.md.
//
//   longctx bench profile --model M --out machine.json   measure the profile (1-rank runs)
//   longctx plan --tokens N --ranks P --model M --profile machine.json [--json]
//   longctx bench plan --profile machine.json ...         predictions vs measured runs
//
// The model (per rank r of P, rows = N / P, g = the document's global tokens):
//   prefill_seconds  = (b rows^alpha + c g rows) / cores_per_rank + L (bytes / link + k lat)
//   decode per token = (t_tok + t_scan rows Q/(Q+G)) / min(1, core share) + L k' lat
//   peak_rss_bytes   = base + weights + act_row rows + KV(rows) + doc_token N
// where b, alpha, c, t_tok, t_scan, base, act_row and doc_token are fitted to the profile runs,
// cores_per_rank = the rank's share of its node's cores, a thread beyond the first counting as
// the measured thread_gain of a core; the bytes are counted from the
// distributed algorithm (DESIGN.md §2), and KV(rows) honours the device budget and codec.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::bench {

// The model's shape, as the capacity model needs it (from config.json or a builtin).
struct ModelShape {
  int64_t layers = 0, hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0;
  int64_t vocab = 0, window = 0;  // window: the largest layer's
  double global_ratio = 0.1;      // the global budget: min(ratio n, per_log2 ceil(log2 n))
  int64_t global_per_log2 = 16;
  int64_t Globals(int64_t n) const;
  // FLOPs per token and layer of the projections and the MLP (2 per multiply-add).
  double DenseFlopsPerRow() const;
  int64_t WeightBytes() const;  // f32 in memory
  int64_t KvBytesPerRow() const;  // all layers, K and V, f32
};
Result<ModelShape> LoadModelShape(const std::string& model);

struct MachineProfile {
  std::string model, cpu, date_utc;
  int cores = 1;            // cores of the machine measured (one node)
  int threads = 1;          // threads per rank in the profile runs
  // Prefill, one rank, in core-seconds: b n^alpha + c g n; a second thread of a rank adds
  // thread_gain of a core.
  double prefill_row_s = 0, prefill_row_exponent = 1, prefill_global_row_s = 0;
  double thread_gain = 1;
  // Decode, one rank, core-seconds for the whole decode: (Q+G) t_tok + Q n t_scan.
  double decode_token_s = 0, decode_scan_row_s = 0;
  // Memory, one rank: base + act_row n (+ KV) + doc_token n.
  double rss_base_bytes = 0, rss_row_bytes = 0, rss_doc_token_bytes = 0;
  // The interconnect the predictions assume unless told otherwise.
  double link_gbps = 10.0, link_latency_us = 5.0;
  ModelShape shape;  // of the profiled model, to scale to another one by FLOPs
};
Result<MachineProfile> LoadProfile(const std::string& path);
Status SaveProfile(const MachineProfile& p, const std::string& path);

struct PlanQuery {
  int64_t tokens = 1 << 20;
  int ranks = 1;
  int threads = 0;               // per rank; 0 = cores / ranks_per_node (at least 1)
  int cores_per_node = 0;        // 0 = the profile's
  int ranks_per_node = 0;        // 0 = all ranks on one node
  double link_gbps = 0, link_latency_us = 0;  // 0 = the profile's
  double flops = 0;              // FLOP/s per rank (a GPU); 0 = scale the profile's CPU times
  double efficiency = 0.5;       // with --flops: the share of it the model reaches
  double mem_gbps = 0;           // with --flops: memory GB/s; a decoded token reads the weights
                                 // and the KV rows it scans at least once (0 = not modelled)
  int64_t query_tokens = 34, generate = 16;
  int64_t kv_device_budget = -1;  // bytes per rank; -1 = everything resident
  std::string kv_codec = "f32";   // what spills: f32 | f16 | int8
};

struct PlanResult {
  int64_t rows_per_rank = 0, globals = 0;
  double prefill_seconds = 0, decode_ms_per_token = 0;
  int64_t peak_rss_bytes = 0;         // per rank
  int64_t comm_bytes_per_layer = 0;   // received by the busiest rank in one prefill layer
  double compute_seconds = 0, comm_seconds = 0, cores_per_rank = 0;
  int64_t weight_bytes = 0, activation_bytes = 0, kv_bytes = 0;
};

Result<PlanResult> Predict(const MachineProfile& profile, const ModelShape& model,
                           const PlanQuery& q);
std::string PlanJson(const PlanQuery& q, const PlanResult& r);

// `longctx bench profile`: one-rank runs of `longctx run` at several lengths, fitted.
struct ProfileOptions {
  std::string model = "builtin:tiny";
  std::string out = "machine.json";
  std::vector<int64_t> tokens = {32768, 131072, 524288};
  int threads = 1;
  double link_gbps = 10.0, link_latency_us = 5.0;
  std::string binary = "/proc/self/exe";
};
Status RunProfileBench(const ProfileOptions& o);

// `longctx bench plan`: measured runs at ranks x tokens against the predictions.
struct PlanBenchOptions {
  std::string model = "builtin:tiny";
  std::string profile = "machine.json";
  std::vector<int> ranks = {1, 2, 4};
  std::vector<int64_t> tokens = {131072, 1048576};
  std::string json;  // write the table here too
  std::string binary = "/proc/self/exe";
  std::string mpirun_args =
      "--oversubscribe --allow-run-as-root --mca btl self,vader,tcp --mca btl_tcp_if_include lo "
      "--mca oob_tcp_if_include lo --mca pml ob1";
};
Status RunPlanBench(const PlanBenchOptions& o);

}  // namespace longctx::bench
