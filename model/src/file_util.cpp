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

}  // namespace longctx::model::internal
