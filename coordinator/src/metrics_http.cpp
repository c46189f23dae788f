// The Prometheus scrape endpoint (metrics_http.h): Boost.Beast on a private io_context + thread.
#include "longctx/coordinator/metrics_http.h"

#include <atomic>
#include <optional>
#include <thread>
#include <utility>  // before Boost 1.74 Asio, which uses std::exchange without it

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "longctx/coordinator/frame.h"
#include "longctx/core/log.h"

namespace longctx::coordinator {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using boost::system::error_code;

Status ParseMetricsListen(std::string_view text, std::string* host, uint16_t* port) {
  if (!text.empty() && text.find(':') == std::string_view::npos) {
    if (text.find_first_not_of("0123456789") != std::string_view::npos) {
      return InvalidArgument("--metrics-listen: '{}' is neither HOST:PORT nor a port", text);
    }
    return ParseHostPort(fmt::format("127.0.0.1:{}", text), /*allow_zero=*/true, host, port)
        .WithContext("--metrics-listen");
  }
  return ParseHostPort(text, /*allow_zero=*/true, host, port).WithContext("--metrics-listen");
}

namespace {

// One scraper's connection: read a request (deadline, size bound), answer, repeat while the
// client keeps the connection alive.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket socket, const metrics::Registry& registry,
              const MetricsHttpOptions& options, std::shared_ptr<std::atomic<int>> open)
      : stream_(std::move(socket)), registry_(registry), options_(options), open_(std::move(open)) {}
  ~HttpSession() { open_->fetch_sub(1); }

  void Read() {
    parser_.emplace();
    parser_->header_limit(uint32_t(options_.max_request_bytes));
    parser_->body_limit(0);  // GET has no body; anything else is refused
    buffer_.consume(buffer_.size());
    stream_.expires_after(options_.read_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](error_code ec, size_t) { self->OnRead(ec); });
  }

 private:
  void OnRead(error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted) {
      Shutdown();
      return;
    }
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      Reply(http::status::request_header_fields_too_large, "request too large\n", false);
      return;
    }
    if (ec == http::error::body_limit) {
      Reply(http::status::payload_too_large, "a request body is not accepted\n", false);
      return;
    }
    if (ec) {
      Reply(http::status::bad_request, "bad request\n", false);
      return;
    }
    const auto& req = parser_->get();
    std::string_view target(req.target().data(), req.target().size());
    if (const size_t q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
    if (target != "/metrics") {
      Reply(http::status::not_found, "not found: the metrics are at /metrics\n", req.keep_alive());
    } else if (req.method() != http::verb::get) {
      Reply(http::status::method_not_allowed, "only GET\n", req.keep_alive());
    } else {
      Reply(http::status::ok, registry_.Expose(), req.keep_alive());
    }
  }

  void Reply(http::status status, std::string body, bool keep_alive) {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::server, "longctx");
    res->set(http::field::content_type, status == http::status::ok
                                            ? metrics::kOpenMetricsContentType
                                            : "text/plain; charset=utf-8");
    res->keep_alive(keep_alive);
    res->body() = std::move(body);
    res->prepare_payload();
    stream_.expires_after(options_.write_timeout);
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep_alive](error_code ec, size_t) {
                        if (ec || !keep_alive) {
                          self->Shutdown();
                        } else {
                          self->Read();
                        }
                      });
  }

  void Shutdown() {
    error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> parser_;
  const metrics::Registry& registry_;
  const MetricsHttpOptions& options_;
  std::shared_ptr<std::atomic<int>> open_;
};

}  // namespace

class MetricsHttpServer::Impl {
 public:
  Impl(const metrics::Registry& registry, MetricsHttpOptions options)
      : registry_(registry), options_(std::move(options)) {}

  Status Bind() {
    error_code ec;
    const asio::ip::address addr = asio::ip::make_address(options_.host, ec);
    if (ec) return InvalidArgument("--metrics-listen: '{}' is not an IP address", options_.host);
    const tcp::endpoint ep(addr, options_.port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Unavailable("cannot listen for metrics on {}:{}: {}", options_.host, options_.port,
                         ec.message());
    }
    port_ = acceptor_.local_endpoint(ec).port();
    return Status::Ok();
  }

  void Accept() {
    acceptor_.async_accept([this](error_code ec, tcp::socket socket) {
      if (!acceptor_.is_open()) return;
      if (!ec) {
        if (open_->load() >= options_.max_connections) {
          error_code cec;
          socket.close(cec);  // over the cap: no reply, Prometheus retries next interval
        } else {
          open_->fetch_add(1);
          std::make_shared<HttpSession>(std::move(socket), registry_, options_, open_)->Read();
        }
      }
      Accept();
    });
  }

  void Run() {
    thread_ = std::thread([this] { io_.run(); });
  }

  ~Impl() {
    asio::post(io_, [this] {
      error_code ec;
      acceptor_.close(ec);
    });
    io_.stop();  // pending sessions are destroyed with the io_context below
    if (thread_.joinable()) thread_.join();
  }

  const metrics::Registry& registry_;
  const MetricsHttpOptions options_;
  std::shared_ptr<std::atomic<int>> open_ = std::make_shared<std::atomic<int>>(0);
  asio::io_context io_;
  tcp::acceptor acceptor_{io_};
  uint16_t port_ = 0;
  std::thread thread_;
};

Result<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const metrics::Registry& registry, MetricsHttpOptions options) {
  if (options.max_request_bytes < 256 || options.max_connections < 1) {
    return InvalidArgument("metrics endpoint: max_request_bytes >= 256, max_connections >= 1");
  }
  auto impl = std::make_unique<Impl>(registry, std::move(options));
  RETURN_IF_ERROR(impl->Bind());
  impl->Accept();
  impl->Run();
  return std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer(std::move(impl)));
}

MetricsHttpServer::MetricsHttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsHttpServer::~MetricsHttpServer() = default;
uint16_t MetricsHttpServer::port() const { return impl_->port_; }
const std::string& MetricsHttpServer::host() const { return impl_->options_.host; }

}  // namespace longctx::coordinator
