// POSIX file plumbing shared by every component that reads or writes files: an owned file
// descriptor (RAII), the one mapping of errno values to Status codes, and atomic writes
// (temporary file, fsync, rename) so that no reader ever sees a half-written file.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "longctx/core/status.h"

namespace longctx {

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();
  int get() const { return fd_; }
  // Closes now and returns close()'s result (it can report a deferred write error).
  int Close();

 private:
  int fd_;
};

// ENOENT/ENOTDIR -> kNotFound; no space, quota, too large, too many files, no memory ->
// kResourceExhausted; EIO -> kDataLoss; anything else kFailedPrecondition.
// Message: "<message>: <strerror(err)>".
Status ErrnoStatus(int err, std::string_view message);

// A file written under "<path>.tmp.<pid>" and renamed onto `path` by Commit(). Destroying it
// uncommitted removes the temporary file, so a failed write leaves nothing behind. Concurrent
// writers of the same path inside one process are not supported (they share the .tmp name).
class AtomicFile {
 public:
  static Result<AtomicFile> Create(const std::string& path);
  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&&) = delete;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  Status Write(const void* data, size_t bytes);
  // Starts the write-back to disk of everything written so far without waiting for it
  // (sync_file_range), so that Commit's fsync waits only for what was written since. A
  // streaming writer calls it between chunks to overlap disk I/O with its computation.
  Status StartWriteback();
  Status Commit();  // fsync, close, rename

 private:
  AtomicFile(std::string path, std::string tmp_path, UniqueFd fd)
      : path_(std::move(path)), tmp_path_(std::move(tmp_path)), fd_(std::move(fd)) {}
  std::string path_;
  std::string tmp_path_;
  UniqueFd fd_;
  bool done_ = false;
};

// AtomicFile::Create + Write + Commit.
Status WriteFileAtomically(const std::string& path, std::string_view contents);

}  // namespace longctx
