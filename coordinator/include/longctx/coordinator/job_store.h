// JobStore: the coordinator's job table on disk, one file per job under <state-dir>/jobs
// (job-<id>.pb, a serialized control::JobRecord). Every write is atomic (a temporary file,
// fsync, rename), so a crash leaves either the old or the new record, never a torn one; a restart
// reloads them, and finished results survive it. File names come from job ids only: nothing a
// peer sends becomes a path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "control.pb.h"
#include "longctx/core/status.h"

namespace longctx::coordinator {

class JobStore {
 public:
  // Creates <state_dir>/jobs when missing; removes temporary files a crash left behind.
  static Result<JobStore> Open(const std::string& state_dir);

  // Every record on disk, in job-id order. A file that does not parse is skipped with a warning
  // (its name is logged), so one damaged record cannot keep the service down.
  Result<std::vector<control::JobRecord>> LoadAll() const;

  // Writes the record atomically (replacing the previous one of that job). durable: fsync the
  // file before the rename, so the record also survives a machine crash (not just a process one).
  Status Save(const control::JobRecord& record, bool durable = true) const;

  const std::string& dir() const { return dir_; }

 private:
  explicit JobStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;  // <state_dir>/jobs
};

}  // namespace longctx::coordinator
