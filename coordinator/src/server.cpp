// The coordinator server (server.h): sessions, the job table and dispatch.
#include "longctx/coordinator/server.h"

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include <boost/asio.hpp>

#include "longctx/coordinator/job_store.h"
#include "longctx/coordinator/tls.h"
#include "longctx/core/log.h"

namespace longctx::coordinator {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}
double Seconds(std::chrono::milliseconds ms) { return double(ms.count()) / 1e3; }

control::Envelope ErrorEnvelope(uint64_t request_id, const std::string& message, bool fatal) {
  control::Envelope env;
  env.set_request_id(request_id);
  env.mutable_error()->set_message(message);
  env.mutable_error()->set_fatal(fatal);
  return env;
}

// At most `bytes` bytes of `text`, cut at a UTF-8 character boundary (proto3 strings must stay
// valid UTF-8), with "..." appended when cut.
std::string Truncated(const std::string& text, size_t bytes) {
  if (text.size() <= bytes) return text;
  size_t n = bytes;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return text.substr(0, n) + "...";
}

// Longest error or requeue reason kept in a listing or a record, bytes.
constexpr size_t kMaxReasonBytes = 256;
// Records listed by one status reply at most (and by default).
constexpr uint32_t kMaxStatusJobs = 100;
// A failed-authentication count decays after this long without a failure.
constexpr auto kAuthFailureMemory = std::chrono::minutes(10);

}  // namespace

class Session;

// One job: its record (what is persisted and reported) and what only lives while it runs.
struct Job {
  control::JobRecord record;      // record.owner: the client identity; record.doc_id: its name
  std::weak_ptr<Session> client;  // the connection that submitted it (gone: events are dropped)
  uint64_t request_id = 0;        // the client's request, echoed on every event
  // Bytes to prefill; null for a Query. Kept (and on disk) until the job finishes, so a job whose
  // worker group is lost, or that a restart finds unfinished, can run again.
  std::shared_ptr<const std::string> document;
  Clock::time_point queued_at, started_at;
  bool restored = false;          // loaded from disk at start (its groups may still reconnect)
};

// What a worker group holds a job's document as.
std::string HeldName(const Job& job) {
  return ScopedDocId(job.record.owner(), job.record.doc_id());
}

// The service's series (docs/metrics.md). Updated on the io_context thread; a scrape reads them
// from the metrics endpoint's thread (atomics, metrics.h).
struct ServiceMetrics {
  explicit ServiceMetrics(metrics::Registry& r)
      : submitted(Jobs(r, "submitted")), started(Jobs(r, "started")), done(Jobs(r, "done")),
        failed(Jobs(r, "failed")), requeued(Jobs(r, "requeued")),
        queued(r.MustGauge("longctx_jobs_queued", "Jobs waiting for a worker group")),
        running(r.MustGauge("longctx_jobs_running", "Jobs a worker group is running")),
        groups(r.MustGauge("longctx_worker_groups",
                           "Worker groups connected and registered (alive)")),
        queue_wait(Phase(r, "queue_wait")), run(Phase(r, "run")), total(Phase(r, "total")),
        prefill(Phase(r, "prefill")), first_token(Phase(r, "first_token")) {}

  static metrics::Counter& Jobs(metrics::Registry& r, const char* event) {
    return r.MustCounter("longctx_jobs",
                         "Job transitions: submitted, started (dispatched to a worker group), "
                         "done, failed, requeued (its worker group was lost)",
                         {{"event", event}});
  }
  static metrics::Histogram& Phase(metrics::Registry& r, const char* phase) {
    return r.MustHistogram("longctx_job_phase_seconds",
                           "Job latency by phase, seconds: queue_wait (queued to dispatched, per "
                           "dispatch), run (dispatched to finished), total (submitted to "
                           "finished), prefill and first_token (as the worker group measured)",
                           metrics::LatencyBuckets(), {{"phase", phase}});
  }

  metrics::Counter &submitted, &started, &done, &failed, &requeued;
  metrics::Gauge &queued, &running, &groups;
  metrics::Histogram &queue_wait, &run, &total, &prefill, &first_token;
};

struct WorkerGroup {
  std::string id;
  std::weak_ptr<Session> session;
  std::string name, model;
  int32_t ranks = 0;
  std::set<std::string> documents;  // what it holds (or is prefilling), "client/doc-id"
  uint64_t running_job = 0;         // 0: idle
};

class Server::Impl : public std::enable_shared_from_this<Server::Impl> {
 public:
  Impl(asio::io_context& io, ServerOptions o, JobStore store)
      : io_(io), options_(std::move(o)), store_(std::move(store)), acceptor_(io) {}

  Status Init();
  void Accept();
  void Stop();

  // Called by sessions.
  void OnClientJob(const std::shared_ptr<Session>& s, uint64_t request_id, std::string doc_id,
                   std::shared_ptr<const std::string> document, std::string question,
                   int64_t generate);
  std::string OnWorkerHello(const std::shared_ptr<Session>& s, const control::Hello& h);
  Status OnWorkerEvent(const std::string& group_id, const control::JobEvent& e);
  void OnWorkerLost(const std::string& group_id, const std::string& reason);
  control::StatusReply MakeStatus(const std::string& client,
                                  const control::StatusRequest& request) const;
  void SessionClosed(Session* s);

  // Authentication: the client identity whose token this is (null: none). Every client token is
  // compared, in constant time each, whatever matches.
  const std::string* ClientFor(const std::string& token) const;
  // Per-address accounting (sessions call these; `address` is the peer's IP address).
  std::string RefuseReason(const std::string& address);  // empty: accept the connection
  void OnAuthenticated(const std::string& address) { --addresses_[address].unauthenticated; }
  void OnDisconnected(const std::string& address, bool authenticated);
  void OnAuthFailure(const std::string& address);

  const ServerOptions& options() const { return options_; }
  asio::io_context& io() { return io_; }
  asio::ssl::context* tls_context() const { return tls_.get(); }
  std::shared_ptr<asio::ssl::context> tls_;  // null: plaintext
  size_t max_client_queued_bytes() const {
    return options_.max_client_queued_bytes != 0 ? options_.max_client_queued_bytes
                                                 : 2 * options_.max_frame_bytes + (size_t(1) << 20);
  }
  uint64_t pending_bytes = 0;  // bytes of uploads in progress and of unfinished jobs' documents
  uint16_t bound_port = 0;

 private:
  struct AddressState {
    int connections = 0;      // open, counted connections from the address
    int unauthenticated = 0;  // of which not yet past Hello
    int failures = 0;         // failed authentications (decaying, kAuthFailureMemory)
    Clock::time_point last_failure{}, locked_until{};
  };

