// Where a rank runs: which launcher started it, its node-local rank, and — on GPU builds — which
// device it takes. A pure function of the environment (passed in, so tests simulate mpirun,
// srun and mpirun-inside-sbatch without a cluster) plus the local rank from
// MPI_Comm_split_type(SHARED): SLURM_LOCALID is 0 for every rank under mpirun inside sbatch,
// and OMPI_COMM_WORLD_LOCAL_RANK is unset under srun, so neither is trusted for the local rank.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::comm {

using Environment = std::map<std::string, std::string, std::less<>>;
Environment ProcessEnvironment();  // the real environ

enum class Launcher : uint8_t { kNone, kMpirun, kSrun, kMpirunInSlurm };
std::string_view LauncherName(Launcher l);  // "none", "mpirun", "srun", "mpirun-in-slurm"

// mpirun sets OMPI_COMM_WORLD_SIZE; srun (--mpi=pmix) sets SLURM_STEP_ID and PMIX_RANK without
// OMPI_COMM_WORLD_SIZE; mpirun inside an sbatch allocation sets both OMPI_* and SLURM_JOB_ID.
Launcher DetectLauncher(const Environment& env);

struct DeviceChoice {
  bool has_device = false;
  int ordinal = -1;     // CUDA device ordinal within what this process sees
  std::string name;     // the CUDA_VISIBLE_DEVICES entry it came from ("0", "GPU-...", "MIG-...")
  std::string reason;   // one line: why this device
};

// GPU builds: Slurm bound one device to the task (--gpus-per-task=1: CUDA_VISIBLE_DEVICES has a
// single entry) -> ordinal 0; else local_rank modulo the visible devices (entries of
// CUDA_VISIBLE_DEVICES, which may be MIG instance UUIDs, or `device_count` when it is unset).
// device_count 0 (no GPU) -> has_device false. A bad CUDA_VISIBLE_DEVICES entry is an error.
Result<DeviceChoice> ChooseDevice(const Environment& env, int local_rank, int device_count);

// "rank 3/8 host node2 local 1/4 launcher srun device 1 (MIG-...: local rank 1 of 4 devices)"
std::string DescribePlacement(int rank, int size, std::string_view host, int local_rank,
                              int local_size, Launcher launcher, const DeviceChoice& device);

}  // namespace longctx::comm
