#include "longctx/core/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

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

Result<AtomicFile> AtomicFile::Create(const std::string& path) {
  std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoStatus(errno, fmt::format("{}: cannot create {}", path, tmp));
  return AtomicFile(path, std::move(tmp), std::move(fd));
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)),
      tmp_path_(std::move(other.tmp_path_)),
      fd_(std::move(other.fd_)),
      done_(std::exchange(other.done_, true)) {}

AtomicFile::~AtomicFile() {
  if (!done_) {
    fd_ = UniqueFd();
    ::unlink(tmp_path_.c_str());
  }
}

Status AtomicFile::Write(const void* data, size_t bytes) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const size_t chunk = std::min<size_t>(bytes, size_t{1} << 30);
    const ssize_t put = ::write(fd_.get(), p, chunk);
    if (put < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, fmt::format("{}: write to {} failed", path_, tmp_path_));
    }
    p += put;
    bytes -= static_cast<size_t>(put);
  }
  return Status::Ok();
}

Status AtomicFile::StartWriteback() {
  if (::sync_file_range(fd_.get(), 0, 0, SYNC_FILE_RANGE_WRITE) != 0) {
    return ErrnoStatus(errno, fmt::format("{}: write-back of {} failed", path_, tmp_path_));
  }
  return Status::Ok();
}

Status AtomicFile::Commit() {
  if (::fsync(fd_.get()) != 0) {
    return ErrnoStatus(errno, fmt::format("{}: fsync of {} failed", path_, tmp_path_));
  }
  if (fd_.Close() != 0) {
    return ErrnoStatus(errno, fmt::format("{}: close of {} failed", path_, tmp_path_));
  }
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    return ErrnoStatus(errno, fmt::format("{}: rename from {} failed", path_, tmp_path_));
  }
  done_ = true;
  return Status::Ok();
}

Status WriteFileAtomically(const std::string& path, std::string_view contents) {
  ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path));
  RETURN_IF_ERROR(file.Write(contents.data(), contents.size()));
  return file.Commit();
}

}  // namespace longctx
