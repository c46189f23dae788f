// `longctx submit` (a document and/or a question to the coordinator, with progress and the
// result) and `longctx status` (worker groups and the caller's jobs, a page at a time; one job's
// full record with --job). Both take the client token from --token-file or LONGCTX_TOKEN, never
// from the command line; the token's identity decides which jobs and documents are reachable.
// A submit whose connection is lost after its job was queued reconnects and waits for the job's
// record (a restarted coordinator runs it again).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "commands.h"
#include "longctx/coordinator/client.h"
#include "longctx/coordinator/frame.h"
#include "longctx/core/file.h"

namespace longctx::cli {
namespace {

namespace co = longctx::coordinator;

struct ConnectFlags {
  std::string coordinator = "127.0.0.1:7070";
  std::string token_file;
  co::TlsConfig tls;
  double timeout_s = 3600;  // the whole command
};

struct SubmitFlags {
  ConnectFlags connect;
  std::string input, doc_id, query, out, progress = "auto";
  int64_t generate = 0;
  int repeat = 1;  // the same job this many times over one connection (benchmarks)
};

struct StatusFlags {
  ConnectFlags connect;
  uint64_t job = 0, before = 0;
  uint32_t limit = 20;
  std::string out;
};

void AddConnectFlags(CLI::App& app, ConnectFlags* f) {
  app.add_option("--coordinator", f->coordinator, "HOST:PORT of the coordinator")
      ->capture_default_str();
  app.add_option("--token-file", f->token_file,
                 "file holding the shared token (else the LONGCTX_TOKEN environment variable)");
  app.add_option("--tls-ca", f->tls.ca_file,
                 "TLS: the CA of the coordinator's certificate (enables TLS)");
  app.add_option("--tls-cert", f->tls.cert_file, "TLS: a client certificate to present (optional)");
  app.add_option("--tls-key", f->tls.key_file, "TLS: its private key");
  app.add_option("--timeout", f->timeout_s, "seconds the whole command may take")
      ->capture_default_str();
}

Result<std::unique_ptr<co::ControlConnection>> Connect(const ConnectFlags& f, co::Deadline* end) {
  if (!(f.timeout_s > 0)) return InvalidArgument("--timeout must be > 0, got {}", f.timeout_s);
  *end = co::Clock::now() + std::chrono::milliseconds(int64_t(f.timeout_s * 1e3));
  std::string host;
  uint16_t port = 0;
  RETURN_IF_ERROR(co::ParseHostPort(f.coordinator, false, &host, &port).WithContext("--coordinator"));
  ASSIGN_OR_RETURN(std::string token, co::LoadToken(f.token_file));
  // Connecting gets at most 30 s of the budget: a dead address fails fast.
  const co::Deadline connect_by = std::min(*end, co::Clock::now() + std::chrono::seconds(30));
  return co::ControlConnection::ConnectClient(host, port, token, connect_by, "", f.tls);
}

// After the connection is lost with job `job_id` already queued (a coordinator restart keeps it):
// reconnect (every second) and poll its record until it is done or failed, or until `end`.
// The result is returned as the RESULT event the lost connection would have carried.
Result<control::JobEvent> AwaitJob(const ConnectFlags& f, uint64_t job_id, co::Deadline end) {
  std::string host;
  uint16_t port = 0;
  RETURN_IF_ERROR(co::ParseHostPort(f.coordinator, false, &host, &port));
  ASSIGN_OR_RETURN(std::string token, co::LoadToken(f.token_file));
  std::unique_ptr<co::ControlConnection> conn;
  Status last = Status(StatusCode::kUnavailable, "not connected");
  while (co::Clock::now() < end) {
    if (!conn) {
      const co::Deadline by = std::min(end, co::Clock::now() + std::chrono::seconds(5));
      Result<std::unique_ptr<co::ControlConnection>> c =
          co::ControlConnection::ConnectClient(host, port, token, by, "", f.tls);
      if (c.ok()) {
        conn = std::move(*c);
      } else {
        last = c.status();
        if (last.code() != StatusCode::kUnavailable && last.code() != StatusCode::kDeadlineExceeded) {
          return last;  // refused (a token problem): waiting cannot help
        }
      }
    }
    if (conn) {
      Result<control::StatusReply> r = co::QueryStatus(*conn, job_id, end);
      if (!r.ok()) {
        last = r.status();
        conn.reset();
      } else if (r->job().job_id() != job_id) {
        return NotFound("job {} is no longer known to the coordinator", job_id);
      } else if (r->job().state() == control::JOB_DONE) {
        control::JobEvent e;
        e.set_kind(control::JobEvent::RESULT);
        e.set_job_id(job_id);
        e.set_group_id(r->job().group_id());
        *e.mutable_result() = r->job().result();
        return e;
      } else if (r->job().state() == control::JOB_FAILED) {
        return FailedPrecondition("job {} failed: {}", job_id, r->job().error());
      }
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  return Status(StatusCode::kDeadlineExceeded,
                fmt::format("job {}: no result before --timeout ({})", job_id, last.message()));
}

const char* StateName(control::JobState s) {
  switch (s) {
    case control::JOB_QUEUED: return "queued";
    case control::JOB_RUNNING: return "running";
    case control::JOB_DONE: return "done";
    case control::JOB_FAILED: return "failed";
    default: return "unknown";
  }
}

// result.json and generated.txt of a finished job (the same fields as `longctx run`'s outputs:
// the appended tokens are tokens.npy's tail, the globals globals.npy).
Status WriteResult(const std::string& dir, uint64_t job_id, const std::string& doc_id,
                   const control::JobResult& r) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return InvalidArgument("{}: cannot create the output directory: {}", dir, ec.message());
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/generated.txt", r.generated()));
  const std::string json = fmt::format(
      "{{\n  \"job_id\": {},\n  \"doc_id\": \"{}\",\n  \"document_tokens\": {},\n"
      "  \"globals\": [{}],\n  \"appended_tokens\": [{}],\n  \"next_token\": {},\n"
      "  \"prefilled\": {},\n  \"seconds\": {{\"prefill\": {:.6f}, \"first_token\": {:.6f}, "
      "\"total\": {:.6f}}},\n  \"ms_per_token\": {:.4f},\n  \"comm_bytes\": {}\n}}\n",
      job_id, doc_id, r.document_tokens(), fmt::join(r.globals(), ", "),
      fmt::join(r.appended_tokens(), ", "), r.next_token(), r.prefilled() ? "true" : "false",
      r.prefill_seconds(), r.first_token_seconds(), r.seconds(), r.ms_per_token(), r.comm_bytes());
  return WriteFileAtomically(dir + "/result.json", json);
}

// Generated bytes for a terminal: printable ASCII as is, anything else as \xHH.
std::string Printable(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7f && c != '\\') out.push_back(char(c));
    else out += fmt::format("\\x{:02x}", c);
  }
  return out;
}

// 64-bit FNV-1a: a default document id from the contents (same text, same id).
uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

Status RunSubmit(const SubmitFlags& f) {
  if (f.progress != "auto" && f.progress != "on" && f.progress != "off") {
    return InvalidArgument("--progress must be auto, on or off, got '{}'", f.progress);
  }
  if (f.generate < 0) return InvalidArgument("--generate must be >= 0, got {}", f.generate);
  if (f.repeat < 1) return InvalidArgument("--repeat must be >= 1, got {}", f.repeat);
  co::JobRequest req;
  std::string document;
  req.doc_id = f.doc_id;
  if (!f.input.empty()) {
    std::ifstream in(f.input, std::ios::binary);
    if (!in) return NotFound("{}: cannot open the input document", f.input);
    document.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) return DataLoss("{}: read error", f.input);
    if (document.empty()) return InvalidArgument("{}: the input document is empty", f.input);
    req.document = &document;
    if (req.doc_id.empty()) req.doc_id = fmt::format("doc-{:016x}", Fnv1a(document));
  } else if (f.doc_id.empty()) {
    return InvalidArgument("give --input FILE (a new document) or --doc-id ID (a held one)");
  } else if (f.query.empty() && f.generate == 0) {
    return InvalidArgument("--doc-id without --input needs --query or --generate");
  }
  RETURN_IF_ERROR(co::ValidateDocId(req.doc_id).WithContext("--doc-id"));
  req.question = f.query;
  req.generate = f.generate;

