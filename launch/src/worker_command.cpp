// `mpirun -np N longctx worker --coordinator HOST:PORT`: a worker group serving the coordinator.
// Rank 0 holds the connection (WorkerLink, on a thread of its own); every rank runs the same
// loop: rank 0 broadcasts a command at least every half second — idle, a job (with its
// document), or shutdown — and all ranks then drive the Engine together, exactly as
// `longctx run` does, so a job's result equals `longctx run` on the same input and flags.
// Idle followers wait in short collectives, so none hits the communicator's deadline.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "engine_flags.h"
#include "trace_output.h"
#include "longctx/attention/global_selection.h"
#include "longctx/comm/communicator.h"
#include "longctx/coordinator/frame.h"
#include "longctx/coordinator/metrics_http.h"
#include "longctx/coordinator/worker_link.h"
#include "longctx/core/trace.h"
#include "longctx/core/log.h"
#include "longctx/core/metrics.h"
#include "longctx/worker/distributed_attention.h"
#include "longctx/worker/engine.h"

namespace longctx::cli {
namespace {

namespace co = longctx::coordinator;
using namespace std::chrono_literals;

struct WorkerFlags {
  std::string coordinator = "127.0.0.1:7070";
  std::string token_file;
  co::TlsConfig tls;
  EngineFlags engine;     // model, hybrid overrides, threads, --kv-* (the same as `longctx run`)
  int max_documents = 4;  // documents kept (least recently used dropped beyond)
  std::string trace;      // a merged Chrome/Perfetto trace of every rank, written at shutdown
  std::string metrics_listen;  // rank 0's metrics endpoint; empty: none
};

// What one job did on this rank (rank 0's figures go to the metrics).
struct JobFigures {
  bool prefilled = false;
  int64_t document_tokens = 0;
  double prefill_seconds = 0;
  int64_t appended_tokens = 0;  // question + generated
  double answer_seconds = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;
  worker::DistributedStats last_layer;  // of the prefill (every layer moves the same)
};

// Rank 0's series (docs/metrics.md), updated on its main thread after every job.
class WorkerMetrics {
 public:
  explicit WorkerMetrics(metrics::Registry& r)
      : done_(Jobs(r, "done")), failed_(Jobs(r, "failed")),
        prefill_tokens_(Tokens(r, "prefill")), decode_tokens_(Tokens(r, "decode")),
        prefill_rate_(Rate(r, "prefill")), decode_rate_(Rate(r, "decode")),
        sent_(Bytes(r, "sent")), received_(Bytes(r, "received")),
        demotions_(r.MustCounter("longctx_worker_kv_demotions",
                                 "KV block copies moved down a tier (rank 0, held documents)")),
        loads_(r.MustCounter("longctx_worker_kv_loads",
                             "KV blocks read back into the device tier (rank 0)")),
        hits_(r.MustCounter("longctx_worker_kv_prefetch_hits",
                            "Scans that found a demoted block already loaded by prefetch (rank 0)")),
        misses_(r.MustCounter("longctx_worker_kv_prefetch_misses",
                              "Scans that had to load or wait for a demoted block (rank 0)")),
        stall_(r.MustCounter("longctx_worker_kv_stall_seconds",
                             "Seconds scans and gathers waited for KV blocks (rank 0)")),
        hidden_(r.MustGauge("longctx_worker_kv_prefetch_hidden_ratio",
                            "Share of demoted-block reads whose transfer prefetch hid behind "
                            "compute: hits / (hits + misses), since start (rank 0)")) {
    for (const char* tier : {"device", "host", "remote"}) {
      kv_bytes_.push_back(&r.MustGauge("longctx_worker_kv_bytes",
                                       "KV bytes held per tier, all held documents (rank 0)",
                                       {{"tier", tier}}));
      kv_blocks_.push_back(&r.MustGauge("longctx_worker_kv_blocks",
                                        "KV blocks held per tier, all held documents (rank 0)",
                                        {{"tier", tier}}));
    }
    for (const char* phase : {"halo", "global_kv", "global_q", "partials"}) {
      for (const char* dir : {"sent", "received"}) {
        layer_bytes_.push_back(&r.MustGauge(
            "longctx_worker_layer_bytes",
            "Bytes rank 0 moved per layer and phase in the last prefill (DistributedStats)",
            {{"phase", phase}, {"direction", dir}}));
      }
    }
  }

