// ControlConnection and SubmitJob (client.h).
#include "longctx/coordinator/client.h"

#include <array>

#include <boost/asio.hpp>

namespace longctx::coordinator {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

class ControlConnection::Impl {
 public:
  explicit Impl(std::shared_ptr<asio::ssl::context> tls)
      : tls_(std::move(tls)), channel_(tcp::socket(io_), tls_.get()), decoder_(kDefaultMaxFrameBytes) {}

  // Runs the io_context until `*done` or the deadline; at the deadline the socket is closed,
  // which completes the pending operation with operation_aborted.
  Status RunUntil(const bool* done, Deadline deadline, std::string_view what) {
    io_.restart();
    while (!*done) {
      if (io_.run_one_until(deadline) == 0 && !*done) {
        if (Clock::now() < deadline) continue;
        error_code ec;
        channel_.socket().close(ec);
        io_.restart();
        while (!*done) io_.run_one();
        return Status(StatusCode::kDeadlineExceeded,
                      fmt::format("timed out waiting to {} the coordinator", what));
      }
    }
    return Status::Ok();
  }

  Status Connect(const std::string& host, uint16_t port, Deadline deadline,
                 const std::string& local_address) {
    RETURN_IF_ERROR(ConnectTcp(host, port, deadline, local_address));
    if (!channel_.tls()) return Status::Ok();
    RETURN_IF_ERROR(channel_.ExpectPeerName(host));
    bool done = false;
    error_code result;
    channel_.AsyncHandshake(asio::ssl::stream_base::client, [&](error_code e) {
      result = e;
      done = true;
    });
    RETURN_IF_ERROR(RunUntil(&done, deadline, "shake hands (TLS) with"));
    if (result) {
      return Status(StatusCode::kUnavailable,
                    fmt::format("TLS handshake with the coordinator at {}:{} failed: {}", host,
                                port, result.message()));
    }
    return Status::Ok();
  }

  Status ConnectTcp(const std::string& host, uint16_t port, Deadline deadline,
                    const std::string& local_address) {
    tcp::socket& sock = channel_.socket();
    error_code ec;
    tcp::resolver resolver(io_);
    const auto endpoints = resolver.resolve(host, std::to_string(port), ec);
    if (ec) {
      return Status(StatusCode::kUnavailable,
                    fmt::format("cannot resolve '{}': {}", host, ec.message()));
    }
    if (!local_address.empty()) {
      const asio::ip::address local = asio::ip::make_address(local_address, ec);
      if (!ec) sock.open(local.is_v4() ? tcp::v4() : tcp::v6(), ec);
      if (!ec) sock.bind(tcp::endpoint(local, 0), ec);
      if (ec) {
        return Status(StatusCode::kUnavailable,
                      fmt::format("cannot bind to {}: {}", local_address, ec.message()));
      }
      bool done = false;
      error_code result;
      sock.async_connect(*endpoints.begin(), [&](error_code e) {
        result = e;
        done = true;
      });
      RETURN_IF_ERROR(RunUntil(&done, deadline, "connect to"));
      if (result) {
        return Status(StatusCode::kUnavailable,
                      fmt::format("cannot connect to the coordinator at {}:{}: {}", host, port,
                                  result.message()));
      }
      sock.set_option(tcp::no_delay(true), ec);
      return Status::Ok();
    }
    bool done = false;
    error_code result;
    asio::async_connect(sock, endpoints, [&](error_code e, const tcp::endpoint&) {
      result = e;
      done = true;
    });
    RETURN_IF_ERROR(RunUntil(&done, deadline, "connect to"));
    if (result) {
      return Status(StatusCode::kUnavailable, fmt::format("cannot connect to the coordinator at "
                                                          "{}:{}: {}", host, port, result.message()));
    }
    sock.set_option(tcp::no_delay(true), ec);
    return Status::Ok();
  }

  Status Write(std::string_view bytes, Deadline deadline) {
    bool done = false;
    error_code result;
    channel_.AsyncWrite(asio::buffer(bytes.data(), bytes.size()), [&](error_code e, size_t) {
      result = e;
      done = true;
    });
    RETURN_IF_ERROR(RunUntil(&done, deadline, "write to"));
    if (result) {
      return Status(StatusCode::kUnavailable,
                    fmt::format("lost the connection to the coordinator: {}", result.message()));
    }
    return Status::Ok();
  }

  Result<std::string> ReadFrame(Deadline deadline) {
    while (!decoder_.has_frame()) {
      bool done = false;
      error_code result;
      size_t got = 0;
      channel_.AsyncReadSome(asio::buffer(buf_), [&](error_code e, size_t n) {
        result = e;
        got = n;
        done = true;
      });
      RETURN_IF_ERROR(RunUntil(&done, deadline, "hear from"));
      if (result) {
        return Status(StatusCode::kUnavailable,
                      result == asio::error::eof || result == asio::ssl::error::stream_truncated
                          ? std::string("the coordinator closed the connection")
                          : fmt::format("lost the connection to the coordinator: {}",
                                        result.message()));
      }
      RETURN_IF_ERROR(decoder_.Feed(buf_.data(), got));
    }
    return decoder_.Pop();
  }