  void Dispatch();
  void Assign(WorkerGroup& g, Job& job);
  void Finish(Job& job, control::JobState state, const std::string& error,
              const control::JobResult* result);
  void Requeue(Job& job, const std::string& reason);
  void Persist(const Job& job);
  void SendToClient(const Job& job, control::JobEvent event);
  void ReleaseDocument(Job& job);
  // Deletes finished records older than options_.retain, and beyond options_.retain_jobs of one
  // identity (`owner`; empty: every identity).
  void ExpireJobs(const std::string& owner);
  void Sweep();  // every second: expiry, the address table, dispatch after the reconnect grace
  void UpdateGauges();  // queued, running, worker groups

  asio::io_context& io_;
  ServerOptions options_;
  JobStore store_;
  tcp::acceptor acceptor_;
  asio::steady_timer sweep_timer_{io_};
  Clock::time_point started_at_ = Clock::now();
  std::map<std::string, AddressState> addresses_;
  bool stopped_ = false;
  std::set<std::shared_ptr<Session>> sessions_;
  std::map<uint64_t, Job> jobs_;
  std::deque<uint64_t> queue_;  // queued job ids, oldest first
  std::map<std::string, WorkerGroup> groups_;
  uint64_t next_job_id_ = 1;
  uint64_t next_group_ = 1;
  std::unique_ptr<metrics::Registry> own_registry_ =
      options_.metrics != nullptr ? nullptr : std::make_unique<metrics::Registry>();
  ServiceMetrics m_{options_.metrics != nullptr ? *options_.metrics : *own_registry_};
};

// One TCP connection: a client or a worker group once its Hello is accepted.
class Session : public std::enable_shared_from_this<Session> {
 public:
  // counted: registered in the server's per-address table (a refused connection is not).
  Session(Server::Impl& server, tcp::socket socket, std::string address, bool counted)
      : server_(server),
        channel_(std::move(socket), server.tls_context()),
        timer_(server.io()),
        decoder_(server.options().max_hello_bytes),  // raised once the Hello is accepted
        address_(std::move(address)),
        counted_(counted),
        opened_(Clock::now()),
        last_frame_(opened_),
        last_heartbeat_(opened_) {}

  void Start() {
    error_code ec;
    const auto ep = channel_.socket().remote_endpoint(ec);
    peer_ = ec ? std::string("?") : fmt::format("{}:{}", ep.address().to_string(), ep.port());
    // Small frames (events, tokens) go out at once: Nagle + delayed ACK would add ~40 ms each.
    channel_.socket().set_option(tcp::no_delay(true), ec);
    Tick();  // the Hello timeout covers the TLS handshake too
    auto self = shared_from_this();
    channel_.AsyncHandshake(asio::ssl::stream_base::server, [this, self](error_code hec) {
      if (closed_) return;
      if (hec) {
        LONGCTX_LOG_WARN("coordinator: TLS handshake with {} failed: {}", peer_, hec.message());
        Close(fmt::format("TLS handshake failed: {}", hec.message()));
        return;
      }
      handshaken_ = true;
      if (!out_.empty() && !writing_) {
        Write();  // a refusal queued before the handshake (it closes once written)
      } else if (closing_) {
        Close(reason_);
        return;
      }
      if (!closing_) Read();
    });
  }

  void Send(const control::Envelope& env) {
    if (closed_) return;
    Result<std::string> frame = EncodeEnvelope(env, server_.options().max_frame_bytes);
    if (!frame.ok()) {
      LONGCTX_LOG_ERROR("coordinator: to {}: {}", peer_, frame.status().message());
      frame = EncodeEnvelope(ErrorEnvelope(env.request_id(), frame.status().message(), false),
                             server_.options().max_frame_bytes);
      if (!frame.ok()) return;
    }
    queued_bytes_ += frame->size();
    // A worker's queue holds the document of its one assignment (bounded by --max-document); a
    // client's only events and replies, so a client that stops reading is cut off.
    if (role_ != control::ROLE_WORKER && queued_bytes_ > server_.max_client_queued_bytes()) {
      LONGCTX_LOG_WARN("coordinator: cutting off {}: {} bytes queued that it does not read",
                       peer_, queued_bytes_);
      Close("the peer does not read what it is sent");
      return;
    }
    out_.push_back(std::move(*frame));
    if (!writing_ && handshaken_) Write();
  }

  // Sends a fatal error, then closes once it is written (reads stop now).
  void Fatal(uint64_t request_id, const std::string& message) {
    if (closed_ || closing_) return;
    LONGCTX_LOG_WARN("coordinator: refusing {}: {}", peer_, message);
    Send(ErrorEnvelope(request_id, message, true));
    closing_ = true;
    closing_since_ = Clock::now();
    reason_ = message;
    if (!writing_ && handshaken_) Close(message);
  }

  void Close(const std::string& reason) {
    if (closed_) return;
    closed_ = true;
    if (reason_.empty()) reason_ = reason;
    channel_.Close();
    timer_.cancel();
    uploads_.clear();  // a client gone mid-upload: its partial document is discarded here
    server_.pending_bytes -= std::min(server_.pending_bytes, upload_bytes_);
    upload_bytes_ = 0;
    if (counted_) server_.OnDisconnected(address_, role_ != control::ROLE_UNSPECIFIED);
    counted_ = false;
    if (role_ == control::ROLE_WORKER) server_.OnWorkerLost(group_id_, reason_);
    server_.SessionClosed(this);
  }

  control::Role role() const { return role_; }
  const std::string& peer() const { return peer_; }
  const std::string& client() const { return client_; }
  size_t uploads() const { return uploads_.size(); }
  int jobs_in_flight = 0;  // this client's queued or running jobs

 private:
  struct Upload {
    std::string doc_id, question;
    int64_t generate = 0;
    uint64_t total = 0;
    std::string bytes;
  };

  void Read() {
    auto self = shared_from_this();
    // Before authentication a connection may send one Hello frame's worth of bytes
    // (--max-hello-bytes + the header) and no more: reads never ask for more than that budget.
    size_t want = buf_.size();
    if (role_ == control::ROLE_UNSPECIFIED) {
      const size_t budget = server_.options().max_hello_bytes + kFrameHeaderBytes;
      if (preauth_bytes_ >= budget) {
        Fatal(0, fmt::format("more than {} bytes before authenticating", budget));
        return;
      }
      want = std::min(want, budget - preauth_bytes_);
    }
    channel_.AsyncReadSome(asio::buffer(buf_.data(), want), [this, self](error_code ec, size_t n) {
      if (closed_ || closing_) return;
      if (ec) {
        Close(ec == asio::error::eof ? "connection closed by the peer" : ec.message());
        return;
      }
      if (role_ == control::ROLE_UNSPECIFIED) preauth_bytes_ += n;
      const bool was_partial = decoder_.partial();
      if (Status st = decoder_.Feed(buf_.data(), n); !st.ok()) {
        Fatal(0, st.message());
        return;
      }
      bool any = false;
      while (decoder_.has_frame() && !closing_ && !closed_) {
        any = true;
        last_frame_ = Clock::now();
        Result<control::Envelope> env = ParseEnvelope(decoder_.Pop());
        if (!env.ok()) {
          Fatal(0, env.status().message());
          return;
        }
        Handle(*env);
      }
      if (closing_ || closed_) return;
      if (decoder_.partial() && (any || !was_partial)) partial_since_ = Clock::now();
      Read();
    });
  }

