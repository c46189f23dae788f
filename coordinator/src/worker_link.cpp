// WorkerLink (worker_link.h).
#include "longctx/coordinator/worker_link.h"

#include <array>

#include <boost/asio.hpp>

#include "longctx/coordinator/tls.h"
#include "longctx/core/log.h"

namespace longctx::coordinator {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

// Documents larger than this in an Assignment are refused (the coordinator's own cap is lower).
constexpr uint64_t kMaxAssignedDocumentBytes = uint64_t(16) << 30;

class WorkerLink::Impl : public std::enable_shared_from_this<WorkerLink::Impl> {
 public:
  explicit Impl(WorkerLinkOptions o)
      : options_(std::move(o)),
        channel_(std::make_shared<Channel>(tcp::socket(io_), nullptr)),
        timer_(io_),
        retry_(io_),
        work_(asio::make_work_guard(io_)),
        decoder_(kDefaultMaxFrameBytes),
        backoff_(options_.backoff_initial) {}

  void Run() {
    if (options_.tls.enabled()) {
      Result<std::shared_ptr<asio::ssl::context>> ctx = MakeClientTlsContext(options_.tls);
      if (!ctx.ok()) {
        Refuse(ctx.status().message());
        return;
      }
      tls_ = std::move(*ctx);
    }
    asio::post(io_, [self = shared_from_this()] { self->Connect(); });
    io_.run();
  }

  void Stop() {
    asio::post(io_, [self = shared_from_this()] {
      self->stopping_ = true;
      self->Drop("stopping");
      self->retry_.cancel();
      self->timer_.cancel();
      self->work_.reset();
    });
  }

  std::optional<WorkerJob> NextJob(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    const auto until = Clock::now() + wait;
    while (true) {
      // Jobs of a lost connection were failed by the coordinator: never run them.
      while (!jobs_.empty() && jobs_.front().connection != connection_) jobs_.pop_front();
      if (!jobs_.empty()) break;
      if (!fatal_.ok() || cv_.wait_until(lock, until) == std::cv_status::timeout) {
        while (!jobs_.empty() && jobs_.front().connection != connection_) jobs_.pop_front();
        if (jobs_.empty()) return std::nullopt;
        break;
      }
    }
    WorkerJob j = std::move(jobs_.front());
    jobs_.pop_front();
    return j;
  }

  void Send(uint64_t connection, control::JobEvent event) {
    asio::post(io_, [self = shared_from_this(), connection, e = std::move(event)]() mutable {
      if (!self->ready_ || connection != self->current_connection()) return;
      control::Envelope env;
      *env.mutable_event() = std::move(e);
      self->Write(env);
    });
  }

  void SetDocuments(std::vector<std::string> docs) {
    std::lock_guard<std::mutex> lock(mu_);
    documents_ = std::move(docs);
  }

  Status fatal() const {
    std::lock_guard<std::mutex> lock(mu_);
    return fatal_;
  }

 private:
  uint64_t current_connection() {
    std::lock_guard<std::mutex> lock(mu_);
    return connection_;
  }

  void Connect() {
    if (stopping_) return;
    error_code ec;
    tcp::resolver resolver(io_);
    const auto endpoints = resolver.resolve(options_.host, std::to_string(options_.port), ec);
    if (ec) {
      Retry(fmt::format("cannot resolve '{}': {}", options_.host, ec.message()));
      return;
    }
    // A fresh channel per attempt; pending handlers of the old one keep it alive (they capture
    // it) and see a newer attempt.
    channel_ = std::make_shared<Channel>(tcp::socket(io_), tls_.get());
    decoder_ = FrameDecoder(kDefaultMaxFrameBytes);
    out_.clear();
    writing_ = false;
    const uint64_t attempt = ++attempt_;
    asio::async_connect(
        channel_->socket(), endpoints,
        [self = shared_from_this(), ch = channel_, attempt](error_code e, const tcp::endpoint&) {
          if (attempt != self->attempt_ || self->stopping_) return;
          if (e) {
            self->Retry(e.message());
            return;
          }
          if (Status st = ch->ExpectPeerName(self->options_.host); !st.ok()) {
            self->Refuse(st.message());
            return;
          }
          ch->AsyncHandshake(asio::ssl::stream_base::client, [self, ch, attempt](error_code he) {
            if (attempt != self->attempt_ || self->stopping_) return;
            if (he) {
              self->Retry(fmt::format("TLS handshake failed: {}", he.message()));
              return;
            }
            self->OnConnected();
          });
        });
  }