  void AfterJob(bool ok, const JobFigures& j, worker::Engine& engine,
                const std::vector<std::string>& held, const std::string& doc_id) {
    (ok ? done_ : failed_).Inc();
    if (!ok) return;
    if (j.prefilled) {
      prefill_tokens_.Inc(double(j.document_tokens));
      if (j.prefill_seconds > 0) prefill_rate_.Set(double(j.document_tokens) / j.prefill_seconds);
      const worker::DistributedStats& d = j.last_layer;
      size_t i = 0;
      for (const worker::PhaseTraffic* p : {&d.halo, &d.global_kv, &d.global_q, &d.partials}) {
        layer_bytes_[i++]->Set(double(p->sent));
        layer_bytes_[i++]->Set(double(p->received));
      }
    }
    if (j.appended_tokens > 0) {
      decode_tokens_.Inc(double(j.appended_tokens));
      if (j.answer_seconds > 0) decode_rate_.Set(double(j.appended_tokens) / j.answer_seconds);
    }
    sent_.Inc(double(j.bytes_sent));
    received_.Inc(double(j.bytes_received));
    // KV: per-tier totals over the held documents; event counts as deltas of this document's
    // cache since the last job on it (a prefill makes a new cache).
    uint64_t bytes[3] = {0, 0, 0}, blocks[3] = {0, 0, 0};
    for (const std::string& d : held) {
      Result<cache::KvCacheStats> s = engine.CacheStats(d);
      if (!s.ok()) continue;
      size_t t = 0;
      for (const cache::KvTierStats* tier : {&s->device, &s->host, &s->remote}) {
        bytes[t] += tier->bytes;
        blocks[t++] += tier->blocks;
      }
    }
    for (size_t t = 0; t < 3; ++t) {
      kv_bytes_[t]->Set(double(bytes[t]));
      kv_blocks_[t]->Set(double(blocks[t]));
    }
    if (Result<cache::KvCacheStats> s = engine.CacheStats(doc_id); s.ok()) {
      cache::KvCacheStats prev = j.prefilled ? cache::KvCacheStats{} : last_[doc_id];
      demotions_.Inc(double(s->demotions - std::min(s->demotions, prev.demotions)));
      loads_.Inc(double(s->loads - std::min(s->loads, prev.loads)));
      hits_.Inc(double(s->prefetch_hits - std::min(s->prefetch_hits, prev.prefetch_hits)));
      misses_.Inc(
          double(s->prefetch_misses - std::min(s->prefetch_misses, prev.prefetch_misses)));
      stall_.Inc(std::max(0.0, s->stall_seconds - prev.stall_seconds));
      last_[doc_id] = *s;
    }
    for (auto it = last_.begin(); it != last_.end();) {  // forget dropped documents
      it = std::find(held.begin(), held.end(), it->first) == held.end() ? last_.erase(it)
                                                                         : std::next(it);
    }
    const double h = hits_.value(), m = misses_.value();
    hidden_.Set(h + m > 0 ? h / (h + m) : 0.0);
  }

