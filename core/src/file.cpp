#include "longctx/core/file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace longctx {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

int UniqueFd::Close() {
  const int rc = ::close(fd_);
  fd_ = -1;
  return rc;
}

Status ErrnoStatus(int err, std::string_view message) {
  StatusCode code = StatusCode::kFailedPrecondition;
  switch (err) {
    case ENOENT:
    case ENOTDIR: code = StatusCode::kNotFound; break;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
    case EMFILE:
    case ENFILE:
    case ENOMEM: code = StatusCode::kResourceExhausted; break;
    case EIO: code = StatusCode::kDataLoss; break;
    default: break;
  }
  return Status(code, fmt::format("{}: {}", message, std::strerror(err)));
}

}  // namespace longctx