  void Write() {
    writing_ = true;
    auto self = shared_from_this();
    channel_.AsyncWrite(asio::buffer(out_.front()), [this, self](error_code ec, size_t) {
      writing_ = false;
      if (closed_) return;
      if (ec) {
        Close(ec.message());
        return;
      }
      queued_bytes_ -= out_.front().size();
      out_.pop_front();
      if (!out_.empty()) {
        Write();
      } else if (closing_) {
        Close(reason_);
      }
    });
  }

  // Every 200 ms: the timeouts, and heartbeats to authenticated peers.
  void Tick() {
    auto self = shared_from_this();
    timer_.expires_after(std::chrono::milliseconds(200));
    timer_.async_wait([this, self](error_code ec) {
      if (ec || closed_) return;
      const ServerOptions& o = server_.options();
      const auto now = Clock::now();
      if (closing_ && now - closing_since_ > o.frame_timeout) {
        Close(reason_);  // the peer does not take the error frame: close without it
        return;
      }
      if (!closing_) {
        if (role_ == control::ROLE_UNSPECIFIED && now - opened_ > o.hello_timeout) {
          Fatal(0, fmt::format("no Hello within {:.1f} s", Seconds(o.hello_timeout)));
        } else if (decoder_.partial() && now - partial_since_ > o.frame_timeout) {
          Fatal(0, fmt::format("incomplete frame for more than {:.1f} s (partial-frame timeout)",
                               Seconds(o.frame_timeout)));
        } else if (role_ == control::ROLE_WORKER && now - last_frame_ > o.worker_timeout) {
          Fatal(0, fmt::format("worker group silent for more than {:.1f} s",
                               Seconds(o.worker_timeout)));
        } else if (role_ == control::ROLE_CLIENT && uploads_.empty() && jobs_in_flight == 0 &&
                   now - last_frame_ > o.idle_timeout) {
          Fatal(0, fmt::format("idle for more than {:.1f} s", Seconds(o.idle_timeout)));
        } else if (role_ != control::ROLE_UNSPECIFIED &&
                   now - last_heartbeat_ >= o.heartbeat_interval) {
          last_heartbeat_ = now;
          control::Envelope hb;
          hb.mutable_heartbeat()->set_unix_seconds(UnixNow());
          Send(hb);
        }
      }
      if (!closed_) Tick();
    });
  }

  void Handle(const control::Envelope& env) {
    using E = control::Envelope;
    if (role_ == control::ROLE_UNSPECIFIED) {
      if (env.body_case() != E::kHello) {
        Fatal(env.request_id(), "the first message must be a Hello (authenticate first)");
        return;
      }
      HandleHello(env);
      return;
    }
    if (env.body_case() == E::kHeartbeat) return;
    if (env.body_case() == E::kHello) {
      Fatal(env.request_id(), "a second Hello on one connection");
      return;
    }
    if (role_ == control::ROLE_WORKER) {
      if (env.body_case() != E::kEvent) {
        Fatal(env.request_id(), fmt::format("unexpected message (field {}) from a worker group",
                                            int(env.body_case())));
        return;
      }
      if (Status st = server_.OnWorkerEvent(group_id_, env.event()); !st.ok()) {
        Fatal(env.request_id(), st.message());
      }
      return;
    }
    switch (env.body_case()) {
      case E::kSubmit:
        HandleSubmit(env.request_id(), env.submit());
        return;
      case E::kQuery:
        HandleQuery(env.request_id(), env.query());
        return;
      case E::kStatusRequest: {
        control::Envelope reply;
        reply.set_request_id(env.request_id());
        *reply.mutable_status_reply() = server_.MakeStatus(client_, env.status_request());
        Send(reply);
        return;
      }
      default:
        Fatal(env.request_id(),
              fmt::format("unexpected message (field {}) from a client", int(env.body_case())));
    }
  }

  void HandleHello(const control::Envelope& env) {
    const control::Hello& h = env.hello();
    if (h.protocol_version() != kProtocolVersion) {
      Fatal(env.request_id(), fmt::format("unsupported protocol version {} (this side speaks {})",
                                          h.protocol_version(), kProtocolVersion));
      return;
    }
    if (h.role() != control::ROLE_CLIENT && h.role() != control::ROLE_WORKER) {
      Fatal(env.request_id(), "Hello without a valid role");
      return;
    }
    // Clients and worker groups hold different tokens: a client token never registers a group
    // (it would receive other clients' documents and forge their answers), and the worker token
    // is no client identity.
    const std::string* client = nullptr;
    const bool authenticated =
        h.role() == control::ROLE_WORKER
            ? ConstantTimeEquals(h.token(), server_.options().worker_token)
            : (client = server_.ClientFor(h.token())) != nullptr;
    if (!authenticated) {
      server_.OnAuthFailure(address_);
      Fatal(env.request_id(), h.role() == control::ROLE_WORKER
                                  ? "authentication failed: wrong token for a worker group "
                                    "(it needs the worker token, --worker-token-file)"
                                  : "authentication failed: wrong token");
      return;
    }
    control::Envelope reply;
    reply.set_request_id(env.request_id());
    reply.mutable_hello_reply()->set_protocol_version(kProtocolVersion);
    if (h.role() == control::ROLE_CLIENT) {
      role_ = control::ROLE_CLIENT;
      client_ = *client;
      reply.mutable_hello_reply()->set_client(client_);
    } else {
      // With TLS, a worker group also proves itself with a certificate signed by --tls-ca.
      if (channel_.tls() && !channel_.PeerCertificateVerified()) {
        Fatal(env.request_id(), "a worker group must present a TLS certificate signed by the "
                                "coordinator's --tls-ca");
        return;
      }
      if (h.documents_size() > kMaxHeldDocuments) {
        Fatal(env.request_id(), fmt::format("{} held documents in a Hello (limit {})",
                                            h.documents_size(), kMaxHeldDocuments));
        return;
      }
      for (const std::string& d : h.documents()) {
        if (Status st = ValidateScopedDocId(d); !st.ok()) {
          Fatal(env.request_id(), st.message());
          return;
        }
      }
      if (h.ranks() < 1) {
        Fatal(env.request_id(), fmt::format("a worker group needs >= 1 rank, got {}", h.ranks()));
        return;
      }
      role_ = control::ROLE_WORKER;
      group_id_ = server_.OnWorkerHello(shared_from_this(), h);
      reply.mutable_hello_reply()->set_group_id(group_id_);
      LONGCTX_LOG_INFO("coordinator: worker group {} ({}, {} ranks) connected from {}", group_id_,
                       h.name(), h.ranks(), peer_);
    }
    if (counted_) server_.OnAuthenticated(address_);
    decoder_.set_max_frame_bytes(server_.options().max_frame_bytes);
    Send(reply);
  }