 private:
  static metrics::Counter& Jobs(metrics::Registry& r, const char* outcome) {
    return r.MustCounter("longctx_worker_jobs", "Jobs this worker group finished",
                         {{"outcome", outcome}});
  }
  static metrics::Counter& Tokens(metrics::Registry& r, const char* phase) {
    return r.MustCounter("longctx_worker_tokens",
                         "Tokens processed: prefill (document tokens, all ranks together), decode "
                         "(question + generated tokens)",
                         {{"phase", phase}});
  }
  static metrics::Gauge& Rate(metrics::Registry& r, const char* phase) {
    return r.MustGauge("longctx_worker_tokens_per_second",
                       "Tokens per second of the last job that had this phase", {{"phase", phase}});
  }
  static metrics::Counter& Bytes(metrics::Registry& r, const char* dir) {
    return r.MustCounter("longctx_worker_comm_bytes",
                         "Bytes rank 0 sent or received over the communicator, all jobs",
                         {{"direction", dir}});
  }

  metrics::Counter &done_, &failed_, &prefill_tokens_, &decode_tokens_;
  metrics::Gauge &prefill_rate_, &decode_rate_;
  metrics::Counter &sent_, &received_, &demotions_, &loads_, &hits_, &misses_, &stall_;
  metrics::Gauge& hidden_;
  std::vector<metrics::Gauge*> kv_bytes_, kv_blocks_, layer_bytes_;
  std::map<std::string, cache::KvCacheStats> last_;
};

std::atomic<bool> g_stop{false};
extern "C" void OnStopSignal(int) { g_stop = true; }

// What rank 0 tells every rank each round.
enum class Command : int64_t { kIdle = 0, kJob = 1, kShutdown = 2, kRefused = 3 };

// Rank 0's `bytes` to every rank (AllGatherV where only rank 0 contributes): first a fixed
// header with the size, then the bytes.
Status Broadcast(comm::Communicator& c, Command* cmd, std::string* bytes) {
  int64_t header[2] = {int64_t(*cmd), int64_t(bytes->size())};
  std::vector<size_t> counts(size_t(c.size()), 0);
  counts[0] = sizeof header;
  int64_t got[2] = {0, 0};
  const auto deadline = comm::DeadlineIn(comm::DefaultTimeout());
  RETURN_IF_ERROR(c.AllGatherV(comm::HostBuffer(header, c.rank() == 0 ? sizeof header : 0),
                               comm::HostBuffer(got, sizeof got), counts, deadline));
  *cmd = Command(got[0]);
  if (got[1] == 0) {
    bytes->clear();
    return Status::Ok();
  }
  counts[0] = size_t(got[1]);
  std::string recv(size_t(got[1]), '\0');
  RETURN_IF_ERROR(c.AllGatherV(comm::HostBuffer(bytes->data(), c.rank() == 0 ? bytes->size() : 0),
                               comm::HostBuffer(recv.data(), recv.size()), counts,
                               comm::DeadlineIn(comm::DefaultTimeout())));
  *bytes = std::move(recv);
  return Status::Ok();
}

// A job as broadcast: the serialized Assignment's length (8 bytes), the Assignment, the document.
std::string PackJob(const co::WorkerJob& j) {
  const std::string a = j.assignment.SerializeAsString();
  const uint64_t n = a.size();
  std::string out(sizeof n, '\0');
  std::memcpy(out.data(), &n, sizeof n);
  return out + a + j.document;
}
Status UnpackJob(const std::string& bytes, control::Assignment* a, std::string* document) {
  uint64_t n = 0;
  if (bytes.size() < sizeof n) return Internal("short job broadcast");
  std::memcpy(&n, bytes.data(), sizeof n);
  if (n > bytes.size() - sizeof n || !a->ParseFromArray(bytes.data() + sizeof n, int(n))) {
    return Internal("malformed job broadcast");
  }
  *document = bytes.substr(sizeof n + n);
  return Status::Ok();
}

class WorkerGroup {
 public:
  WorkerGroup(comm::Communicator& c, worker::Engine& engine, co::WorkerLink* link, int max_docs,
              WorkerMetrics* metrics)
      : c_(c), engine_(engine), link_(link), max_docs_(max_docs), metrics_(metrics) {}

