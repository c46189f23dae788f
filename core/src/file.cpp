#include "longctx/core/file.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

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

namespace {

constexpr std::string_view kTempInfix = ".tmp.";
constexpr size_t kTempSuffixChars = 12;  // 36^12 ~ 2^62 names: guessing one is hopeless
constexpr int kTempAttempts = 100;       // names tried before giving up (EEXIST each time)

// 12 characters of [0-9a-z] from the kernel's random source.
std::string RandomSuffix() {
  static constexpr char kAlphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  unsigned char bytes[kTempSuffixChars];
  size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += size_t(n);
  }
  if (got < sizeof bytes) {  // no getrandom (old kernel, seccomp): the C++ library's device
    std::random_device rd;
    for (auto& b : bytes) b = static_cast<unsigned char>(rd());
  }
  std::string s(kTempSuffixChars, '0');
  for (size_t i = 0; i < kTempSuffixChars; ++i) s[i] = kAlphabet[bytes[i] % 36];
  return s;
}

std::string TempName(const std::string& path) {
  return fmt::format("{}{}{}", path, kTempInfix, RandomSuffix());
}

}  // namespace

Status WriteAll(int fd, const void* data, size_t bytes, std::string_view what) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const size_t chunk = std::min<size_t>(bytes, size_t{1} << 30);
    const ssize_t put = ::write(fd, p, chunk);
    if (put < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, fmt::format("{}: write failed", what));
    }
    if (put == 0) return ErrnoStatus(EIO, fmt::format("{}: write wrote nothing", what));
    p += put;
    bytes -= static_cast<size_t>(put);
  }
  return Status::Ok();
}

std::string ParentDirectory(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status FsyncDirectory(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, fmt::format("{}: cannot open the directory", dir));
  if (::fsync(fd.get()) != 0 && errno != EINVAL) {
    return ErrnoStatus(errno, fmt::format("{}: fsync of the directory failed", dir));
  }
  return Status::Ok();
}

Result<AtomicFile> AtomicFile::Create(const std::string& path, AtomicWriteOptions options) {
  if (path.empty()) return InvalidArgument("cannot write a file with an empty name");
  for (int attempt = 0; attempt < kTempAttempts; ++attempt) {
    std::string tmp = TempName(path);
    // O_EXCL: a new inode of ours, never an existing file or a symlink planted at the name
    // (O_EXCL fails on any existing entry, dangling symlinks included; O_NOFOLLOW says so too).
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       options.mode));
    if (fd.get() >= 0) return AtomicFile(path, std::move(tmp), std::move(fd), options);
    if (errno != EEXIST) {
      return ErrnoStatus(errno, fmt::format("{}: cannot create the temporary file {}", path, tmp));
    }
  }
  return ResourceExhausted("{}: {} temporary names beside it were all taken", path, kTempAttempts);
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)),
      tmp_path_(std::move(other.tmp_path_)),
      fd_(std::move(other.fd_)),
      options_(other.options_),
      done_(std::exchange(other.done_, true)) {}

AtomicFile::~AtomicFile() {
  if (!done_) {
    fd_ = UniqueFd();
    ::unlink(tmp_path_.c_str());
  }
}

Status AtomicFile::Write(const void* data, size_t bytes) {
  if (done_ || fd_.get() < 0) return FailedPrecondition("{}: write after commit", path_);
  return WriteAll(fd_.get(), data, bytes, fmt::format("{} (temporary file {})", path_, tmp_path_));
}

Status AtomicFile::StartWriteback() {
  if (::sync_file_range(fd_.get(), 0, 0, SYNC_FILE_RANGE_WRITE) != 0) {
    return ErrnoStatus(errno, fmt::format("{}: write-back of {} failed", path_, tmp_path_));
  }
  return Status::Ok();
}

Status AtomicFile::SyncAndClose() {
  if (done_ || fd_.get() < 0) return FailedPrecondition("{}: committed twice", path_);
  // fsync before the rename: otherwise a crash can leave `path` naming unwritten blocks.
  if (options_.durable && ::fsync(fd_.get()) != 0) {
    return ErrnoStatus(errno, fmt::format("{}: fsync of {} failed", path_, tmp_path_));
  }
  if (fd_.Close() != 0) {
    return ErrnoStatus(errno, fmt::format("{}: close of {} failed", path_, tmp_path_));
  }
  return Status::Ok();
}

Status AtomicFile::Commit() {
  RETURN_IF_ERROR(SyncAndClose());
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    return ErrnoStatus(errno, fmt::format("{}: rename from {} failed", path_, tmp_path_));
  }
  done_ = true;
  // After the rename the new file is in place; the directory fsync makes the rename survive a
  // crash. Its failure is still reported (the caller must not assume durability).
  return options_.durable ? FsyncDirectory(ParentDirectory(path_)) : Status::Ok();
}

Result<bool> AtomicFile::CommitNoReplace() {
  RETURN_IF_ERROR(SyncAndClose());
  const int linked = ::link(tmp_path_.c_str(), path_.c_str());
  const int err = errno;
  ::unlink(tmp_path_.c_str());
  done_ = true;
  if (linked != 0) {
    if (err == EEXIST) return false;
    return ErrnoStatus(err, fmt::format("{}: link from {} failed", path_, tmp_path_));
  }
  if (options_.durable) RETURN_IF_ERROR(FsyncDirectory(ParentDirectory(path_)));
  return true;
}

Status WriteFileAtomically(const std::string& path, std::string_view contents,
                           AtomicWriteOptions options) {
  ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path, options));
  RETURN_IF_ERROR(file.Write(contents.data(), contents.size()));
  return file.Commit();
}

bool IsAtomicTempName(std::string_view name) {
  if (name.size() < kTempInfix.size() + kTempSuffixChars + 1) return false;
  const size_t infix = name.size() - kTempSuffixChars - kTempInfix.size();
  if (name.substr(infix, kTempInfix.size()) != kTempInfix) return false;
  for (char c : name.substr(name.size() - kTempSuffixChars)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'))) return false;
  }
  return true;
}

Result<std::string> MakeTempDirectory(const std::string& path) {
  for (int attempt = 0; attempt < kTempAttempts; ++attempt) {
    std::string tmp = TempName(path);
    if (::mkdir(tmp.c_str(), 0777) == 0) return tmp;
    if (errno != EEXIST) {
      return ErrnoStatus(errno, fmt::format("{}: cannot create the temporary directory {}", path,
                                            tmp));
    }
  }
  return ResourceExhausted("{}: {} temporary names beside it were all taken", path, kTempAttempts);
}

}  // namespace longctx