 private:
  asio::io_context io_;
  std::shared_ptr<asio::ssl::context> tls_;  // null: plaintext
  Channel channel_;
  FrameDecoder decoder_;
  std::array<char, 64 * 1024> buf_{};
};

ControlConnection::ControlConnection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ControlConnection::~ControlConnection() = default;

Result<std::unique_ptr<ControlConnection>> ControlConnection::Open(
    const std::string& host, uint16_t port, Deadline deadline, const std::string& local_address,
    const TlsConfig& tls) {
  std::shared_ptr<asio::ssl::context> ctx;
  if (tls.enabled()) {
    ASSIGN_OR_RETURN(ctx, MakeClientTlsContext(tls));
  }
  auto impl = std::make_unique<Impl>(std::move(ctx));
  RETURN_IF_ERROR(impl->Connect(host, port, deadline, local_address));
  return std::unique_ptr<ControlConnection>(new ControlConnection(std::move(impl)));
}

Result<std::unique_ptr<ControlConnection>> ControlConnection::ConnectClient(
    const std::string& host, uint16_t port, const std::string& token, Deadline deadline,
    const std::string& local_address, const TlsConfig& tls) {
  ASSIGN_OR_RETURN(std::unique_ptr<ControlConnection> c,
                   Open(host, port, deadline, local_address, tls));
  control::Envelope hello;
  hello.set_request_id(c->NextRequestId());
  hello.mutable_hello()->set_protocol_version(kProtocolVersion);
  hello.mutable_hello()->set_role(control::ROLE_CLIENT);
  hello.mutable_hello()->set_token(token);
  RETURN_IF_ERROR(c->Send(hello, deadline));
  ASSIGN_OR_RETURN(control::Envelope reply, c->Receive(deadline));
  if (reply.has_error()) {
    return Status(StatusCode::kFailedPrecondition,
                  fmt::format("the coordinator refused the connection: {}", reply.error().message()));
  }
  if (!reply.has_hello_reply()) return Internal("the coordinator answered Hello with another message");
  c->client_ = reply.hello_reply().client();
  return c;
}

Status ControlConnection::Send(const control::Envelope& env, Deadline deadline) {
  ASSIGN_OR_RETURN(std::string frame, EncodeEnvelope(env, kDefaultMaxFrameBytes));
  return impl_->Write(frame, deadline);
}

Status ControlConnection::SendRaw(std::string_view bytes, Deadline deadline) {
  return impl_->Write(bytes, deadline);
}

Result<control::Envelope> ControlConnection::Receive(Deadline deadline) {
  while (true) {
    ASSIGN_OR_RETURN(std::string payload, impl_->ReadFrame(deadline));
    ASSIGN_OR_RETURN(control::Envelope env, ParseEnvelope(payload));
    if (!env.has_heartbeat()) return env;
  }
}

Result<control::JobEvent> SubmitJob(ControlConnection& conn, const JobRequest& request,
                                    const std::function<void(const control::JobEvent&)>& on_event,
                                    Deadline deadline) {
  const uint64_t rid = conn.NextRequestId();
  if (request.document != nullptr) {
    const std::string& d = *request.document;
    if (d.empty()) return InvalidArgument("the document is empty");
    size_t off = 0;
    do {
      control::Envelope env;
      env.set_request_id(rid);
      control::SubmitDocument* s = env.mutable_submit();
      s->set_offset(off);
      s->set_total_bytes(d.size());
      const size_t n = std::min(kDocumentChunkBytes, d.size() - off);
      s->set_data(d.substr(off, n));
      s->set_last(off + n == d.size());
      if (off == 0) {
        s->set_doc_id(request.doc_id);
        s->set_question(request.question);
        s->set_generate(request.generate);
      }
      RETURN_IF_ERROR(conn.Send(env, deadline));
      off += n;
    } while (off < d.size());
  } else {
    control::Envelope env;
    env.set_request_id(rid);
    env.mutable_query()->set_doc_id(request.doc_id);
    env.mutable_query()->set_question(request.question);
    env.mutable_query()->set_generate(request.generate);
    RETURN_IF_ERROR(conn.Send(env, deadline));
  }
  while (true) {
    ASSIGN_OR_RETURN(control::Envelope env, conn.Receive(deadline));
    if (env.has_error()) {
      return Status(StatusCode::kFailedPrecondition,
                    fmt::format("the coordinator refused the job: {}", env.error().message()));
    }
    if (env.request_id() != rid || !env.has_event()) continue;
    const control::JobEvent& e = env.event();
    if (on_event) on_event(e);
    if (e.kind() == control::JobEvent::RESULT) return e;
    if (e.kind() == control::JobEvent::FAILED) {
      return Status(StatusCode::kFailedPrecondition,
                    fmt::format("job {} failed: {}", e.job_id(), e.error()));
    }
  }
}

Result<control::StatusReply> QueryStatus(ControlConnection& conn, uint64_t job_id,
                                         Deadline deadline) {
  control::StatusRequest request;
  request.set_job_id(job_id);
  return QueryStatus(conn, request, deadline);
}

Result<control::StatusReply> QueryStatus(ControlConnection& conn,
                                         const control::StatusRequest& request, Deadline deadline) {
  control::Envelope env;
  env.set_request_id(conn.NextRequestId());
  *env.mutable_status_request() = request;
  RETURN_IF_ERROR(conn.Send(env, deadline));
  while (true) {
    ASSIGN_OR_RETURN(control::Envelope reply, conn.Receive(deadline));
    if (reply.has_error()) {
      return Status(StatusCode::kFailedPrecondition,
                    fmt::format("the coordinator refused: {}", reply.error().message()));
    }
    if (reply.request_id() == env.request_id() && reply.has_status_reply()) {
      return std::move(*reply.mutable_status_reply());
    }
  }
}

}  // namespace longctx::coordinator