  void Reject(uint64_t request_id, const Status& st) {
    control::Envelope e = ErrorEnvelope(request_id, st.message(), false);
    Send(e);
  }

  void HandleSubmit(uint64_t request_id, const control::SubmitDocument& s) {
    const ServerOptions& o = server_.options();
    auto it = uploads_.find(request_id);
    if (s.offset() == 0 && it == uploads_.end()) {
      if (rejected_.count(request_id)) {  // chunks of an upload refused at its start
        if (s.last()) rejected_.erase(request_id);
        return;
      }
      Status st = ValidateSubmitChunk(s, o.max_document_bytes);
      if (st.ok() && int(uploads_.size()) + jobs_in_flight >= o.max_jobs_per_client) {
        st = Status(StatusCode::kResourceExhausted,
                    fmt::format("too many jobs in flight on this connection (limit {})",
                                o.max_jobs_per_client));
      }
      if (st.ok() && server_.pending_bytes + s.total_bytes() > o.max_pending_bytes) {
        st = Status(StatusCode::kResourceExhausted,
                    fmt::format("the coordinator holds {} bytes of pending documents (limit {}); "
                                "retry later", server_.pending_bytes, o.max_pending_bytes));
      }
      if (!st.ok()) {
        if (!s.last()) {
          if (rejected_.size() >= 1024) {
            Fatal(request_id, "too many refused uploads on one connection");
            return;
          }
          rejected_.insert(request_id);
        }
        Reject(request_id, st);
        return;
      }
      Upload u;
      u.doc_id = s.doc_id();
      u.question = s.question();
      u.generate = s.generate();
      u.total = s.total_bytes();
      it = uploads_.emplace(request_id, std::move(u)).first;
      server_.pending_bytes += s.total_bytes();
      upload_bytes_ += s.total_bytes();
    } else if (it == uploads_.end()) {
      if (rejected_.count(request_id)) {
        if (s.last()) rejected_.erase(request_id);
        return;
      }
      Fatal(request_id, fmt::format("document chunk at offset {} without an upload started "
                                    "by request {}", s.offset(), request_id));
      return;
    }
    Upload& u = it->second;
    control::SubmitDocument bounded = s;
    bounded.set_total_bytes(u.total);  // later chunks are checked against the first one's size
    if (Status st = ValidateSubmitChunk(bounded, o.max_document_bytes); !st.ok() && s.offset() != 0) {
      Fatal(request_id, st.message());
      return;
    }
    if (s.offset() != u.bytes.size()) {
      Fatal(request_id, fmt::format("document chunk at offset {}, expected {}", s.offset(),
                                    u.bytes.size()));
      return;
    }
    u.bytes.append(s.data());
    if (!s.last()) return;
    auto document = std::make_shared<const std::string>(std::move(u.bytes));
    upload_bytes_ -= u.total;  // now counted as the queued job's (until dispatched)
    std::string doc_id = std::move(u.doc_id), question = std::move(u.question);
    const int64_t generate = u.generate;
    uploads_.erase(it);
    ++jobs_in_flight;
    server_.OnClientJob(shared_from_this(), request_id, std::move(doc_id), std::move(document),
                        std::move(question), generate);
  }

  void HandleQuery(uint64_t request_id, const control::Query& q) {
    if (Status st = ValidateQuery(q); !st.ok()) {
      Reject(request_id, st);
      return;
    }
    if (int(uploads_.size()) + jobs_in_flight >= server_.options().max_jobs_per_client) {
      Reject(request_id, Status(StatusCode::kResourceExhausted,
                                fmt::format("too many jobs in flight on this connection (limit {})",
                                            server_.options().max_jobs_per_client)));
      return;
    }
    ++jobs_in_flight;
    server_.OnClientJob(shared_from_this(), request_id, q.doc_id(), nullptr, q.question(),
                        q.generate());
  }

  Server::Impl& server_;
  Channel channel_;  // TLS when the coordinator has --tls-cert (the handshake precedes any frame)
  asio::steady_timer timer_;
  FrameDecoder decoder_;
  std::array<char, 64 * 1024> buf_{};
  std::deque<std::string> out_;
  size_t queued_bytes_ = 0;
  bool writing_ = false, closing_ = false, closed_ = false, handshaken_ = false;
  std::string address_;         // the peer's IP address (per-address limits)
  bool counted_ = false;        // registered in the server's address table
  size_t preauth_bytes_ = 0;    // bytes read before the Hello was accepted
  std::string client_;          // a client's identity (from its token)
  std::string peer_, reason_;
  control::Role role_ = control::ROLE_UNSPECIFIED;
  Clock::time_point opened_, last_frame_, last_heartbeat_, partial_since_, closing_since_;
  std::map<uint64_t, Upload> uploads_;
  std::set<uint64_t> rejected_;
  uint64_t upload_bytes_ = 0;
  std::string group_id_;
};

// ---- Server::Impl ----------------------------------------------------------------------------