  // Runs one job on every rank; rank 0 reports its events. A failed job is reported and the
  // group carries on (the engine agreed on the failure, so the ranks stay in step).
  Status Run(const co::WorkerJob& job) {
    control::JobResult result;
    JobFigures figures;
    Status st = Compute(job, &result, &figures);
    if (c_.rank() != 0) return Status::Ok();
    if (metrics_ != nullptr) {
      metrics_->AfterJob(st.ok(), figures, engine_, held_, job.assignment.doc_id());
    }
    for (const std::string& d : held_) result.add_held_documents(d);
    link_->SetDocuments(held_);
    control::JobEvent e;
    if (st.ok()) {
      e.set_kind(control::JobEvent::RESULT);
      *e.mutable_result() = std::move(result);
    } else {
      e.set_kind(control::JobEvent::FAILED);
      e.set_error(st.message().empty() ? std::string("a rank of the worker group failed (see its "
                                                     "log)")
                                       : st.message());
      for (const std::string& d : held_) e.mutable_result()->add_held_documents(d);
    }
    link_->Send(job, e);
    return Status::Ok();
  }

 private:
  Status Compute(const co::WorkerJob& job, control::JobResult* r, JobFigures* fig) {
    const control::Assignment& a = job.assignment;
    const std::string& doc_id = a.doc_id();
    MaybeKillForTest(c_);
    worker::DocumentInfo info;
    if (!job.document.empty()) {
      std::vector<int32_t> ids(job.document.size());
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(uint8_t(job.document[i]));
      const std::vector<attention::TokenClass> classes = attention::ClassifyBytes(job.document);
      auto progress = [&](int64_t layer, int64_t layers) {
        if (c_.rank() != 0) return;
        control::JobEvent e;
        e.set_kind(control::JobEvent::PROGRESS);
        e.set_layer(layer);
        e.set_layers(layers);
        link_->Send(job, e);
      };
      Forget(doc_id);
      RETURN_IF_ERROR(engine_.Prefill(doc_id, ids, classes, progress, &info));
      held_.push_back(doc_id);
      while (int(held_.size()) > max_docs_) {  // least recently used first
        RETURN_IF_ERROR(engine_.Drop(held_.front()));
        held_.erase(held_.begin());
      }
      r->set_prefilled(true);
      r->set_prefill_seconds(info.prefill_seconds);
      fig->prefilled = true;
      fig->document_tokens = info.tokens;
      fig->prefill_seconds = info.prefill_seconds;
      fig->last_layer = info.forward.last_layer;
    } else {
      // Every rank holds the same documents, so every rank takes the same branch.
      const worker::DocumentInfo* held = engine_.Info(doc_id);
      if (held == nullptr) return NotFound("document '{}' is not held by this worker group", doc_id);
      info = *held;
      Forget(doc_id);
      held_.push_back(doc_id);  // most recently used
    }
    r->set_document_tokens(info.tokens);
    r->set_next_token(info.next_token);
    for (int64_t g : info.globals) r->add_globals(g);
    uint64_t bytes = info.forward.comm_bytes_sent + info.forward.comm_bytes_received;
    double seconds = r->prefill_seconds();
    if (!a.question().empty() || a.generate() > 0) {
      auto on_token = [&](int32_t token, int64_t index) {
        if (c_.rank() != 0) return;
        control::JobEvent e;
        e.set_kind(control::JobEvent::TOKEN);
        e.set_token(token);
        e.set_index(index);
        link_->Send(job, e);
      };
      worker::AnswerResult ans;
      RETURN_IF_ERROR(engine_.Answer(doc_id, a.question(), a.generate(), on_token, &ans));
      for (int32_t t : ans.appended) r->add_appended_tokens(t);
      for (int64_t g : ans.appended_globals) r->add_globals(g);
      r->set_generated(ans.generated);
      r->set_first_token_seconds(ans.first_token_seconds);
      r->set_ms_per_token(ans.appended.empty() ? 0.0
                                               : 1e3 * ans.seconds / double(ans.appended.size()));
      bytes += ans.bytes_sent + ans.bytes_received;
      seconds += ans.seconds;
      fig->appended_tokens = int64_t(ans.appended.size());
      fig->answer_seconds = ans.seconds;
      fig->bytes_sent += ans.bytes_sent;
      fig->bytes_received += ans.bytes_received;
    }
    if (fig->prefilled) {
      fig->bytes_sent += info.forward.comm_bytes_sent;
      fig->bytes_received += info.forward.comm_bytes_received;
    }
    r->set_seconds(seconds);
    r->set_comm_bytes(bytes);
    return Status::Ok();
  }

