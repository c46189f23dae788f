#include "longctx/comm/placement.h"

#include <unistd.h>

#include <fmt/format.h>

extern char** environ;

namespace longctx::comm {
namespace {

bool Has(const Environment& env, std::string_view key) { return env.find(key) != env.end(); }

std::vector<std::string> SplitCommas(std::string_view s) {
  std::vector<std::string> out;
  while (true) {
    const size_t comma = s.find(',');
    out.emplace_back(s.substr(0, comma));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace

Environment ProcessEnvironment() {
  Environment env;
  for (char** e = environ; e && *e; ++e) {
    const std::string_view kv(*e);
    const size_t eq = kv.find('=');
    if (eq != std::string_view::npos) env.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return env;
}

std::string_view LauncherName(Launcher l) {
  switch (l) {
    case Launcher::kNone: return "none";
    case Launcher::kMpirun: return "mpirun";
    case Launcher::kSrun: return "srun";
    case Launcher::kMpirunInSlurm: return "mpirun-in-slurm";
  }
  return "?";
}

Launcher DetectLauncher(const Environment& env) {
  const bool ompi = Has(env, "OMPI_COMM_WORLD_SIZE");
  const bool slurm_job = Has(env, "SLURM_JOB_ID") || Has(env, "SLURM_JOBID");
  if (ompi) return slurm_job ? Launcher::kMpirunInSlurm : Launcher::kMpirun;
  if (Has(env, "SLURM_STEP_ID") && (Has(env, "PMIX_RANK") || Has(env, "PMI_RANK"))) {
    return Launcher::kSrun;
  }
  if (Has(env, "PMIX_RANK") || Has(env, "PMI_RANK")) return Launcher::kMpirun;
  return Launcher::kNone;
}

Result<DeviceChoice> ChooseDevice(const Environment& env, int local_rank, int device_count) {
  DeviceChoice d;
  if (local_rank < 0) return InvalidArgument("local rank {} is negative", local_rank);
  std::vector<std::string> visible;
  const auto it = env.find("CUDA_VISIBLE_DEVICES");
  if (it != env.end()) {
    if (it->second.empty()) {
      d.reason = "CUDA_VISIBLE_DEVICES is empty: no device";
      return d;
    }
    visible = SplitCommas(it->second);
    for (const std::string& v : visible) {
      const bool ordinal = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
      const bool uuid = v.rfind("GPU-", 0) == 0 || v.rfind("MIG-", 0) == 0;
      if (!ordinal && !uuid) {
        return InvalidArgument("CUDA_VISIBLE_DEVICES entry '{}' is neither an ordinal nor a "
                               "GPU-/MIG- UUID", v);
      }
    }
    if (device_count >= 0 && device_count < int(visible.size())) {
      // The runtime sees fewer devices than listed (e.g. a bad UUID): trust the runtime.
      visible.resize(size_t(device_count));
    }
  } else {
    for (int i = 0; i < device_count; ++i) visible.push_back(std::to_string(i));
  }
  if (visible.empty()) {
    d.reason = "no visible device";
    return d;
  }
  d.has_device = true;
  if (visible.size() == 1) {
    d.ordinal = 0;
    d.reason = "the one device bound to this task";
  } else {
    d.ordinal = local_rank % int(visible.size());
    d.reason = fmt::format("local rank {} of {} visible devices", local_rank, visible.size());
  }
  d.name = visible[size_t(d.ordinal)];
  return d;
}

std::string DescribePlacement(int rank, int size, std::string_view host, int local_rank,
                              int local_size, Launcher launcher, const DeviceChoice& device) {
  std::string dev = device.has_device
                        ? fmt::format("device {} ({}: {})", device.ordinal, device.name, device.reason)
                        : fmt::format("cpu ({})", device.reason.empty() ? "CPU build" : device.reason);
  return fmt::format("rank {}/{} host {} local {}/{} launcher {} {}", rank, size, host, local_rank,
                     local_size, LauncherName(launcher), dev);
}

}  // namespace longctx::comm