Status Server::Impl::Init() {
  ASSIGN_OR_RETURN(std::vector<control::JobRecord> records, store_.LoadAll());
  next_job_id_ = std::max(next_job_id_, store_.LoadLastJobId() + 1);
  size_t requeued = 0;
  for (control::JobRecord& r : records) {
    next_job_id_ = std::max(next_job_id_, r.job_id() + 1);
    if (r.owner().empty()) r.set_owner("default");  // records of a build without identities
    Job job;
    job.queued_at = Clock::now();
    if (r.state() == control::JOB_QUEUED || r.state() == control::JOB_RUNNING) {
      // Unfinished: queued again, with its document from disk (a Query has none). One that was
      // running has used an attempt; the restart is recorded as the reason.
      std::string lost;
      if (r.state() == control::JOB_RUNNING) {
        r.add_requeue_reasons(Truncated(
            fmt::format("the coordinator restarted while worker group {} ran it", r.group_id()),
            kMaxReasonBytes));
      }
      if (r.document_bytes() > 0) {
        Result<std::string> doc = store_.LoadDocument(r.job_id());
        if (doc.ok() && doc->size() == r.document_bytes()) {
          pending_bytes += doc->size();
          job.document = std::make_shared<const std::string>(std::move(*doc));
        } else {
          lost = "its document was not kept across the coordinator's restart; submit it again";
        }
      }
      if (lost.empty() && r.attempts() >= options_.max_attempts) {
        lost = fmt::format("the coordinator restarted during its last attempt ({} of {})",
                           r.attempts(), options_.max_attempts);
      }
      r.clear_group_id();
      if (lost.empty()) {
        r.set_state(control::JOB_QUEUED);
        job.restored = true;
        queue_.push_back(r.job_id());
        ++requeued;
      } else {
        r.set_state(control::JOB_FAILED);
        r.set_error(lost);
        r.set_finished_unix(UnixNow());
        (void)store_.RemoveDocument(r.job_id());
      }
      RETURN_IF_ERROR(store_.Save(r));
    }
    job.record = std::move(r);
    const uint64_t id = job.record.job_id();
    jobs_.emplace(id, std::move(job));
  }
  std::set<uint64_t> kept;
  for (const auto& [id, job] : jobs_) {
    if (job.document) kept.insert(id);
  }
  store_.RemoveDocumentsExcept(kept);
  ExpireJobs("");
  error_code ec;
  const asio::ip::address addr = asio::ip::make_address(options_.host, ec);
  if (ec) return InvalidArgument("--listen: '{}' is not an IP address", options_.host);
  const tcp::endpoint ep(addr, options_.port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("cannot listen on {}:{}: {}", options_.host, options_.port,
                              ec.message()));
  }
  bound_port = acceptor_.local_endpoint(ec).port();
  UpdateGauges();
  LONGCTX_LOG_INFO("coordinator: {} job records loaded from {} ({} queued again)", jobs_.size(),
                   store_.dir(), requeued);
  Sweep();
  return Status::Ok();
}

const std::string* Server::Impl::ClientFor(const std::string& token) const {
  const std::string* found = nullptr;
  if (!options_.token.empty() && ConstantTimeEquals(token, options_.token)) {
    static const std::string kDefault = "default";
    found = &kDefault;
  }
  for (const ClientCredential& c : options_.client_tokens) {
    // No early exit: the time taken does not tell which entry matched.
    if (ConstantTimeEquals(token, c.token) && found == nullptr) found = &c.name;
  }
  return found;
}

std::string Server::Impl::RefuseReason(const std::string& address) {
  if (int(sessions_.size()) >= options_.max_connections) {
    return fmt::format("too many connections (limit {})", options_.max_connections);
  }
  auto it = addresses_.find(address);
  if (it == addresses_.end()) return "";
  const AddressState& a = it->second;
  const auto now = Clock::now();
  if (now < a.locked_until) {
    return fmt::format("too many failed authentications from {}; retry in {:.1f} s", address,
                       std::chrono::duration<double>(a.locked_until - now).count());
  }
  if (a.connections >= options_.max_connections_per_address) {
    return fmt::format("too many connections from {} (limit {})", address,
                       options_.max_connections_per_address);
  }
  if (a.unauthenticated >= options_.max_unauthenticated_per_address) {
    return fmt::format("too many unauthenticated connections from {} (limit {})", address,
                       options_.max_unauthenticated_per_address);
  }
  return "";
}

void Server::Impl::OnDisconnected(const std::string& address, bool authenticated) {
  auto it = addresses_.find(address);
  if (it == addresses_.end()) return;
  --it->second.connections;
  if (!authenticated) --it->second.unauthenticated;
}

void Server::Impl::OnAuthFailure(const std::string& address) {
  AddressState& a = addresses_[address];
  const auto now = Clock::now();
  if (now - a.last_failure > kAuthFailureMemory) a.failures = 0;
  a.last_failure = now;
  ++a.failures;
  const int over = a.failures - options_.auth_free_failures;
  if (over > 0) {
    auto lock = options_.auth_backoff_initial;
    for (int i = 1; i < over && lock < options_.auth_backoff_max; ++i) lock *= 2;
    lock = std::min(lock, options_.auth_backoff_max);
    a.locked_until = now + lock;
    LONGCTX_LOG_WARN("coordinator: {} failed authentications from {}; locked out for {:.1f} s",
                     a.failures, address, Seconds(lock));
  }
}

void Server::Impl::Sweep() {
  if (stopped_) return;
  ExpireJobs("");
  const auto now = Clock::now();
  for (auto it = addresses_.begin(); it != addresses_.end();) {
    const AddressState& a = it->second;
    const bool forgotten = a.failures == 0 || now - a.last_failure > kAuthFailureMemory;
    if (a.connections <= 0 && forgotten && now >= a.locked_until) {
      it = addresses_.erase(it);
    } else {
      ++it;
    }
  }
  if (!queue_.empty()) Dispatch();
  sweep_timer_.expires_after(std::chrono::seconds(1));
  sweep_timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (!ec) self->Sweep();
  });
}

void Server::Impl::ExpireJobs(const std::string& owner) {
  const double now = UnixNow(), retain = Seconds(options_.retain);
  std::map<std::string, std::vector<uint64_t>> finished;  // per identity, oldest job first
  std::vector<uint64_t> expired;
  for (const auto& [id, job] : jobs_) {
    const control::JobRecord& r = job.record;
    if (r.state() != control::JOB_DONE && r.state() != control::JOB_FAILED) continue;
    if (!owner.empty() && r.owner() != owner) continue;
    if (r.finished_unix() > 0 && now - r.finished_unix() > retain) {
      expired.push_back(id);
    } else {
      finished[r.owner()].push_back(id);
    }
  }
  for (const auto& [who, ids] : finished) {
    for (size_t i = 0; i + size_t(options_.retain_jobs) < ids.size(); ++i) expired.push_back(ids[i]);
  }
  if (!expired.empty()) {
    // Ids are never handed out twice, even once every record is gone.
    if (Status st = store_.SaveLastJobId(next_job_id_ - 1); !st.ok()) {
      LONGCTX_LOG_ERROR("coordinator: {}", st.message());
    }
  }
  for (uint64_t id : expired) {
    if (Status st = store_.Remove(id); !st.ok()) {
      LONGCTX_LOG_ERROR("coordinator: job {}: cannot remove its expired record: {}", id,
                        st.message());
    }
    jobs_.erase(id);
  }
  if (!expired.empty()) {
    LONGCTX_LOG_INFO("coordinator: {} finished job record(s) expired", expired.size());
  }
}

void Server::Impl::Accept() {
  auto self = shared_from_this();
  acceptor_.async_accept([this, self](error_code ec, tcp::socket socket) {
    if (stopped_) return;
    if (!ec) {
      error_code aec;
      const auto ep = socket.remote_endpoint(aec);
      const std::string address = aec ? std::string("?") : ep.address().to_string();
      const std::string refuse = RefuseReason(address);
      auto s = std::make_shared<Session>(*this, std::move(socket), address, refuse.empty());
      sessions_.insert(s);
      if (refuse.empty()) {
        AddressState& a = addresses_[address];
        ++a.connections;
        ++a.unauthenticated;
      }
      s->Start();
      if (!refuse.empty()) {
        LONGCTX_LOG_WARN("coordinator: refusing a connection from {}: {}", address, refuse);
        s->Fatal(0, refuse);
      }
    } else {
      LONGCTX_LOG_WARN("coordinator: accept failed: {}", ec.message());
    }
    Accept();
  });
}