  void Forget(const std::string& doc_id) {
    held_.erase(std::remove(held_.begin(), held_.end(), doc_id), held_.end());
  }

  comm::Communicator& c_;
  worker::Engine& engine_;
  co::WorkerLink* link_;  // rank 0 only
  int max_docs_;
  std::vector<std::string> held_;  // least recently used first; the same on every rank
  WorkerMetrics* metrics_;         // rank 0 with --metrics-listen, else null
};

Status RunWorker(const WorkerFlags& f) {
  ASSIGN_OR_RETURN(std::shared_ptr<comm::Communicator> world, comm::WorldCommunicator("auto"));
  comm::Communicator& c = *world;
  std::signal(SIGINT, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);

  // Flags and the token: checked on every rank (the same files), agreed before anything starts.
  worker::EngineOptions eo;
  co::WorkerLinkOptions lo;
  Status st = [&]() -> Status {
    RETURN_IF_ERROR(co::ParseHostPort(f.coordinator, false, &lo.host, &lo.port)
                        .WithContext("--coordinator"));
    // The worker token: a credential of its own, not a client token (the coordinator refuses
    // a client token from a worker group).
    ASSIGN_OR_RETURN(lo.token, co::LoadSecret(f.token_file, "LONGCTX_WORKER_TOKEN",
                                              "--worker-token-file", "worker token"));
    if (f.max_documents < 1 || f.max_documents > co::kMaxHeldDocuments) {
      return InvalidArgument("--max-documents must be in [1, {}]", co::kMaxHeldDocuments);
    }
    ASSIGN_OR_RETURN(eo, f.engine.Options(/*keep_kv=*/true));
    // A worker group reads documents and questions as bytes (WorkerGroup::Compute has no
    // tokenizer yet): a model with its own tokenizer.json would compute on the wrong ids and
    // answer garbage with exit 0, so it is refused; `longctx run` serves it.
    std::error_code ec;
    if (std::filesystem::is_regular_file(std::filesystem::path(f.engine.model) / "tokenizer.json",
                                         ec)) {
      return Unimplemented("{}: a model with a tokenizer.json is not served by worker groups yet "
                           "(they read bytes); use longctx run",
                           f.engine.model);
    }
    return Status::Ok();
  }();
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
  // Rank 0's metrics endpoint (its own thread); a port it cannot bind fails the whole group.
  metrics::Registry registry;
  std::unique_ptr<WorkerMetrics> worker_metrics;
  std::unique_ptr<co::MetricsHttpServer> metrics_http;
  if (c.rank() == 0 && !f.metrics_listen.empty()) {
    st = [&]() -> Status {
      co::MetricsHttpOptions mo;
      RETURN_IF_ERROR(co::ParseMetricsListen(f.metrics_listen, &mo.host, &mo.port));
      worker_metrics = std::make_unique<WorkerMetrics>(registry);
      ASSIGN_OR_RETURN(metrics_http, co::MetricsHttpServer::Start(registry, mo));
      fmt::print(stderr, "longctx worker: metrics on http://{}:{}/metrics\n", metrics_http->host(),
                 metrics_http->port());
      return Status::Ok();
    }();
  }
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
  // The remote KV tier (collective), kept until every rank is done (after the engine).
  ASSIGN_OR_RETURN(eo.remote, f.engine.kv.JoinRemote(c));
  RemoteTierGuard remote_guard(c, eo.remote);
  ASSIGN_OR_RETURN(std::unique_ptr<worker::Engine> engine, worker::Engine::Open(c, eo));

  std::unique_ptr<co::WorkerLink> link;
  if (c.rank() == 0) {
    char host[64] = {};
    gethostname(host, sizeof host - 1);
    lo.name = fmt::format("{}:{}", host, getpid());
    lo.model = f.engine.model;
    lo.ranks = c.size();
    lo.tls = f.tls;
    link = std::make_unique<co::WorkerLink>(lo);
    link->Start();
  }
  fmt::print(stderr, "longctx worker: rank {}/{} (pid {}) serving {} for {}\n", c.rank(), c.size(),
             getpid(), f.engine.model, f.coordinator);
  WorkerGroup group(c, *engine, link.get(), f.max_documents, worker_metrics.get());
  // --trace: every job's spans until shutdown (collective start and finish).
  ASSIGN_OR_RETURN(TraceSession trace_session, TraceSession::Start(c, f.trace));
  Status refused;
  while (true) {
    Command cmd = Command::kIdle;
    std::string bytes;
    std::optional<co::WorkerJob> job;
    if (c.rank() == 0) {
      if (g_stop) {
        cmd = Command::kShutdown;
      } else if (Status fatal = link->fatal(); !fatal.ok()) {
        cmd = Command::kRefused;
        refused = fatal;
      } else if ((job = link->NextJob(500ms))) {
        cmd = Command::kJob;
        bytes = PackJob(*job);
      }
    }
    RETURN_IF_ERROR(Broadcast(c, &cmd, &bytes));
    if (cmd == Command::kShutdown) break;
    if (cmd == Command::kRefused) {
      return c.rank() == 0 ? refused : Status(StatusCode::kFailedPrecondition, "");
    }
    if (cmd != Command::kJob) continue;
    if (c.rank() != 0) {
      job.emplace();
      RETURN_IF_ERROR(UnpackJob(bytes, &job->assignment, &job->document));
    }
    bytes.clear();
    bytes.shrink_to_fit();
    trace::TraceSpan job_span("job", "phase");
    RETURN_IF_ERROR(group.Run(*job));
  }
  RETURN_IF_ERROR(trace_session.Finish());
  if (c.rank() == 0) fmt::print(stderr, "longctx worker: stopped\n");
  return Status::Ok();
}

}  // namespace

Runner AddWorkerCommand(CLI::App& app) {
  auto f = std::make_shared<WorkerFlags>();
  app.add_option("--coordinator", f->coordinator, "HOST:PORT of the coordinator")
      ->capture_default_str();
  app.add_option("--tls-ca", f->tls.ca_file,
                 "TLS: the CA of the coordinator's certificate (enables TLS)");
  app.add_option("--tls-cert", f->tls.cert_file,
                 "TLS: the worker group's certificate, signed by the coordinator's --tls-ca");
  app.add_option("--tls-key", f->tls.key_file, "TLS: its private key");
  app.add_option("--worker-token-file,--token-file", f->token_file,
                 "file holding the worker token (the coordinator's --worker-token-file; else the "
                 "LONGCTX_WORKER_TOKEN environment variable)");
  f->engine.Register(app);
  app.add_option("--metrics-listen", f->metrics_listen,
                 "rank 0 serves Prometheus metrics at http://HOST:PORT/metrics (PORT alone: "
                 "127.0.0.1; 0: any free port); unauthenticated: loopback or a trusted network");
  app.add_option("--max-documents", f->max_documents,
                 "prefilled documents kept for later questions (least recently used dropped)")
      ->capture_default_str();
  app.add_option("--trace", f->trace,
                 "at shutdown, write a Chrome/Perfetto timeline of every rank to this JSON file "
                 "(docs/observability.md)");
  return [f] { return RunWorker(*f); };
}

}  // namespace longctx::cli
