#include "file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

namespace longctx::model::internal {

Result<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes) {
  // O_NONBLOCK so that opening a FIFO by mistake cannot hang; no effect on regular files.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) return ErrnoStatus(errno, fmt::format("{}: cannot open", path));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, fmt::format("{}: fstat", path));
  if (!S_ISREG(st.st_mode)) return InvalidArgument("{}: not a regular file", path);
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) {
    return InvalidArgument("{}: {} bytes, more than the {} bytes allowed", path, size, max_bytes);
  }
  std::string out(size, '\0');
  size_t done = 0;
  while (done < size) {
    const ssize_t got = ::pread(fd.get(), out.data() + done, size - done, static_cast<off_t>(done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, fmt::format("{}: read failed", path));
    }
    if (got == 0) {
      return DataLoss("{}: file ended at byte {} of {} (did it change while being read?)", path,
                      done, size);
    }
    done += static_cast<size_t>(got);
  }
  return out;
}

Result<AtomicFile> AtomicFile::Create(const std::string& path) {
  std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
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
    fd_ = Fd();
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

}  // namespace longctx::model::internal
