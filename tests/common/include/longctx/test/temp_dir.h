// A fresh directory for one test (tests/common): made with mkdtemp under gtest's temporary
// directory ($TEST_TMPDIR or /tmp), removed with everything in it when the object goes.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace longctx::test {

class TempDir {
 public:
  // `prefix` names the directory ("<prefix>_XXXXXX") so a leftover one says which test made it.
  // A failure to create it is a gtest failure (ADD_FAILURE) and leaves path() empty.
  explicit TempDir(std::string_view prefix = "longctx_test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // The path of `name` inside the directory, as a string (what the file APIs take).
  std::string File(std::string_view name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace longctx::test
