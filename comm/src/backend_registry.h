// The world-communicator backends this build has, in the order "auto" tries them. world.cpp
// picks from this table by name or by launcher detection; a backend adds one row (a CUDA
// build's NCCL backend will sit beside MPI in comm/src/nccl/, not in an #ifdef here).
#pragma once

#include <memory>
#include <span>
#include <string_view>

#include "longctx/comm/communicator.h"

namespace longctx::comm::internal {

struct WorldBackend {
  std::string_view name;  // what WorldCommunicator(prefer) accepts
  // True when the environment shows this backend's launcher; "auto" takes the first such row.
  bool (*launched)();
  // The process's world communicator of this backend: created on first call, the same object
  // afterwards. Called with world.cpp's lock held.
  Result<std::shared_ptr<Communicator>> (*world)();
};

std::span<const WorldBackend> WorldBackends();

// Backend entry points (defined beside each backend).
Result<std::shared_ptr<Communicator>> MpiWorld();
Result<std::shared_ptr<Communicator>> SelfWorld();
std::unique_ptr<Communicator> NewSelfCommunicator();

}  // namespace longctx::comm::internal
