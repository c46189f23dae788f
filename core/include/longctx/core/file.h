// POSIX file plumbing shared by every component that reads or writes files: an owned file
// descriptor (RAII) and the one mapping of errno values to Status codes.
#pragma once

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

}  // namespace longctx