  co::Deadline end;
  ASSIGN_OR_RETURN(std::unique_ptr<co::ControlConnection> conn, Connect(f.connect, &end));
  const bool show = f.progress != "off";
  const bool bar = show && isatty(fileno(stderr));
  int64_t tokens = 0;
  uint64_t queued_job = 0;  // the job id of the request in flight, once QUEUED arrived
  auto on_event = [&](const control::JobEvent& e) {
    if (e.kind() == control::JobEvent::QUEUED) queued_job = e.job_id();
    if (!show) return;
    switch (e.kind()) {
      case control::JobEvent::QUEUED:
        fmt::print(stderr, "submit: job {} queued (doc {})\n", e.job_id(), req.doc_id);
        break;
      case control::JobEvent::STARTED:
        fmt::print(stderr, "submit: job {} started on worker group {}\n", e.job_id(), e.group_id());
        break;
      case control::JobEvent::REQUEUED:
        if (bar && tokens > 0) fmt::print(stderr, "\n");
        tokens = 0;
        fmt::print(stderr, "submit: job {} queued again: {}\n", e.job_id(), e.error());
        break;
      case control::JobEvent::PROGRESS:
        if (bar) {
          const int width = 30, done = int(width * e.layer() / e.layers());
          fmt::print(stderr, "\r[{:<{}}] layer {}/{}   ", std::string(size_t(done), '#'), width,
                     e.layer(), e.layers());
          if (e.layer() == e.layers()) fmt::print(stderr, "\n");
        } else {
          fmt::print(stderr, "progress: layer {}/{} done\n", e.layer(), e.layers());
        }
        break;
      case control::JobEvent::TOKEN:
        ++tokens;
        if (bar) fmt::print(stderr, "\rgenerated {} token(s)   ", tokens);
        break;
      default:
        break;
    }
  };
  const auto t0 = co::Clock::now();
  control::JobEvent done;
  for (int k = 0; k < f.repeat; ++k) {
    queued_job = 0;
    Result<control::JobEvent> r = co::SubmitJob(*conn, req, on_event, end);
    if (!r.ok() && r.status().code() == StatusCode::kUnavailable && queued_job != 0 &&
        f.repeat == 1) {
      // The coordinator went away after queueing the job; a restarted one runs it again.
      if (show) {
        fmt::print(stderr, "submit: lost the coordinator ({}); waiting for job {}\n",
                   r.status().message(), queued_job);
      }
      r = AwaitJob(f.connect, queued_job, end);
    }
    ASSIGN_OR_RETURN(done, std::move(r));
  }
  if (f.repeat > 1) {
    const double secs = std::chrono::duration<double>(co::Clock::now() - t0).count();
    fmt::print("submit: {} jobs in {:.3f} s: {:.1f} jobs/s, {:.2f} ms per job\n", f.repeat, secs,
               f.repeat / secs, 1e3 * secs / f.repeat);
  }
  if (bar && tokens > 0) fmt::print(stderr, "\n");
  const control::JobResult& r = done.result();
  fmt::print("job {}: done on worker group {}: doc {}, {} tokens, {} globals{}\n", done.job_id(),
             done.group_id(), req.doc_id, r.document_tokens(), r.globals_size(),
             r.prefilled() ? fmt::format(", prefill {:.3f} s", r.prefill_seconds())
                           : std::string(", document already held (no prefill)"));
  if (!req.question.empty() || req.generate > 0) {
    fmt::print("job {}: {} appended token(s); first token {:.1f} ms, {:.2f} ms/token; "
               "generated: {}\n", done.job_id(), r.appended_tokens_size(),
               r.first_token_seconds() * 1e3, r.ms_per_token(), Printable(r.generated()));
  }
  if (!f.out.empty()) RETURN_IF_ERROR(WriteResult(f.out, done.job_id(), req.doc_id, r));
  return Status::Ok();
}

