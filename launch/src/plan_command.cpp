// `longctx plan`: the capacity model's prediction for N tokens on P ranks (bench/capacity.h,
// docs/scaling.md): per-rank memory, bytes per layer, prefill seconds, decode ms per token.
#include <fmt/format.h>

#include "commands.h"
#include "longctx/bench/capacity.h"
#include "longctx/core/byte_size.h"

namespace longctx::cli {
namespace {

struct PlanFlags {
  bench::PlanQuery q;
  std::string model = "builtin:tiny", profile, kv_budget;
  bool json = false;
};

Status RunPlan(PlanFlags& f) {
  if (f.profile.empty()) {
    return InvalidArgument("--profile is required (make one with `longctx bench profile`)");
  }
  if (!f.kv_budget.empty()) {
    ASSIGN_OR_RETURN(uint64_t b, ParseByteSize(f.kv_budget, "--kv-device-budget"));
    f.q.kv_device_budget = int64_t(b);
  }
  ASSIGN_OR_RETURN(bench::MachineProfile p, bench::LoadProfile(f.profile));
  ASSIGN_OR_RETURN(bench::ModelShape m, bench::LoadModelShape(f.model));
  ASSIGN_OR_RETURN(bench::PlanResult r, bench::Predict(p, m, f.q));
  if (f.json) {
    fmt::print("{}", bench::PlanJson(f.q, r));
    return Status::Ok();
  }
  fmt::print("plan: {} tokens on {} rank(s) of {} ({} rows per rank, {} globals), profile {} "
             "({}, {})\n", f.q.tokens, f.q.ranks, f.model, r.rows_per_rank, r.globals, f.profile,
             p.cpu, p.date_utc);
  fmt::print("  prefill         {:.3f} s (compute {:.3f} s on {:.2f} core(s) per rank{}, "
             "communication {:.3f} s)\n", r.prefill_seconds, r.compute_seconds, r.cores_per_rank,
             f.q.flops > 0 ? fmt::format(" at {:.3g} FLOP/s x {}", f.q.flops, f.q.efficiency) : "",
             r.comm_seconds);
  fmt::print("  decode          {:.2f} ms per token ({} question + {} generated tokens)\n",
             r.decode_ms_per_token, f.q.query_tokens, f.q.generate);
  fmt::print("  peak RSS        {:.1f} MiB per rank (weights {:.1f}, activations {:.1f}, KV {:.1f} "
             "MiB)\n", double(r.peak_rss_bytes) / 1048576.0, double(r.weight_bytes) / 1048576.0,
             double(r.activation_bytes) / 1048576.0, double(r.kv_bytes) / 1048576.0);
  fmt::print("  communication   {} bytes received per layer by the busiest rank\n",
             r.comm_bytes_per_layer);
  return Status::Ok();
}

}  // namespace

Runner AddPlanCommand(CLI::App& app) {
  auto f = std::make_shared<PlanFlags>();
  app.add_option("--tokens", f->q.tokens, "document tokens N")->capture_default_str();
  app.add_option("--ranks", f->q.ranks, "ranks P")->capture_default_str();
  app.add_option("--model", f->model, "model directory or builtin:NAME")->capture_default_str();
  app.add_option("--profile", f->profile, "machine profile JSON (longctx bench profile)");
  app.add_option("--threads", f->q.threads, "threads per rank (0 = cores / ranks per node)")
      ->capture_default_str();
  app.add_option("--cores-per-node", f->q.cores_per_node, "cores per node (0 = the profile's)");
  app.add_option("--ranks-per-node", f->q.ranks_per_node, "ranks per node (0 = all on one)");
  app.add_option("--link-gbps", f->q.link_gbps, "interconnect Gbit/s (0 = the profile's)");
  app.add_option("--link-latency-us", f->q.link_latency_us, "message latency, microseconds");
  app.add_option("--flops", f->q.flops,
                 "FLOP/s per rank of an accelerator (0 = scale the profile's CPU times)");
  app.add_option("--efficiency", f->q.efficiency, "with --flops: the share reached")
      ->capture_default_str();
  app.add_option("--mem-gbps", f->q.mem_gbps,
                 "with --flops: device memory GB/s (decode reads the weights and KV once)");
  app.add_option("--query-tokens", f->q.query_tokens, "question tokens")->capture_default_str();
  app.add_option("--generate", f->q.generate, "generated tokens")->capture_default_str();
  app.add_option("--kv-device-budget", f->kv_budget, "KV bytes held per rank (e.g. 8M)");
  app.add_option("--kv-codec", f->q.kv_codec, "what spills: f32 | f16 | int8")
      ->capture_default_str();
  app.add_flag("--json", f->json, "print prefill_seconds, decode_ms_per_token, peak_rss_bytes, "
                                  "comm_bytes_per_layer as JSON");
  return [f] { return RunPlan(*f); };
}

}  // namespace longctx::cli
