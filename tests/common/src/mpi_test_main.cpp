// The one main of the MPI test binaries (see longctx/test/mpi_test.h).
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <string>

#include "longctx/test/mpi_test.h"

namespace longctx::test {
namespace {

std::shared_ptr<comm::Communicator>& WorldSlot() {
  static std::shared_ptr<comm::Communicator> world;
  return world;
}

std::map<std::string, MpiTestMode>& Modes() {
  static std::map<std::string, MpiTestMode> modes;
  return modes;
}

// On ranks other than 0 gtest's own printer is removed (N copies of the progress interleave);
// this prints that rank's failures instead, so no rank fails silently.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::printf("[rank %d] %s:%d: Failure\n%s\n", rank_,
                result.file_name() ? result.file_name() : "?", result.line_number(),
                result.summary());
    std::fflush(stdout);
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::printf("[rank %d] [  FAILED  ] %s.%s\n", rank_, info.test_suite_name(), info.name());
      std::fflush(stdout);
    }
  }

 private:
  int rank_;
};

}  // namespace

comm::Communicator& World() { return *WorldSlot(); }
std::shared_ptr<comm::Communicator> WorldPtr() { return WorldSlot(); }

bool RegisterMpiTestMode(std::string flag, MpiTestMode run) {
  Modes()[std::move(flag)] = std::move(run);
  return true;
}

}  // namespace longctx::test

int main(int argc, char** argv) {
  // mpirun hands ranks a pseudo-terminal, so gtest would colour logs; --gtest_color overrides.
  GTEST_FLAG_SET(color, "no");
  ::testing::InitGoogleTest(&argc, argv);  // removes the gtest flags from argv
  const longctx::test::MpiTestMode* mode = nullptr;
  std::string mode_value;
  for (int i = 1; i < argc; ++i) {
    auto it = longctx::test::Modes().find(argv[i]);
    if (it != longctx::test::Modes().end() && i + 1 < argc && mode == nullptr) {
      mode = &it->second;
      mode_value = argv[++i];
    } else {
      std::string known;
      for (const auto& [flag, run] : longctx::test::Modes()) known += ", " + flag + " VALUE";
      std::fprintf(stderr, "longctx-mpi-test: unknown argument '%s' (gtest flags%s)\n", argv[i],
                   known.c_str());
      return 2;
    }
  }
  auto world = longctx::comm::WorldCommunicator("mpi");
  if (!world.ok()) {
    std::fprintf(stderr, "longctx-mpi-test: %s\n", world.status().ToString().c_str());
    return 1;
  }
  longctx::test::WorldSlot() = *world;
  const int rank = (*world)->rank();
  const int size = (*world)->size();
  if (mode != nullptr) {
    const int rc = (*mode)(**world, mode_value);
    longctx::test::WorldSlot().reset();
    return rc;
  }

  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new longctx::test::FailurePrinter(rank));
  }
  const int rc = RUN_ALL_TESTS();
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  std::printf("longctx-mpi-test rank %d/%d: %d passed, %d failed\n", rank, size,
              unit.successful_test_count(), unit.failed_test_count());
  std::fflush(stdout);
  longctx::test::WorldSlot().reset();
  return rc == 0 && unit.failed_test_count() == 0 ? 0 : 1;
}
