#include "longctx/test/temp_dir.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace longctx::test {

TempDir::TempDir(std::string_view prefix) {
  std::string tmpl =
      (std::filesystem::path(::testing::TempDir()) / (std::string(prefix) + "_XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << tmpl << ": " << std::strerror(errno);
    return;
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;  // a file a test left read-only or busy must not throw from a destructor
  std::filesystem::remove_all(path_, ec);
}

}  // namespace longctx::test