Status RunStatus(const StatusFlags& f) {
  if (f.limit < 1 || f.limit > 100) return InvalidArgument("--limit must be in [1, 100]");
  co::Deadline end;
  ASSIGN_OR_RETURN(std::unique_ptr<co::ControlConnection> conn, Connect(f.connect, &end));
  control::StatusRequest request;
  request.set_job_id(f.job);
  request.set_before_job_id(f.before);
  request.set_limit(f.limit);
  ASSIGN_OR_RETURN(control::StatusReply s, co::QueryStatus(*conn, request, end));
  if (f.job != 0) {
    // Another client identity's job is reported exactly like one that does not exist.
    if (s.job().job_id() != f.job) return NotFound("job {} is not known to the coordinator", f.job);
    const control::JobRecord& j = s.job();
    fmt::print("job {}: {}{}; doc {}, {} document bytes, question {} bytes, generate {}, group {}, "
               "attempts {}, queued {:.3f} s, total {:.3f} s\n", j.job_id(), StateName(j.state()),
               j.error().empty() ? "" : " (" + j.error() + ")", j.doc_id(), j.document_bytes(),
               j.question_bytes(), j.generate(), j.group_id().empty() ? "-" : j.group_id(),
               j.attempts(), j.queue_seconds(), j.total_seconds());
    for (const std::string& why : j.requeue_reasons()) {
      fmt::print("job {}: requeued: {}\n", j.job_id(), why);
    }
    if (j.state() == control::JOB_DONE) {
      fmt::print("job {}: {} tokens, {} globals, generated: {}\n", j.job_id(),
                 j.result().document_tokens(), j.result().globals_size(),
                 Printable(j.result().generated()));
      if (!f.out.empty()) RETURN_IF_ERROR(WriteResult(f.out, j.job_id(), j.doc_id(), j.result()));
    } else if (!f.out.empty()) {
      return FailedPrecondition("job {} is {}: no result to write", j.job_id(), StateName(j.state()));
    }
    return Status::Ok();
  }
  fmt::print("workers: {} group(s); clients: {}; jobs queued {}, running {}; uploads in "
             "progress {}\n", s.workers_size(), s.clients(), s.queued(), s.running(),
             s.uploads_in_progress());
  fmt::print("client: {} (its jobs and documents only)\n", s.client());
  for (const control::WorkerInfo& w : s.workers()) {
    fmt::print("  worker {} {} ranks={} model={} {} documents=[{}]\n", w.group_id(), w.name(),
               w.ranks(), w.model(),
               w.busy() ? fmt::format("busy(job {})", w.running_job()) : std::string("idle"),
               fmt::join(w.documents(), ","));
  }
  for (const control::JobRecord& j : s.jobs()) {
    fmt::print("  job {} {} doc={} group={} bytes={}{}{}\n", j.job_id(), StateName(j.state()),
               j.doc_id(), j.group_id().empty() ? "-" : j.group_id(), j.document_bytes(),
               j.requeue_reasons_size() > 0 ? fmt::format(" requeued={}", j.requeue_reasons_size())
                                            : std::string(),
               j.error().empty() ? "" : " error=" + j.error());
  }
  if (s.next_before_job_id() != 0) {
    fmt::print("more: --before {}\n", s.next_before_job_id());
  }
  return Status::Ok();
}

}  // namespace

