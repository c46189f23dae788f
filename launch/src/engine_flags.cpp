#include "engine_flags.h"

#include <sstream>

#include "longctx/cache/store.h"
#include "longctx/core/byte_size.h"

namespace longctx::cli {

void KvFlags::Register(CLI::App& app) {
  app.add_option("--kv-device-budget", device_budget,
                 "bytes of fp32 KV blocks kept in compute memory per rank (e.g. 8M; default: all)");
  app.add_option("--kv-host-budget", host_budget,
                 "bytes of encoded KV blocks in this rank's host pool (default: unlimited)");
  app.add_option("--kv-remote-budget", remote_budget,
                 "bytes of encoded KV blocks this rank may place in other processes' pools");
  app.add_option("--kv-codec", codec, "codec of demoted KV blocks: f32 | f16 | bf16 | int8")
      ->capture_default_str();
  app.add_option("--kv-block-tokens", block_tokens, "tokens per KV block")->capture_default_str();
  app.add_option("--kv-pool", pool,
                 "host memory this rank lends to other ranks' KV blocks (e.g. 256M; default none)");
  app.add_option("--kv-store", stores,
                 "HOST:PORT of a `longctx store` process (repeat or comma-separate)")
      ->delimiter(',');
  app.add_option("--kv-store-token-file", store_token_file,
                 "the token file of the --kv-store processes (their --token-file)");
  app.add_option("--kv-replicas", replicas, "copies of each remote block: 1 or 2")
      ->capture_default_str();
  app.add_option("--kv-bind", bind, "address this rank's pool listens on")->capture_default_str();
}

Result<cache::KvCacheOptions> KvFlags::CacheOptions() const {
  cache::KvCacheOptions kv;
  ASSIGN_OR_RETURN(kv.codec, cache::ParseCodec(codec));
  if (block_tokens < 1) return InvalidArgument("--kv-block-tokens must be >= 1, got {}", block_tokens);
  kv.block_tokens = block_tokens;
  if (!device_budget.empty()) {
    ASSIGN_OR_RETURN(kv.device_budget, ParseByteSize(device_budget, "--kv-device-budget"));
  }
  if (!host_budget.empty()) {
    ASSIGN_OR_RETURN(kv.host_budget, ParseByteSize(host_budget, "--kv-host-budget"));
  }
  if (!remote_budget.empty()) {
    ASSIGN_OR_RETURN(kv.remote_budget, ParseByteSize(remote_budget, "--kv-remote-budget"));
  }
  return kv;
}

Result<std::shared_ptr<cache::RemoteTier>> KvFlags::JoinRemote(comm::Communicator& comm) const {
  uint64_t pool_bytes = 0;
  Status st;
  if (!pool.empty()) {
    Result<uint64_t> pb = ParseByteSize(pool, "--kv-pool");
    if (pb.ok()) pool_bytes = *pb;
    else st = pb.status();
  }
  if (st.ok() && replicas != 1 && replicas != 2) {
    st = InvalidArgument("--kv-replicas must be 1 or 2, got {}", replicas);
  }
  std::optional<cache::StoreToken> store_token;
  if (st.ok() && !store_token_file.empty()) {
    if (stores.empty()) {
      st = InvalidArgument("--kv-store-token-file is the token of --kv-store processes; no "
                           "--kv-store given");
    } else {
      Result<cache::StoreToken> t = cache::ReadStoreToken(store_token_file);
      if (t.ok()) store_token = *t;
      else st = t.status().WithContext("--kv-store-token-file");
    }
  }
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm, st));
  if (pool_bytes == 0 && stores.empty()) return std::shared_ptr<cache::RemoteTier>();
  cache::StoreJoinOptions so;
  so.pool_bytes = pool_bytes;
  so.stores = stores;
  so.store_token = store_token;
  so.replicas = replicas;
  so.bind_host = bind;
  return cache::JoinStore(comm, so);
}

Result<std::vector<int64_t>> ParseWindows(const std::string& text) {
  std::vector<int64_t> w;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 1) {
      return InvalidArgument("--window '{}': expected positive integers, one or one per layer",
                             text);
    }
    w.push_back(v);
  }
  if (w.empty()) return InvalidArgument("--window '{}': expected at least one window", text);
  return w;
}

void EngineFlags::Register(CLI::App& app) {
  RegisterModel(app);
  kv.Register(app);
}

void EngineFlags::RegisterModel(CLI::App& app) {
  app.add_option("--model", model, "builtin:tiny | builtin:small | a HF model directory")
      ->capture_default_str();
  app.add_option("--seed", seed, "seed of a builtin model")->capture_default_str();
  app.add_option("--window", window, "window, one value or one per layer (comma-separated)");
  app.add_option("--global-ratio", global_ratio, "global budget as a fraction of tokens");
  app.add_option("--global-max", global_max, "global budget cap (default 16*ceil(log2 n))");
  app.add_option("--sinks", sinks, "leading sink tokens");
  app.add_option("--fusion", fusion, "union | weighted:A");
  app.add_option("--query-globals", query_globals,
                 "on | off: the question's tokens and generated sentence ends are global");
  app.add_option("--logn-base", logn_base,
                 "global queries' logits x max(1, ln(pos+1)/ln(N)); 0 = off (tokens)");
  app.add_option("--threads", threads, "threads per rank (0 = all cores)")->capture_default_str();
}

Result<worker::EngineOptions> EngineFlags::Options(bool keep_kv) const {
  worker::EngineOptions eo;
  eo.model = model;
  eo.seed = seed;
  eo.threads = threads;
  eo.keep_kv = keep_kv;
  if (!window.empty()) {
    ASSIGN_OR_RETURN(std::vector<int64_t> w, ParseWindows(window));
    eo.overrides.window = std::move(w);
  }
  eo.overrides.global_ratio = global_ratio;
  eo.overrides.global_max = global_max;
  eo.overrides.sinks = sinks;
  eo.overrides.fusion = fusion;
  eo.overrides.logn_base = logn_base;
  if (query_globals) {
    if (*query_globals != "on" && *query_globals != "off") {
      return InvalidArgument("--query-globals {}: expected on or off", *query_globals);
    }
    eo.overrides.query_globals = *query_globals == "on";
  }
  ASSIGN_OR_RETURN(eo.kv, kv.CacheOptions());
  return eo;
}

}  // namespace longctx::cli