void Server::Impl::Stop() {
  if (stopped_) return;
  stopped_ = true;
  error_code ec;
  acceptor_.close(ec);
  sweep_timer_.cancel();
  // Close() removes the session from sessions_; iterate over a copy.
  const std::vector<std::shared_ptr<Session>> all(sessions_.begin(), sessions_.end());
  for (const auto& s : all) s->Close("the coordinator is stopping");
}

void Server::Impl::SessionClosed(Session* s) {
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    if (it->get() == s) {
      // Keep the session alive until its own handlers return (they hold shared_from_this).
      sessions_.erase(it);
      return;
    }
  }
}

void Server::Impl::UpdateGauges() {
  size_t running = 0;
  for (const auto& [id, g] : groups_) running += g.running_job != 0;
  m_.queued.Set(double(queue_.size()));
  m_.running.Set(double(running));
  m_.groups.Set(double(groups_.size()));
}

void Server::Impl::Persist(const Job& job) {
  // Finished records are fsynced (results must survive a crash); queued/running ones only renamed
  // into place: after a crash they are failed on restart anyway.
  const bool final = job.record.state() == control::JOB_DONE ||
                     job.record.state() == control::JOB_FAILED;
  if (Status st = store_.Save(job.record, /*durable=*/final); !st.ok()) {
    LONGCTX_LOG_ERROR("coordinator: job {}: cannot save its record: {}", job.record.job_id(),
                      st.message());
  }
}

void Server::Impl::SendToClient(const Job& job, control::JobEvent event) {
  std::shared_ptr<Session> s = job.client.lock();
  if (!s) return;
  control::Envelope env;
  env.set_request_id(job.request_id);
  event.set_job_id(job.record.job_id());
  *env.mutable_event() = std::move(event);
  s->Send(env);
}

void Server::Impl::ReleaseDocument(Job& job) {
  if (job.document) {
    pending_bytes -= std::min<uint64_t>(pending_bytes, job.document->size());
    job.document.reset();
    if (Status st = store_.RemoveDocument(job.record.job_id()); !st.ok()) {
      LONGCTX_LOG_ERROR("coordinator: job {}: {}", job.record.job_id(), st.message());
    }
  }
}

void Server::Impl::OnClientJob(const std::shared_ptr<Session>& s, uint64_t request_id,
                               std::string doc_id, std::shared_ptr<const std::string> document,
                               std::string question, int64_t generate) {
  Job job;
  job.record.set_job_id(next_job_id_++);
  job.record.set_owner(s->client());
  job.record.set_doc_id(std::move(doc_id));
  job.record.set_question_bytes(question.size());
  job.record.set_question(std::move(question));
  job.record.set_generate(generate);
  job.record.set_state(control::JOB_QUEUED);
  job.record.set_document_bytes(document ? document->size() : 0);
  job.record.set_submitted_unix(UnixNow());
  job.client = s;
  job.request_id = request_id;
  job.document = std::move(document);
  job.queued_at = Clock::now();
  const uint64_t id = job.record.job_id();
  if (job.document) {
    // Kept on disk until the job finishes, so a restart can run it again.
    if (Status st = store_.SaveDocument(id, *job.document); !st.ok()) {
      LONGCTX_LOG_ERROR("coordinator: job {}: cannot keep its document: {}", id, st.message());
    }
  }
  Job& stored = jobs_.emplace(id, std::move(job)).first->second;
  Persist(stored);
  control::JobEvent queued;
  queued.set_kind(control::JobEvent::QUEUED);
  SendToClient(stored, queued);
  queue_.push_back(id);
  m_.submitted.Inc();
  Dispatch();
}

std::string Server::Impl::OnWorkerHello(const std::shared_ptr<Session>& s, const control::Hello& h) {
  WorkerGroup g;
  g.id = fmt::format("g{}", next_group_++);
  g.session = s;
  g.name = h.name();
  g.model = h.model();
  g.ranks = h.ranks();
  g.documents.insert(h.documents().begin(), h.documents().end());
  const std::string id = g.id;
  groups_.emplace(id, std::move(g));
  UpdateGauges();
  // Dispatch after the HelloReply is queued (this runs inside HandleHello).
  asio::post(io_, [self = shared_from_this()] { self->Dispatch(); });
  return id;
}

void Server::Impl::Dispatch() {
  for (auto it = queue_.begin(); it != queue_.end();) {
    Job& job = jobs_.at(*it);
    WorkerGroup* chosen = nullptr;
    bool can_ever_run = true;
    if (job.document) {
      for (auto& [id, g] : groups_) {
        if (g.running_job == 0) {
          chosen = &g;
          break;
        }
      }
    } else {
      bool held = false;
      const std::string name = HeldName(job);
      for (auto& [id, g] : groups_) {
        if (!g.documents.count(name)) continue;
        held = true;
        if (g.running_job == 0) {
          chosen = &g;
          break;
        }
      }
      if (!held) {
        // An upload of that document queued ahead of this question will bring it.
        can_ever_run = false;
        for (uint64_t other : queue_) {
          if (other == *it) break;
          const Job& o = jobs_.at(other);
          if (o.document && HeldName(o) == name) can_ever_run = true;
        }
        // After a restart, the groups that hold it may still be reconnecting.
        if (job.restored && Clock::now() - started_at_ < options_.reconnect_grace) {
          can_ever_run = true;
        }
      }
    }
    if (!can_ever_run) {
      const uint64_t id = *it;
      it = queue_.erase(it);
      Finish(jobs_.at(id), control::JOB_FAILED,
             fmt::format("document '{}' is not held by any worker group; submit it with --input",
                         jobs_.at(id).record.doc_id()),
             nullptr);
      continue;
    }
    if (chosen == nullptr) {
      ++it;
      continue;
    }
    it = queue_.erase(it);
    Assign(*chosen, job);
  }
  UpdateGauges();
}