  void OnConnected() {
    error_code ec;
    channel_->socket().set_option(tcp::no_delay(true), ec);
    control::Envelope hello;
    control::Hello* h = hello.mutable_hello();
    h->set_protocol_version(kProtocolVersion);
    h->set_role(control::ROLE_WORKER);
    h->set_token(options_.token);
    h->set_name(options_.name);
    h->set_model(options_.model);
    h->set_ranks(options_.ranks);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const std::string& d : documents_) h->add_documents(d);
    }
    last_frame_ = Clock::now();
    Write(hello);
    Read(attempt_);
    Tick(attempt_);
  }

  // Closes the current connection (if any); jobs and events of it are dropped from now on.
  void Drop(const std::string& why) {
    if (channel_->socket().is_open() && !stopping_) {
      LONGCTX_LOG_WARN("worker: connection to the coordinator lost: {}", why);
    }
    channel_->Close();
    ++attempt_;  // stale handlers see a newer attempt and do nothing
    ready_ = false;
    out_.clear();
    writing_ = false;
    partial_.reset();
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++connection_;
    }
    timer_.cancel();
  }

  void Retry(const std::string& why) {
    Drop(why);
    if (stopping_) return;
    LONGCTX_LOG_INFO("worker: reconnecting to {}:{} in {} ms ({})", options_.host, options_.port,
                     backoff_.count(), why);
    retry_.expires_after(backoff_);
    backoff_ = std::min(backoff_ * 2, options_.backoff_max);
    retry_.async_wait([self = shared_from_this()](error_code e) {
      if (!e) self->Connect();
    });
  }

  // The group's main loop reports `message` and exits (it is not logged here as well).
  void Refuse(const std::string& message) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      fatal_ = Status(StatusCode::kFailedPrecondition, message);
    }
    cv_.notify_all();
    stopping_ = true;
    Drop(message);
  }

  void Write(const control::Envelope& env) {
    Result<std::string> frame = EncodeEnvelope(env, kDefaultMaxFrameBytes);
    if (!frame.ok()) {
      LONGCTX_LOG_ERROR("worker: cannot send: {}", frame.status().message());
      return;
    }
    out_.push_back(std::move(*frame));
    if (!writing_) WriteNext(attempt_);
  }

  void WriteNext(uint64_t attempt) {
    writing_ = true;
    channel_->AsyncWrite(asio::buffer(out_.front()),
                      [self = shared_from_this(), ch = channel_, attempt](error_code e, size_t) {
                        if (attempt != self->attempt_) return;
                        self->writing_ = false;
                        if (e) {
                          self->Retry(e.message());
                          return;
                        }
                        self->out_.pop_front();
                        if (!self->out_.empty()) self->WriteNext(attempt);
                      });
  }

  void Read(uint64_t attempt) {
    channel_->AsyncReadSome(asio::buffer(buf_), [self = shared_from_this(), ch = channel_,
                                                 attempt](error_code e, size_t n) {
      if (attempt != self->attempt_) return;
      if (e) {
        self->Retry(e == asio::error::eof ? "closed by the coordinator" : e.message());
        return;
      }
      if (Status st = self->decoder_.Feed(self->buf_.data(), n); !st.ok()) {
        self->Retry(st.message());
        return;
      }
      while (self->decoder_.has_frame()) {
        self->last_frame_ = Clock::now();
        Result<control::Envelope> env = ParseEnvelope(self->decoder_.Pop());
        if (!env.ok()) {
          self->Retry(env.status().message());
          return;
        }
        if (!self->Handle(*env)) return;
      }
      self->Read(attempt);
    });
  }

  // false when the connection was dropped.
  bool Handle(const control::Envelope& env) {
    if (env.has_error()) {
      if (!ready_) {  // refused at Hello: wrong token or version; retrying cannot help
        Refuse("the coordinator refused the worker group: " + env.error().message());
      } else {
        Retry("coordinator error: " + env.error().message());
      }
      return false;
    }
    if (env.has_hello_reply()) {
      ready_ = true;
      backoff_ = options_.backoff_initial;
      LONGCTX_LOG_INFO("worker: registered with the coordinator as group {}",
                       env.hello_reply().group_id());
      return true;
    }
    if (env.has_heartbeat()) return true;
    if (env.has_assignment()) {
      const control::Assignment& a = env.assignment();
      if (partial_ || a.job_id() == 0 || a.document_bytes() > kMaxAssignedDocumentBytes) {
        Retry(fmt::format("malformed assignment of job {}", a.job_id()));
        return false;
      }
      WorkerJob j;
      j.assignment = a;
      j.connection = current_connection();
      partial_ = std::move(j);
      if (a.document_bytes() == 0) Complete();
      return true;
    }
    if (env.has_chunk()) {
      const control::DocumentChunk& c = env.chunk();
      if (!partial_ || c.job_id() != partial_->assignment.job_id() ||
          c.offset() != partial_->document.size() ||
          c.data().size() > partial_->assignment.document_bytes() - partial_->document.size()) {
        Retry(fmt::format("document chunk out of order (job {}, offset {})", c.job_id(), c.offset()));
        return false;
      }
      partial_->document.append(c.data());
      if (partial_->document.size() == partial_->assignment.document_bytes()) Complete();
      return true;
    }
    Retry(fmt::format("unexpected message (field {}) from the coordinator", int(env.body_case())));
    return false;
  }

  void Complete() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(*partial_));
    }
    partial_.reset();
    cv_.notify_all();
  }

  // Heartbeats, and the silence check (a coordinator that stopped answering without closing).
  void Tick(uint64_t attempt) {
    timer_.expires_after(std::chrono::milliseconds(1000));
    timer_.async_wait([self = shared_from_this(), attempt](error_code e) {
      if (e || attempt != self->attempt_) return;
      if (Clock::now() - self->last_frame_ > self->options_.silence_timeout) {
        self->Retry("no message from the coordinator for too long");
        return;
      }
      control::Envelope hb;
      hb.mutable_heartbeat()->set_unix_seconds(
          std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
              .count());
      self->Write(hb);
      self->Tick(attempt);
    });
  }

  WorkerLinkOptions options_;
  asio::io_context io_;
  std::shared_ptr<asio::ssl::context> tls_;  // null: plaintext
  std::shared_ptr<Channel> channel_;
  asio::steady_timer timer_, retry_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  FrameDecoder decoder_;
  std::array<char, 64 * 1024> buf_{};
  std::deque<std::string> out_;
  bool writing_ = false, ready_ = false, stopping_ = false;
  uint64_t attempt_ = 0;
  std::chrono::milliseconds backoff_;
  Clock::time_point last_frame_;
  std::optional<WorkerJob> partial_;

  mutable std::mutex mu_;  // guards what the main thread shares with the io thread (below)
  std::condition_variable cv_;
  std::deque<WorkerJob> jobs_;
  std::vector<std::string> documents_;
  uint64_t connection_ = 0;
  Status fatal_;
};

WorkerLink::WorkerLink(WorkerLinkOptions options)
    : impl_(std::make_shared<Impl>(std::move(options))) {}

WorkerLink::~WorkerLink() {
  if (thread_.joinable()) {
    impl_->Stop();
    thread_.join();
  }
}

void WorkerLink::Start() {
  thread_ = std::thread([impl = impl_] { impl->Run(); });
}

std::optional<WorkerJob> WorkerLink::NextJob(std::chrono::milliseconds wait) {
  return impl_->NextJob(wait);
}

void WorkerLink::Send(const WorkerJob& job, control::JobEvent event) {
  event.set_job_id(job.assignment.job_id());
  impl_->Send(job.connection, std::move(event));
}

void WorkerLink::SetDocuments(std::vector<std::string> docs) { impl_->SetDocuments(std::move(docs)); }

Status WorkerLink::fatal() const { return impl_->fatal(); }

}  // namespace longctx::coordinator
