// File helpers private to longctx_model: an owned descriptor, errno -> Status, whole-file reads
// of small text files, and atomic writes (temporary file, fsync, rename).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "longctx/core/status.h"

namespace longctx::model::internal {

// Owns a file descriptor; closes it on destruction.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  // Closes now and returns close()'s result (it can report a deferred write error).
  int Close();

 private:
  int fd_;
};

// Maps an errno to the canonical codes: ENOENT/ENOTDIR -> kNotFound, no space/too many files ->
// kResourceExhausted, EIO -> kDataLoss, else kFailedPrecondition. Message: "<message>: <strerror>".
Status ErrnoStatus(int err, std::string_view message);

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