void Server::Impl::Assign(WorkerGroup& g, Job& job) {
  std::shared_ptr<Session> ws = g.session.lock();
  g.running_job = job.record.job_id();
  job.record.set_state(control::JOB_RUNNING);
  job.record.set_group_id(g.id);
  job.record.set_attempts(job.record.attempts() + 1);
  job.started_at = Clock::now();
  job.record.set_queue_seconds(Since(job.queued_at));
  m_.started.Inc();
  m_.queue_wait.Observe(Since(job.queued_at));
  Persist(job);
  control::JobEvent started;
  started.set_kind(control::JobEvent::STARTED);
  started.set_group_id(g.id);
  SendToClient(job, started);
  if (job.document) g.documents.insert(HeldName(job));

  control::Envelope env;
  control::Assignment* a = env.mutable_assignment();
  a->set_job_id(job.record.job_id());
  a->set_doc_id(HeldName(job));
  a->set_document_bytes(job.document ? job.document->size() : 0);
  a->set_question(job.record.question());
  a->set_generate(job.record.generate());
  if (ws) ws->Send(env);
  if (job.document && ws) {
    const std::string& d = *job.document;
    for (size_t off = 0; off < d.size(); off += kDocumentChunkBytes) {
      control::Envelope c;
      c.mutable_chunk()->set_job_id(job.record.job_id());
      c.mutable_chunk()->set_offset(off);
      c.mutable_chunk()->set_data(d.substr(off, kDocumentChunkBytes));
      ws->Send(c);
    }
  }
  // The document stays (memory and disk) until the job finishes: a lost group requeues it.
  LONGCTX_LOG_INFO("coordinator: job {} (doc {}) -> worker group {}", job.record.job_id(),
                   job.record.doc_id(), g.id);
}

void Server::Impl::Finish(Job& job, control::JobState state, const std::string& error,
                          const control::JobResult* result) {
  if (job.record.state() == control::JOB_RUNNING) m_.run.Observe(Since(job.started_at));
  m_.total.Observe(Since(job.queued_at));
  (state == control::JOB_DONE ? m_.done : m_.failed).Inc();
  if (result != nullptr) {
    if (result->prefilled()) m_.prefill.Observe(result->prefill_seconds());
    if (result->first_token_seconds() > 0) m_.first_token.Observe(result->first_token_seconds());
  }
  ReleaseDocument(job);
  job.record.set_state(state);
  job.record.set_error(error);
  if (result != nullptr) {
    *job.record.mutable_result() = *result;
    job.record.mutable_result()->clear_held_documents();  // coordinator bookkeeping only
  }
  job.record.set_total_seconds(Since(job.queued_at));
  job.record.set_finished_unix(UnixNow());
  // The question's text is needed only to run the job (question_bytes keeps its size): a finished
  // record does not carry it, on disk or in replies.
  job.record.clear_question();
  Persist(job);
  if (std::shared_ptr<Session> s = job.client.lock()) s->jobs_in_flight--;
  control::JobEvent e;
  if (state == control::JOB_DONE) {
    e.set_kind(control::JobEvent::RESULT);
    *e.mutable_result() = job.record.result();
  } else {
    e.set_kind(control::JobEvent::FAILED);
    e.set_error(error);
  }
  e.set_group_id(job.record.group_id());
  SendToClient(job, e);
  LONGCTX_LOG_INFO("coordinator: job {} {}{}", job.record.job_id(),
                   state == control::JOB_DONE ? "done" : "failed", error.empty() ? "" : ": " + error);
  // Count-based retention of this identity's records (the age-based one runs every second). The
  // job may be erased here: callers do not touch it afterwards.
  const std::string owner = job.record.owner();
  ExpireJobs(owner);
}

void Server::Impl::Requeue(Job& job, const std::string& reason) {
  job.record.add_requeue_reasons(Truncated(reason, kMaxReasonBytes));
  job.record.set_state(control::JOB_QUEUED);
  job.record.clear_group_id();
  Persist(job);
  control::JobEvent e;
  e.set_kind(control::JobEvent::REQUEUED);
  e.set_error(reason);
  SendToClient(job, e);
  queue_.push_front(job.record.job_id());  // it waited its turn already
  m_.requeued.Inc();
  LONGCTX_LOG_WARN("coordinator: job {} queued again (attempt {} of {} ended: {})",
                   job.record.job_id(), job.record.attempts(), options_.max_attempts, reason);
}

Status Server::Impl::OnWorkerEvent(const std::string& group_id, const control::JobEvent& e) {
  RETURN_IF_ERROR(ValidateEvent(e));
  auto git = groups_.find(group_id);
  if (git == groups_.end()) return Internal("worker group {} is not registered", group_id);
  WorkerGroup& g = git->second;
  if (g.running_job != e.job_id()) {
    return InvalidArgument("event for job {}, but worker group {} runs job {}", e.job_id(),
                           group_id, g.running_job);
  }
  Job& job = jobs_.at(e.job_id());
  switch (e.kind()) {
    case control::JobEvent::PROGRESS:
    case control::JobEvent::TOKEN:
      SendToClient(job, e);
      return Status::Ok();
    case control::JobEvent::RESULT:
    case control::JobEvent::FAILED:
      g.documents.clear();
      g.documents.insert(e.result().held_documents().begin(), e.result().held_documents().end());
      g.running_job = 0;
      if (e.kind() == control::JobEvent::RESULT) {
        Finish(job, control::JOB_DONE, "", &e.result());
      } else {
        Finish(job, control::JOB_FAILED,
               e.error().empty() ? std::string("the worker group reported a failure") : e.error(),
               nullptr);
      }
      Dispatch();
      return Status::Ok();
    default:
      return InvalidArgument("unexpected job event kind {}", int(e.kind()));
  }
}

void Server::Impl::OnWorkerLost(const std::string& group_id, const std::string& reason) {
  auto git = groups_.find(group_id);
  if (git == groups_.end()) return;
  const uint64_t running = git->second.running_job;
  const std::string name = git->second.name;
  groups_.erase(git);
  LONGCTX_LOG_WARN("coordinator: worker group {} ({}) lost: {}", group_id, name, reason);
  // When the coordinator itself stops, the record stays "running" on disk; the restart queues it
  // again. Otherwise the job runs again on another group, up to --max-attempts dispatches.
  if (running != 0 && !stopped_) {
    Job& job = jobs_.at(running);
    const std::string why =
        fmt::format("worker group {} ({}) was lost mid-job: {}", group_id, name, reason);
    if (job.record.attempts() < options_.max_attempts) {
      Requeue(job, why);
    } else {
      Finish(job, control::JOB_FAILED,
             fmt::format("{} (attempt {} of {})", why, job.record.attempts(), options_.max_attempts),
             nullptr);
    }
  }
  if (!stopped_) Dispatch();
  UpdateGauges();
}

// What a listing shows of a record: no result, no question text, errors and reasons cut.
static control::JobRecord ListedRecord(const control::JobRecord& rec) {
  control::JobRecord j = rec;
  j.clear_result();
  j.clear_question();
  j.set_error(Truncated(rec.error(), kMaxReasonBytes));
  return j;
}

