// The flags of every command that runs the engine (`longctx run`, `longctx worker`): the model
// and its hybrid overrides, threads, and the --kv-* tiers of the decode cache (DESIGN.md §3) with
// the remote tier's store. One definition, so both commands read them the same way.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "longctx/cache/remote_tier.h"
#include "longctx/cache/tiered_cache.h"
#include "longctx/comm/communicator.h"
#include "longctx/core/status.h"
#include "longctx/model/builtin.h"
#include "longctx/worker/engine.h"

namespace longctx::cli {

struct KvFlags {
  std::string device_budget, host_budget, remote_budget;  // sizes; empty = unlimited
  std::string codec = "f32";
  int32_t block_tokens = 64;
  std::string pool;                 // size this rank lends to other ranks; empty/0 = none
  std::vector<std::string> stores;  // HOST:PORT of `longctx store` processes
  std::string store_token_file;     // the stores' token (`longctx store --token-file`)
  int replicas = 1;
  std::string bind = "127.0.0.1";   // where this rank's pool listens

  void Register(CLI::App& app);
  // The cache options (sizes parsed, codec checked).
  Result<cache::KvCacheOptions> CacheOptions() const;
  // Collective over comm: joins the KV store when a pool or stores are given (every rank must
  // call it); null when there is no remote tier.
  Result<std::shared_ptr<cache::RemoteTier>> JoinRemote(comm::Communicator& comm) const;
};

struct EngineFlags {
  std::string model = "builtin:tiny";
  uint64_t seed = model::kDefaultBuiltinSeed;
  std::string window;  // "64" or "64,256,..." (one per layer)
  std::optional<double> global_ratio;
  std::optional<int64_t> global_max, sinks;
  std::optional<std::string> fusion;
  std::optional<std::string> query_globals;  // on | off
  std::optional<int64_t> logn_base;          // tokens; 0 = off
  int threads = 0;
  KvFlags kv;

  void Register(CLI::App& app);
  // --model, --seed, the hybrid overrides and --threads only (commands without a KV cache).
  void RegisterModel(CLI::App& app);
  // The engine's options (no remote tier: JoinRemote is collective, the caller runs it).
  Result<worker::EngineOptions> Options(bool keep_kv) const;
};

// "64" or "64,256,..." -> windows (each >= 1).
Result<std::vector<int64_t>> ParseWindows(const std::string& text);

// Keeps the remote tier alive until every rank is done with it: its destructor (after the
// engine's, which erases the caches' remote blocks) waits for the other ranks, since this rank's
// pool holds their blocks.
class RemoteTierGuard {
 public:
  RemoteTierGuard(comm::Communicator& comm, std::shared_ptr<cache::RemoteTier>& remote)
      : comm_(comm), remote_(remote) {}
  ~RemoteTierGuard() {
    if (remote_) (void)comm_.Barrier(comm::DeadlineIn(comm::DefaultTimeout()));
  }
  RemoteTierGuard(const RemoteTierGuard&) = delete;
  RemoteTierGuard& operator=(const RemoteTierGuard&) = delete;

 private:
  comm::Communicator& comm_;
  std::shared_ptr<cache::RemoteTier>& remote_;
};

}  // namespace longctx::cli
