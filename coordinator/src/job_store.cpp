// JobStore (job_store.h).
#include "longctx/coordinator/job_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "longctx/core/file.h"
#include "longctx/core/log.h"

namespace longctx::coordinator {

namespace fs = std::filesystem;

namespace {

// Writes `bytes` to `dir`/`name` through core's AtomicFile (a random temporary name in the same
// directory, mode 0600, rename). durable: fsync the file before the rename and the directory
// after, so after a crash the name never points at unwritten blocks. Either way the rename is
// atomic: readers see the old file or the new one.
Status WriteAtomically(const std::string& dir, const std::string& name, const std::string& bytes,
                       bool durable) {
  return WriteFileAtomically(fmt::format("{}/{}", dir, name), bytes,
                             AtomicWriteOptions{.mode = 0600, .durable = durable});
}

Status CreateClean(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return FailedPrecondition("{}: cannot create the state directory: {}", dir, ec.message());
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    // AtomicFile's temporary files, and the ".tmp-<name>" of earlier versions, that a killed
    // coordinator left behind.
    if (IsAtomicTempName(name) || name.rfind(".tmp-", 0) == 0) fs::remove(entry.path(), ec);
  }
  if (ec) return FailedPrecondition("{}: cannot list the state directory: {}", dir, ec.message());
  return Status::Ok();
}

}  // namespace

Result<JobStore> JobStore::Open(const std::string& state_dir) {
  if (state_dir.empty()) return InvalidArgument("--state-dir is required");
  const std::string dir = state_dir + "/jobs", docs = state_dir + "/documents";
  RETURN_IF_ERROR(CreateClean(dir));
  RETURN_IF_ERROR(CreateClean(docs));
  return JobStore(dir, docs);
}

Status JobStore::Remove(uint64_t job_id) const {
  const std::string path = fmt::format("{}/job-{}.pb", dir_, job_id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, fmt::format("{}: cannot remove", path));
  }
  return RemoveDocument(job_id);
}

Status JobStore::SaveLastJobId(uint64_t id) const {
  return WriteAtomically(dir_, "last-job-id", std::to_string(id), /*durable=*/false);
}

uint64_t JobStore::LoadLastJobId() const {
  std::ifstream in(dir_ + "/last-job-id");
  uint64_t id = 0;
  if (!(in >> id)) return 0;
  return id;
}

Status JobStore::SaveDocument(uint64_t job_id, const std::string& bytes) const {
  return WriteAtomically(doc_dir_, fmt::format("job-{}.doc", job_id), bytes, /*durable=*/false);
}

Result<std::string> JobStore::LoadDocument(uint64_t job_id) const {
  const std::string path = fmt::format("{}/job-{}.doc", doc_dir_, job_id);
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("{}: no document kept for job {}", path, job_id);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return DataLoss("{}: read error", path);
  return bytes;
}

void JobStore::RemoveDocumentsExcept(const std::set<uint64_t>& keep) const {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(doc_dir_, ec)) {
    const std::string name = entry.path().filename().string();
    uint64_t id = 0;
    if (std::sscanf(name.c_str(), "job-%" SCNu64 ".doc", &id) == 1 && keep.count(id)) continue;
    LONGCTX_LOG_INFO("coordinator: removing the stale document file {}", entry.path().string());
    fs::remove(entry.path(), ec);
  }
}

Status JobStore::RemoveDocument(uint64_t job_id) const {
  const std::string path = fmt::format("{}/job-{}.doc", doc_dir_, job_id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, fmt::format("{}: cannot remove", path));
  }
  return Status::Ok();
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
  return WriteAtomically(dir_, fmt::format("job-{}.pb", record.job_id()), bytes, durable);
}

}  // namespace longctx::coordinator
