// `longctx bench kvstore`: the UCX KV store's put and get bandwidth for blocks of 64 KiB to
// 16 MiB over shared memory and over tcp, against same-run peers — `ucx_perftest` (ucp_put_bw,
// ucp_get: UCX's own ceiling) and Redis on loopback (the store a user might reach for instead) —
// and the codecs' encode/decode speed per core. The store under test is a real `longctx store`
// process (this binary) on loopback; the client is this process.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::bench {

struct KvstoreBenchOptions {
  std::vector<std::string> sizes = {"64K", "256K", "1M", "4M", "16M"};  // encoded block bytes
  std::vector<std::string> transports = {"sm", "tcp"};                    // UCX_TLS values
  std::string bytes_per_point = "256M";  // data moved per measurement
  int batch = 16;                        // blocks per PutBatch/GetBatch
  int reps = 3;                          // measurements per point; the best is reported
  bool perftest = true;                  // run ucx_perftest as the peer
  bool redis = true;                     // run a private redis-server as the peer
  bool mac = true;                       // StoreClientOptions::verify_mac (GMAC per block)
  std::string json;                      // also write the results here
};

Status RunKvstoreBench(const KvstoreBenchOptions& options);

}  // namespace longctx::bench
