// Helpers shared by the libFuzzer targets in fuzz/ (built with -DLONGCTX_FUZZ=ON, see
// fuzz/CMakeLists.txt). The file parsers of longctx take paths, so an input is written to one
// scratch file per process (in /dev/shm when it exists: no disk I/O per execution).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace longctx::fuzz {

// A violated invariant traps; libFuzzer reports it as a crash with the input that caused it.
inline void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// The scratch file `name` under /dev/shm (else /tmp), unique to this process.
inline std::string ScratchPath(const char* name) {
  const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return std::string(dir) + "/longctx_fuzz_" + std::to_string(getpid()) + "_" + name;
}

// Replaces the file's content with `size` bytes; false when the file cannot be written.
inline bool WriteScratch(const std::string& path, const uint8_t* data, size_t size) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  size_t done = 0;
  while (done < size) {
    const ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  close(fd);
  return done == size;
}

}  // namespace longctx::fuzz