Runner AddSubmitCommand(CLI::App& app) {
  auto f = std::make_shared<SubmitFlags>();
  AddConnectFlags(app, &f->connect);
  app.add_option("--input", f->input, "the document (bytes are tokens); uploaded and prefilled");
  app.add_option("--doc-id", f->doc_id,
                 "document id (default: from the contents); alone: a document a worker holds");
  app.add_option("--query", f->query, "a question appended after the document (global tokens)");
  app.add_option("--generate", f->generate, "tokens to decode greedily")->capture_default_str();
  app.add_option("--out", f->out, "write result.json and generated.txt here");
  app.add_option("--progress", f->progress, "auto | on | off")->capture_default_str();
  app.add_option("--repeat", f->repeat, "run the job this many times, one after another (benchmark)")
      ->capture_default_str();
  return [f] { return RunSubmit(*f); };
}

Runner AddStatusCommand(CLI::App& app) {
  auto f = std::make_shared<StatusFlags>();
  AddConnectFlags(app, &f->connect);
  app.add_option("--job", f->job, "one job's full record (its result with --out)");
  app.add_option("--limit", f->limit, "jobs listed (newest first), at most 100")
      ->capture_default_str();
  app.add_option("--before", f->before, "list jobs older than this job id (the next page)");
  app.add_option("--out", f->out, "with --job: write result.json and generated.txt here");
  return [f] { return RunStatus(*f); };
}

}  // namespace longctx::cli
