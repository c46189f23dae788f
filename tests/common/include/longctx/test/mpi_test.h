// The shared main of the MPI test binaries (tests/common/src/mpi_test_main.cpp; link
// longctx_test_mpi_main). tests/mpi/run_mpi_test.sh starts a binary on N ranks with mpirun; every
// test runs on every rank over World(). Rank 0 prints gtest's progress, the other ranks only their
// failures (prefixed "[rank R]"), and every rank ends with the line the runner checks:
//   longctx-mpi-test rank R/N: P passed, F failed
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "longctx/comm/communicator.h"

namespace longctx::test {

// The world communicator ("mpi" backend), created by the shared main before any test runs and
// released after the last.
comm::Communicator& World();
std::shared_ptr<comm::Communicator> WorldPtr();

// A mode of a test binary that replaces the gtest run: `BINARY --FLAG VALUE` calls
// run(World(), VALUE) and exits with its status (e.g. tests/mpi/dead_rank.sh's `--die-rank R`).
// Register at namespace scope: `const bool kRegistered = RegisterMpiTestMode("--die-rank", Fn);`
using MpiTestMode = std::function<int(comm::Communicator& world, std::string_view value)>;
bool RegisterMpiTestMode(std::string flag, MpiTestMode run);

}  // namespace longctx::test
