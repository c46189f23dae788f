// Crash consistency of the one atomic-write path (core/file.h AtomicFile, issue 17 item 6):
// a writer SIGKILLed at random points leaves the old or the new file, never a torn one; a full
// disk is a clear kResourceExhausted with no partial file; a planted symlink cannot redirect a
// write. The checks are shown able to fail: the same kill harness over a naive writer (open
// O_TRUNC, write) finds torn files.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "longctx/core/file.h"
#include "longctx/core/npy.h"

namespace longctx {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "longctx-atomic-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::optional<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// 8 MiB of a pattern that differs per `seed` at every 8-byte word, so a mix of two contents or
// a truncation never equals either.
std::string Content(char seed, size_t bytes = size_t{8} << 20) {
  std::string s(bytes, '\0');
  for (size_t i = 0; i < bytes; ++i) s[i] = static_cast<char>(seed + (i / 8) * 31 % 251);
  return s;
}

// What the kill harness saw over its iterations.
struct KillTally {
  int absent = 0, a = 0, b = 0, torn = 0, with_temp = 0, foreign_temp = 0;
};

// Forks a child that writes `target` with A, B, A, B, ... through `write` forever, SIGKILLs it
// after a random delay, and inspects what is left; `iterations` times. Leftover temporary files
// are counted (and removed, as a directory owner would) when they follow AtomicFile's pattern,
// and counted as foreign otherwise.
template <class WriteFn>
KillTally KillWriters(const std::string& dir, int iterations, WriteFn write, uint32_t seed) {
  const std::string target = dir + "/data.bin";
  const std::string a = Content('A'), b = Content('b');
  std::mt19937 rng(seed);
  KillTally tally;
  // Kill delays span a few whole write cycles of this writer on this disk, so kills land before
  // the first commit, between commits and inside writes.
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 2; ++i) {
    if (!write(target, i == 0 ? a : b)) {
      ADD_FAILURE() << "the writer fails outside the harness";
      return tally;
    }
  }
  const auto cycle = (std::chrono::steady_clock::now() - t0) / 2;
  fs::remove(target);
  const int64_t cycle_us = std::chrono::duration_cast<std::chrono::microseconds>(cycle).count();
  const int64_t max_delay_us = std::max<int64_t>(1000, 5 * cycle_us);
  for (int it = 0; it < iterations; ++it) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      for (uint64_t i = 0;; ++i) {
        if (!write(target, i % 2 == 0 ? a : b)) ::_exit(3);
      }
    }
    if (pid < 0) {
      ADD_FAILURE() << "fork: " << std::strerror(errno);
      return tally;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(
        std::uniform_int_distribution<int64_t>(0, max_delay_us)(rng)));
    ::kill(pid, SIGKILL);
    int wstatus = 0;
    ::waitpid(pid, &wstatus, 0);
    EXPECT_TRUE(WIFSIGNALED(wstatus)) << "the writer exited by itself: " << wstatus;
    const std::optional<std::string> got = ReadAll(target);
    if (!got) {
      ++tally.absent;
    } else if (*got == a) {
      ++tally.a;
    } else if (*got == b) {
      ++tally.b;
    } else {
      ++tally.torn;
    }
    bool temp = false;
    for (const std::string& name : Names(dir)) {
      if (name == "data.bin") continue;
      temp = true;
      if (name.rfind("data.bin.tmp.", 0) == 0 && IsAtomicTempName(name)) {
        fs::remove(dir + "/" + name);
      } else {
        ++tally.foreign_temp;
        fs::remove(dir + "/" + name);
      }
    }
    tally.with_temp += temp;
  }
  return tally;
}

TEST(AtomicFileCrash, SigkillAtRandomPointsLeavesOldOrNewNeverTorn) {
  TempDir dir;
  const KillTally t = KillWriters(
      dir.path(), 50,
      [](const std::string& path, const std::string& bytes) {
        return WriteFileAtomically(path, bytes).ok();
      },
      17);
  EXPECT_EQ(t.torn, 0);
  EXPECT_EQ(t.foreign_temp, 0);
  EXPECT_EQ(t.absent + t.a + t.b, 50);
  // The kills landed at different points: both contents were seen committed, and most kills
  // caught a write in flight (its temporary file left behind, never the target).
  EXPECT_GT(t.a, 0);
  EXPECT_GT(t.b, 0);
  EXPECT_GT(t.with_temp, 0);
  std::printf("50 kills: %d absent, %d A, %d B, %d with a temporary file left\n", t.absent, t.a,
              t.b, t.with_temp);
}

