// File helpers private to longctx_model: an owned descriptor, errno -> Status, whole-file reads
// of small text files, and atomic writes (temporary file, fsync, rename).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "longctx/core/file.h"
#include "longctx/core/status.h"

namespace longctx::model::internal {

// The descriptor RAII and errno mapping are core's (longctx/core/file.h).
using Fd = ::longctx::UniqueFd;
using ::longctx::ErrnoStatus;

// Reads a whole regular file of at most `max_bytes` bytes (kInvalidArgument when larger).
Result<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes);

// A file written under "<path>.tmp.<pid>" and renamed onto `path` by Commit(). Destroying it
// uncommitted removes the temporary file, so a failed write leaves nothing behind.
class AtomicFile {
 public:
  static Result<AtomicFile> Create(const std::string& path);
  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&&) = delete;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  Status Write(const void* data, size_t bytes);
  Status Commit();  // fsync, close, rename

 private:
  AtomicFile(std::string path, std::string tmp_path, Fd fd)
      : path_(std::move(path)), tmp_path_(std::move(tmp_path)), fd_(std::move(fd)) {}
  std::string path_;
  std::string tmp_path_;
  Fd fd_;
  bool done_ = false;
};

// AtomicFile::Create + Write + Commit.
Status WriteFileAtomically(const std::string& path, std::string_view contents);

}  // namespace longctx::model::internal
