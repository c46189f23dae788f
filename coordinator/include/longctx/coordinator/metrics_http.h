// The Prometheus scrape endpoint: an HTTP/1.1 server (Boost.Beast) that answers GET /metrics with
// a metrics::Registry's OpenMetrics text and 404 to every other path. It runs on its own thread
// and io_context, so a slow or hostile scraper never delays the service it reports on; requests
// are bounded (8 KiB of headers, no body), every read has a deadline, and connections are capped.
// The endpoint has no authentication and no TLS: bind it to loopback or a trusted network
// (docs/metrics.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "longctx/core/metrics.h"
#include "longctx/core/status.h"

namespace longctx::coordinator {

struct MetricsHttpOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;                       // 0: the OS picks one (see MetricsHttpServer::port())
  size_t max_request_bytes = 8192;         // request line + headers; a body is refused
  std::chrono::milliseconds read_timeout{5000};   // from accept (or the last reply) to a request
  std::chrono::milliseconds write_timeout{5000};  // to send one reply
  int max_connections = 16;                // more are closed at once
};

// "HOST:PORT", or "PORT" alone for 127.0.0.1:PORT (port 0: any free port).
Status ParseMetricsListen(std::string_view text, std::string* host, uint16_t* port);

class MetricsHttpServer {
 public:
  // Binds and starts serving `registry` (which must outlive the server) on a thread of its own.
  static Result<std::unique_ptr<MetricsHttpServer>> Start(const metrics::Registry& registry,
                                                          MetricsHttpOptions options);
  // Stops accepting, closes every connection and joins the thread.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  uint16_t port() const;
  const std::string& host() const;

  class Impl;

 private:
  explicit MetricsHttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace longctx::coordinator