// The harness can fail: a writer that truncates and rewrites in place is caught torn.
TEST(AtomicFileCrash, HarnessCatchesANaiveWriter) {
  TempDir dir;
  const KillTally t = KillWriters(
      dir.path(), 20,
      [](const std::string& path, const std::string& bytes) {
        UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        return fd.get() >= 0 && WriteAll(fd.get(), bytes.data(), bytes.size(), path).ok();
      },
      18);
  EXPECT_GT(t.torn, 0);
}

// ---- a full disk --------------------------------------------------------------------------

// A 1 MiB tmpfs mounted for the test (needs root: skipped, visibly, otherwise).
class FullDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, "size=1m") != 0) {
      const int err = errno;
      if (err == EPERM || err == EACCES) {
        GTEST_SKIP() << "mounting a 1 MiB tmpfs needs root: " << std::strerror(err);
      }
      FAIL() << "mount tmpfs: " << std::strerror(err);
    }
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  const std::string& dir() const { return dir_.path(); }

 private:
  TempDir dir_;
  bool mounted_ = false;
};

TEST_F(FullDisk, WriteLargerThanTheDiskIsResourceExhaustedAndLeavesNothing) {
  const std::string old_path = dir() + "/old.bin", new_path = dir() + "/new.bin";
  const std::string old = Content('o', 100 << 10);
  ASSERT_TRUE(WriteFileAtomically(old_path, old).ok());
  const std::string big = Content('x', size_t{2} << 20);

  const Status replace = WriteFileAtomically(old_path, big);
  EXPECT_EQ(replace.code(), StatusCode::kResourceExhausted) << replace.ToString();
  EXPECT_NE(replace.message().find("No space left on device"), std::string::npos)
      << replace.message();
  EXPECT_NE(replace.message().find(old_path), std::string::npos) << replace.message();
  EXPECT_EQ(ReadAll(old_path), old) << "the older file must be untouched";

  const Status fresh = WriteFileAtomically(new_path, big);
  EXPECT_EQ(fresh.code(), StatusCode::kResourceExhausted) << fresh.ToString();
  EXPECT_EQ(Names(dir()), std::vector<std::string>{"old.bin"}) << "no partial or temporary file";
}

TEST_F(FullDisk, NpyWritersReportAndLeaveNothing) {
  std::vector<float> rows(size_t{512} << 10);  // 2 MiB
  const Status whole = WriteNpy(dir() + "/a.npy", DType::kF32, {int64_t(rows.size())}, rows.data());
  EXPECT_EQ(whole.code(), StatusCode::kResourceExhausted) << whole.ToString();

  {
    auto stream = NpyRowStream::Create(dir() + "/b.npy", DType::kF32, {512, 1024});
    ASSERT_TRUE(stream.ok()) << stream.status().ToString();
    Status st;
    for (int r = 0; r < 512 && st.ok(); r += 64) st = stream->Append(rows.data(), 64);
    EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  }  // the uncommitted stream removes its temporary file

  Status rows_st = CreateNpyForRows(dir() + "/c.npy", DType::kF32, {512, 1024});
  if (rows_st.ok()) rows_st = WriteNpyRows(dir() + "/c.npy", 0, 512, rows.data());
  EXPECT_EQ(rows_st.code(), StatusCode::kResourceExhausted) << rows_st.ToString();
  AbortNpyRows(dir() + "/c.npy");
  EXPECT_EQ(Names(dir()), std::vector<std::string>{});
}

// ---- symlinks -----------------------------------------------------------------------------

