// WorldCommunicator: choose a backend from the registry by name, or by the launcher the
// environment shows ("auto"), and hand out that backend's one world communicator.
#include <cstdlib>
#include <mutex>
#include <string>

#include "backend_registry.h"

namespace longctx::comm {
namespace internal {
namespace {

bool AlwaysAvailable() { return true; }

// Order matters for "auto": the first row whose launcher is detected wins; "self" is last and
// always matches, so a process started without a launcher never initialises MPI.
constexpr WorldBackend kWorldBackends[] = {
    {"mpi", &LaunchedByMpi, &MpiWorld},
    {"self", &AlwaysAvailable, &SelfWorld},
};

}  // namespace

std::span<const WorldBackend> WorldBackends() { return kWorldBackends; }

}  // namespace internal

bool LaunchedByMpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

Result<std::shared_ptr<Communicator>> WorldCommunicator(std::string_view prefer) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::string known;
  for (const internal::WorldBackend& backend : internal::WorldBackends()) {
    if (prefer == "auto" ? backend.launched() : prefer == backend.name) return backend.world();
    known += backend.name;
    known += ", ";
  }
  return InvalidArgument("communicator backend '{}' is not one of: auto, {}", prefer,
                         known.substr(0, known.size() - 2));
}

}  // namespace longctx::comm
