// JobStore (job_store.h).
#include "longctx/coordinator/job_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>

#include "longctx/core/file.h"
#include "longctx/core/log.h"

namespace longctx::coordinator {

namespace fs = std::filesystem;

Result<JobStore> JobStore::Open(const std::string& state_dir) {
  if (state_dir.empty()) return InvalidArgument("--state-dir is required");
  const std::string dir = state_dir + "/jobs";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return FailedPrecondition("{}: cannot create the state directory: {}", dir, ec.message());
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0) fs::remove(entry.path(), ec);
  }
  if (ec) return FailedPrecondition("{}: cannot list the state directory: {}", dir, ec.message());
  return JobStore(dir);
}

Result<std::vector<control::JobRecord>> JobStore::LoadAll() const {
  std::vector<control::JobRecord> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("job-", 0) != 0 || entry.path().extension() != ".pb") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    control::JobRecord r;
    if (!in || !r.ParseFromIstream(&in) || r.job_id() == 0 ||
        name != "job-" + std::to_string(r.job_id()) + ".pb") {
      LONGCTX_LOG_WARN("coordinator: skipping the unreadable job record {}", entry.path().string());
      continue;
    }
    out.push_back(std::move(r));
  }
  if (ec) return FailedPrecondition("{}: cannot list the state directory: {}", dir_, ec.message());
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.job_id() < b.job_id(); });
  return out;
}

Status JobStore::Save(const control::JobRecord& record, bool durable) const {
  std::string bytes;
  if (!record.SerializeToString(&bytes)) return Internal("cannot serialize job {}", record.job_id());
  const std::string path = fmt::format("{}/job-{}.pb", dir_, record.job_id());
  const std::string tmp = fmt::format("{}/.tmp-job-{}.pb", dir_, record.job_id());
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (fd.get() < 0) return ErrnoStatus(errno, fmt::format("{}: cannot create", tmp));
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t w = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return ErrnoStatus(errno, fmt::format("{}: cannot write", tmp));
      done += size_t(w);
    }
    // durable: fsync before the rename, so after a crash the name never points at unwritten
    // blocks. Either way the rename is atomic: readers see the old record or the new one.
    if (durable && ::fsync(fd.get()) != 0) {
      return ErrnoStatus(errno, fmt::format("{}: fsync failed", tmp));
    }
    if (fd.Close() != 0) return ErrnoStatus(errno, fmt::format("{}: close failed", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return ErrnoStatus(errno, fmt::format("{}: cannot rename {} into place", path, tmp));
  }
  return Status::Ok();
}

}  // namespace longctx::coordinator
