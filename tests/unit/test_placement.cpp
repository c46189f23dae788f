// Launcher detection and device choice under simulated environments (mpirun, srun --mpi=pmix,
// mpirun inside sbatch; GPUs bound per task, shared, MIG), without a cluster or a GPU.
#include "longctx/comm/placement.h"
#include "longctx/test/status_matchers.h"

#include <gtest/gtest.h>

namespace longctx::comm {
namespace {

TEST(Placement, DetectsTheLauncher) {
  EXPECT_EQ(DetectLauncher({}), Launcher::kNone);
  EXPECT_EQ(DetectLauncher({{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}}),
            Launcher::kMpirun);
  EXPECT_EQ(DetectLauncher({{"SLURM_JOB_ID", "7"}, {"SLURM_STEP_ID", "0"}, {"PMIX_RANK", "3"},
                            {"SLURM_LOCALID", "1"}}),
            Launcher::kSrun);
  // mpirun inside sbatch: SLURM_LOCALID is 0 for every rank there, which is why the local rank
  // comes from MPI_Comm_split_type and not from the environment.
  EXPECT_EQ(DetectLauncher({{"OMPI_COMM_WORLD_SIZE", "4"}, {"SLURM_JOB_ID", "7"},
                            {"SLURM_LOCALID", "0"}}),
            Launcher::kMpirunInSlurm);
  EXPECT_EQ(LauncherName(Launcher::kMpirunInSlurm), "mpirun-in-slurm");
}

TEST(Placement, OneDeviceBoundPerTask) {
  // srun --gpus-per-task=1: each task sees exactly its own device, whatever its ordinal on the node.
  for (int local = 0; local < 4; ++local) {
    auto d = ChooseDevice({{"CUDA_VISIBLE_DEVICES", std::to_string(3 - local)}}, local, 1);
    ASSERT_OK(d);
    EXPECT_TRUE(d->has_device);
    EXPECT_EQ(d->ordinal, 0);
    EXPECT_EQ(d->name, std::to_string(3 - local));
  }
}

TEST(Placement, SharedDevicesGoByLocalRank) {
  auto d = ChooseDevice({}, 5, 4);  // unset: the runtime's 4 devices
  ASSERT_OK(d);
  EXPECT_EQ(d->ordinal, 1);
  d = ChooseDevice({{"CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7"}}, 6, 8);
  ASSERT_OK(d);
  EXPECT_EQ(d->ordinal, 6);
  EXPECT_EQ(d->name, "6");
}

TEST(Placement, MigInstancesByUuid) {
  const Environment env = {{"CUDA_VISIBLE_DEVICES", "MIG-aaaa-1,MIG-bbbb-2,MIG-cccc-3"}};
  auto d = ChooseDevice(env, 4, 3);
  ASSERT_OK(d);
  EXPECT_EQ(d->ordinal, 1);
  EXPECT_EQ(d->name, "MIG-bbbb-2");
  const std::string line = DescribePlacement(4, 8, "node1", 4, 6, Launcher::kSrun, *d);
  EXPECT_NE(line.find("MIG-bbbb-2"), std::string::npos);
  EXPECT_NE(line.find("launcher srun"), std::string::npos);
}

TEST(Placement, NoDeviceAndBadEntries) {
  auto d = ChooseDevice({}, 0, 0);
  ASSERT_OK(d);
  EXPECT_FALSE(d->has_device);
  d = ChooseDevice({{"CUDA_VISIBLE_DEVICES", ""}}, 0, 8);
  ASSERT_OK(d);
  EXPECT_FALSE(d->has_device);
  EXPECT_FALSE(ChooseDevice({{"CUDA_VISIBLE_DEVICES", "0,gpu7"}}, 0, 2).ok());
  EXPECT_FALSE(ChooseDevice({}, -1, 2).ok());
  EXPECT_NE(DescribePlacement(0, 1, "h", 0, 1, Launcher::kNone, DeviceChoice{}).find("cpu"),
            std::string::npos);
}

}  // namespace
}  // namespace longctx::comm
