// POSIX file plumbing shared by every component that reads or writes files: an owned file
// descriptor (RAII), the one mapping of errno values to Status codes, and the one atomic-write
// path (AtomicFile) through which every file longctx writes goes, so that no reader and no
// crash ever sees a half-written file.
#pragma once

#include <sys/types.h>

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

// Writes all `bytes` to `fd` (retrying short writes and EINTR); `what` names the file in the
// error ("<what>: write failed: <strerror>").
Status WriteAll(int fd, const void* data, size_t bytes, std::string_view what);

// The directory holding `path` ("." for a bare name).
std::string ParentDirectory(const std::string& path);

// fsync()s a directory, making the renames and creations in it durable. A file system that
// cannot sync directories (EINVAL) is not an error.
Status FsyncDirectory(const std::string& dir);

struct AtomicWriteOptions {
  // Permission bits the file is created with, less the umask (0666: as fopen/ofstream do); the
  // file never exists with wider bits, even for a moment (a token file is 0600 from its first
  // byte).
  mode_t mode = 0666;
  // true: Commit fsyncs the file before the rename and the directory after it, so after a
  // crash `path` names the old file or the whole new one. false: only the rename (readers
  // still see old or new, but a machine crash may leave the new name on unwritten blocks);
  // for state that is rewritten many times a second and may be lost (the coordinator's
  // non-durable job records).
  bool durable = true;
};

// A file written under a temporary name in the same directory as `path` and renamed onto
// `path` by Commit(). The temporary name is "<path>.tmp.<12 random characters>", created with
// O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC (retrying another name when it exists), so neither a
// pre-existing file nor a symlink planted at a temporary name can redirect the write; a symlink
// at `path` itself is replaced by the rename, never written through. Destroying it
// uncommitted removes the temporary file, so a failed write leaves nothing behind (and an
// existing file at `path` untouched). Any number of writers, in one process or many, may write
// the same path at once: each has its own temporary file and the last rename wins.
class AtomicFile {
 public:
  static Result<AtomicFile> Create(const std::string& path, AtomicWriteOptions options = {});
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
  // fsync (durable), close, rename onto `path`, fsync the directory (durable).
  Status Commit();
  // As Commit, but never replaces an existing `path`: link() instead of rename(). Returns
  // false, writing nothing, when `path` exists (the caller then reads the file that won).
  Result<bool> CommitNoReplace();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_path_; }

 private:
  AtomicFile(std::string path, std::string tmp_path, UniqueFd fd, AtomicWriteOptions options)
      : path_(std::move(path)), tmp_path_(std::move(tmp_path)), fd_(std::move(fd)),
        options_(options) {}
  Status SyncAndClose();
  std::string path_;
  std::string tmp_path_;
  UniqueFd fd_;
  AtomicWriteOptions options_;
  bool done_ = false;
};

// AtomicFile::Create + Write + Commit.
Status WriteFileAtomically(const std::string& path, std::string_view contents,
                           AtomicWriteOptions options = {});

// True for a name AtomicFile gives its temporary files ("<name>.tmp.<12 of [0-9a-z]>"), so a
// directory owner can remove what a killed writer left behind.
bool IsAtomicTempName(std::string_view file_name);

// Creates a fresh directory "<path>.tmp.<random>" beside `path` (mode 0777 less the umask; never
// an existing entry) for writers that build a whole directory and rename it into place.
Result<std::string> MakeTempDirectory(const std::string& path);

}  // namespace longctx
