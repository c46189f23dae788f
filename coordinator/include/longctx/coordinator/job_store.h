// JobStore: the coordinator's job table on disk, one file per job under <state-dir>/jobs
// (job-<id>.pb, a serialized control::JobRecord), and the document of each unfinished job under
// <state-dir>/documents (job-<id>.doc, removed when the job finishes). Every write is atomic (a
// temporary file, fsync, rename), so a crash leaves either the old or the new file, never a torn
// one; a restart reloads them: finished results survive it, and queued or running jobs run again.
// Expired records are removed (Remove). File names come from job ids only: nothing a peer sends
// becomes a path.
#pragma once

#include <cstdint>
#include <set>
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
  // Deletes the record and the document of a job (absent files are no error).
  Status Remove(uint64_t job_id) const;

  // The highest job id ever handed out, kept when records expire so ids are never reused
  // (<state_dir>/jobs/last-job-id; 0 when absent).
  Status SaveLastJobId(uint64_t id) const;
  uint64_t LoadLastJobId() const;

  // The document of an unfinished job, kept so it can run again after a restart or a lost worker
  // group. Written atomically (renamed into place, not fsynced: it survives a process crash).
  Status SaveDocument(uint64_t job_id, const std::string& bytes) const;
  Result<std::string> LoadDocument(uint64_t job_id) const;  // kNotFound when none was kept
  Status RemoveDocument(uint64_t job_id) const;
  // Removes every kept document whose job is not in `keep` (left by a crash between writing a
  // document and its record, or by a removal that failed).
  void RemoveDocumentsExcept(const std::set<uint64_t>& keep) const;

  const std::string& dir() const { return dir_; }

 private:
  JobStore(std::string dir, std::string doc_dir)
      : dir_(std::move(dir)), doc_dir_(std::move(doc_dir)) {}
  std::string dir_;      // <state_dir>/jobs
  std::string doc_dir_;  // <state_dir>/documents
};

}  // namespace longctx::coordinator