TEST(AtomicFileSymlink, ASymlinkAtTheTargetIsReplacedNotWrittenThrough) {
  TempDir dir;
  const std::string victim = dir.path() + "/victim", target = dir.path() + "/out.txt";
  ASSERT_TRUE(WriteFileAtomically(victim, "precious\n").ok());
  ASSERT_EQ(::symlink(victim.c_str(), target.c_str()), 0);
  ASSERT_TRUE(WriteFileAtomically(target, "new\n").ok());
  EXPECT_EQ(ReadAll(victim), "precious\n");
  EXPECT_EQ(ReadAll(target), "new\n");
  struct stat st;
  ASSERT_EQ(::lstat(target.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "the symlink is replaced by a regular file";
}

TEST(AtomicFileSymlink, SymlinksAtPredictableTemporaryNamesRedirectNothing) {
  TempDir dir;
  const std::string victim = dir.path() + "/victim", target = dir.path() + "/out.npy";
  ASSERT_TRUE(WriteFileAtomically(victim, "precious\n").ok());
  // The names earlier versions used ("<path>.tmp.<pid>") and the row writers' staging name.
  for (const std::string& name : {target + ".tmp." + std::to_string(::getpid()),
                                  NpyStagingPath(target)}) {
    ASSERT_EQ(::symlink(victim.c_str(), name.c_str()), 0) << name;
  }
  const std::vector<float> v = {1, 2, 3, 4};
  ASSERT_TRUE(WriteNpy(target, DType::kF32, {2, 2}, v.data()).ok());
  EXPECT_EQ(ReadAll(victim), "precious\n");
  ASSERT_TRUE(CreateNpyForRows(target, DType::kF32, {2, 2}).ok());
  ASSERT_TRUE(WriteNpyRows(target, 0, 2, v.data()).ok());
  ASSERT_TRUE(CommitNpyRows(target).ok());
  EXPECT_EQ(ReadAll(victim), "precious\n");
  auto back = ReadNpy(target);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->shape, (std::vector<int64_t>{2, 2}));
  // A symlink planted at the staging name after creation is refused by the row writers.
  ASSERT_TRUE(CreateNpyForRows(target, DType::kF32, {2, 2}).ok());
  ASSERT_EQ(::unlink(NpyStagingPath(target).c_str()), 0);
  ASSERT_EQ(::symlink(victim.c_str(), NpyStagingPath(target).c_str()), 0);
  EXPECT_FALSE(WriteNpyRows(target, 0, 2, v.data()).ok());
  EXPECT_EQ(ReadAll(victim), "precious\n");
  AbortNpyRows(target);
}

TEST(AtomicFile, TemporaryNamesAreRandomExclusiveAndCleanedUp) {
  TempDir dir;
  const std::string target = dir.path() + "/f";
  auto one = AtomicFile::Create(target);
  auto two = AtomicFile::Create(target);
  ASSERT_TRUE(one.ok() && two.ok());
  EXPECT_NE(one->temp_path(), two->temp_path());
  for (const auto* f : {&*one, &*two}) {
    const std::string name = fs::path(f->temp_path()).filename().string();
    EXPECT_TRUE(IsAtomicTempName(name)) << name;
    EXPECT_EQ(name.rfind("f.tmp.", 0), 0u) << name;
  }
  ASSERT_TRUE(one->Write("1", 1).ok());
  ASSERT_TRUE(two->Write("2", 1).ok());
  ASSERT_TRUE(one->Commit().ok());
  ASSERT_TRUE(two->Commit().ok());  // both commit; the last rename wins
  EXPECT_EQ(ReadAll(target), "2");
  {
    auto dropped = AtomicFile::Create(target);
    ASSERT_TRUE(dropped.ok());
    ASSERT_TRUE(dropped->Write("3", 1).ok());
  }  // never committed: its temporary file is gone, the target untouched
  EXPECT_EQ(Names(dir.path()), std::vector<std::string>{"f"});
  EXPECT_EQ(ReadAll(target), "2");
  EXPECT_FALSE(IsAtomicTempName("f.tmp.12345"));
  EXPECT_FALSE(IsAtomicTempName("f.tmp.ABCDEFGHIJKL"));
  EXPECT_TRUE(IsAtomicTempName("f.tmp.0123456789az"));
}

TEST(AtomicFile, ModeAndNoReplace) {
  TempDir dir;
  const std::string target = dir.path() + "/token";
  const mode_t old_mask = ::umask(022);
  ASSERT_TRUE(WriteFileAtomically(target, "a", AtomicWriteOptions{.mode = 0600}).ok());
  ::umask(old_mask);
  struct stat st;
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = AtomicFile::Create(target, AtomicWriteOptions{.mode = 0600});
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(again->Write("b", 1).ok());
  auto linked = again->CommitNoReplace();
  ASSERT_TRUE(linked.ok()) << linked.status().ToString();
  EXPECT_FALSE(*linked);
  EXPECT_EQ(ReadAll(target), "a");
  EXPECT_EQ(Names(dir.path()), std::vector<std::string>{"token"});
  // Into a missing directory: kNotFound, naming the path.
  const Status missing = WriteFileAtomically(dir.path() + "/no/such/f", "x");
  EXPECT_EQ(missing.code(), StatusCode::kNotFound) << missing.ToString();
}

}  // namespace
}  // namespace longctx