control::StatusReply Server::Impl::MakeStatus(const std::string& client,
                                              const control::StatusRequest& request) const {
  control::StatusReply r;
  r.set_client(client);
  const std::string mine = client + "/";
  for (const auto& [id, g] : groups_) {
    control::WorkerInfo* w = r.add_workers();
    w->set_group_id(g.id);
    w->set_name(g.name);
    w->set_ranks(g.ranks);
    w->set_model(g.model);
    w->set_busy(g.running_job != 0);
    // Another identity's job and documents are not shown, only that the group is busy.
    auto running = jobs_.find(g.running_job);
    if (running != jobs_.end() && running->second.record.owner() == client) {
      w->set_running_job(g.running_job);
    }
    for (const std::string& d : g.documents) {
      if (d.compare(0, mine.size(), mine) == 0) w->add_documents(d.substr(mine.size()));
    }
  }
  const uint32_t limit =
      request.limit() == 0 ? kMaxStatusJobs : std::min(request.limit(), kMaxStatusJobs);
  const uint64_t before = request.before_job_id();
  uint32_t listed = 0;
  for (auto it = jobs_.rbegin(); it != jobs_.rend(); ++it) {
    const control::JobRecord& rec = it->second.record;
    // Counts are of the whole service (no job is named); listings are the caller's own.
    if (rec.state() == control::JOB_QUEUED) r.set_queued(r.queued() + 1);
    if (rec.state() == control::JOB_RUNNING) r.set_running(r.running() + 1);
    if (rec.owner() != client || (before != 0 && rec.job_id() >= before)) continue;
    if (listed < limit) {
      *r.add_jobs() = ListedRecord(rec);
      ++listed;
    } else if (r.next_before_job_id() == 0) {
      r.set_next_before_job_id(r.jobs(r.jobs_size() - 1).job_id());
    }
  }
  if (request.job_id() != 0) {
    auto it = jobs_.find(request.job_id());
    // Another identity's job is "not known", exactly like one that does not exist.
    if (it != jobs_.end() && it->second.record.owner() == client) {
      control::JobRecord* j = r.mutable_job();
      *j = it->second.record;
      j->clear_question();  // its size is question_bytes; the client sent the text
    }
  }
  for (const auto& s : sessions_) {
    r.set_uploads_in_progress(r.uploads_in_progress() + s->uploads());
    if (s->role() == control::ROLE_CLIENT) r.set_clients(r.clients() + 1);
  }
  // The reply must fit one frame whatever the table holds: drop listed records from the oldest
  // (the next page starts there), then the workers' document lists.
  const size_t room = options_.max_frame_bytes - std::min<size_t>(options_.max_frame_bytes, 1024);
  while (r.ByteSizeLong() > room && r.jobs_size() > 0) {
    r.set_next_before_job_id(r.jobs(r.jobs_size() - 1).job_id());
    r.mutable_jobs()->RemoveLast();
  }
  if (r.ByteSizeLong() > room) {
    for (control::WorkerInfo& w : *r.mutable_workers()) w.clear_documents();
  }
  return r;
}

// ---- Server ------------------------------------------------------------------------------------

static Status CheckOptions(const ServerOptions& o) {
  if (o.token.empty() && o.client_tokens.empty()) {
    return InvalidArgument("the coordinator needs a client token (--token-file, LONGCTX_TOKEN or "
                           "--client-tokens-file)");
  }
  if (o.worker_token.empty()) {
    return InvalidArgument("the coordinator needs a worker token, different from the client "
                           "tokens (--worker-token-file or LONGCTX_WORKER_TOKEN)");
  }
  if (!o.token.empty()) RETURN_IF_ERROR(CheckTokenStrength(o.token, "client token"));
  RETURN_IF_ERROR(CheckTokenStrength(o.worker_token, "worker token"));
  std::set<std::string> names, tokens;
  if (!o.token.empty()) {
    names.insert("default");
    tokens.insert(o.token);
  }
  for (const ClientCredential& c : o.client_tokens) {
    RETURN_IF_ERROR(ValidateClientName(c.name));
    RETURN_IF_ERROR(CheckTokenStrength(c.token, fmt::format("token of client '{}'", c.name)));
    if (!names.insert(c.name).second) return InvalidArgument("client '{}' named twice", c.name);
    if (!tokens.insert(c.token).second) {
      return InvalidArgument("client '{}' has the token of another client identity", c.name);
    }
  }
  if (tokens.count(o.worker_token)) {
    return InvalidArgument("the worker token equals a client token: worker groups need a token "
                           "of their own (a client holding it could register a worker group)");
  }
  if (o.max_frame_bytes < kDocumentChunkBytes + 4096) {
    return InvalidArgument("the frame limit must be at least {} bytes", kDocumentChunkBytes + 4096);
  }
  if (o.max_hello_bytes < 1024 || o.max_hello_bytes > o.max_frame_bytes) {
    return InvalidArgument("the Hello budget must be in [1024, frame limit] bytes, got {}",
                           o.max_hello_bytes);
  }
  if (o.max_connections < 1 || o.max_connections_per_address < 1 ||
      o.max_unauthenticated_per_address < 1) {
    return InvalidArgument("connection limits must be >= 1");
  }
  if (o.max_attempts < 1 || o.max_attempts > 100) {
    return InvalidArgument("--max-attempts must be in [1, 100], got {}", o.max_attempts);
  }
  error_code ec;
  const asio::ip::address addr = asio::ip::make_address(o.host, ec);
  if (ec) return InvalidArgument("--listen: '{}' is not an IP address", o.host);
  if (!o.tls.enabled() && !addr.is_loopback() && !o.insecure_plaintext) {
    return InvalidArgument("listening on {} (not loopback) needs TLS: give --tls-cert, --tls-key "
                           "and --tls-ca (or --insecure-plaintext on a network you trust)", o.host);
  }
  if (o.retain_jobs < 0) return InvalidArgument("--retain-jobs must be >= 0");
  if (o.retain.count() < 0) return InvalidArgument("--retain must be >= 0");
  return Status::Ok();
}

Result<std::unique_ptr<Server>> Server::Start(asio::io_context& io, ServerOptions options) {
  RETURN_IF_ERROR(CheckOptions(options));
  std::shared_ptr<asio::ssl::context> tls;
  if (options.tls.enabled()) {
    ASSIGN_OR_RETURN(tls, MakeServerTlsContext(options.tls));
  }
  ASSIGN_OR_RETURN(JobStore store, JobStore::Open(options.state_dir));
  auto impl = std::make_shared<Impl>(io, std::move(options), std::move(store));
  impl->tls_ = std::move(tls);
  RETURN_IF_ERROR(impl->Init());
  impl->Accept();
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::~Server() = default;

uint16_t Server::port() const { return impl_->bound_port; }

void Server::Stop() {
  asio::dispatch(impl_->io(), [impl = impl_] { impl->Stop(); });
}

}  // namespace longctx::coordinator
