// The metrics endpoint (coordinator/metrics_http.h) over real loopback sockets: GET /metrics
// returns the registry's exposition with the OpenMetrics content type, other paths 404, other
// methods 405, an oversized request 431, a silent client is cut off at the read deadline and does
// not delay other scrapers, keep-alive serves several requests on one connection.
#include "longctx/coordinator/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace longctx::coordinator {
namespace {

// A blocking loopback TCP client with a 5 s receive deadline.
class Conn {
 public:
  explicit Conn(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~Conn() { ::close(fd_); }
  bool connected() const { return connected_; }
  void Send(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may close early (an oversized request)
      off += size_t(n);
    }
  }
  // One response: headers, then Content-Length bytes of body. Empty on EOF/timeout.
  std::string ReadResponse(std::string* body) {
    while (buf_.find("\r\n\r\n") == std::string::npos) {
      if (!Fill()) return "";
    }
    const size_t end = buf_.find("\r\n\r\n") + 4;
    std::string head = buf_.substr(0, end);
    size_t length = 0;
    const size_t cl = head.find("Content-Length: ");
    if (cl != std::string::npos) length = std::stoul(head.substr(cl + 16));
    while (buf_.size() < end + length) {
      if (!Fill()) return "";
    }
    *body = buf_.substr(end, length);
    buf_.erase(0, end + length);
    return head;
  }
  // True when the server closes the connection within the receive deadline.
  bool ClosedByPeer() {
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

 private:
  bool Fill() {
    char tmp[4096];
    const ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf_.append(tmp, size_t(n));
    return true;
  }
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

std::string Get(const std::string& path, const std::string& extra = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n";
}

class MetricsHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_.MustCounter("longctx_jobs", "Job transitions", {{"event", "done"}}).Inc(7);
    registry_.MustHistogram("longctx_job_phase_seconds", "Latency", {0.5, 1}).Observe(0.7);
    MetricsHttpOptions o;
    o.read_timeout = std::chrono::milliseconds(400);
    auto s = MetricsHttpServer::Start(registry_, o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    server_ = std::move(*s);
  }
  metrics::Registry registry_;
  std::unique_ptr<MetricsHttpServer> server_;
};

TEST_F(MetricsHttpTest, GetMetricsReturnsTheExposition) {
  Conn c(server_->port());
  ASSERT_TRUE(c.connected());
  c.Send(Get("/metrics"));
  std::string body;
  const std::string head = c.ReadResponse(&body);
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  EXPECT_NE(head.find("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
            std::string::npos) << head;
  EXPECT_EQ(body, registry_.Expose());
  EXPECT_NE(body.find("longctx_jobs_total{event=\"done\"} 7\n"), std::string::npos) << body;
  // Keep-alive: a second request on the same connection sees the new value.
  registry_.MustCounter("longctx_jobs", "Job transitions", {{"event", "done"}}).Inc();
  c.Send(Get("/metrics?x=1"));
  ASSERT_EQ(c.ReadResponse(&body).rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_NE(body.find("longctx_jobs_total{event=\"done\"} 8\n"), std::string::npos) << body;
}

TEST_F(MetricsHttpTest, OtherPathsAndMethodsAreRefused) {
  Conn c(server_->port());
  ASSERT_TRUE(c.connected());
  std::string body;
  c.Send(Get("/"));
  EXPECT_EQ(c.ReadResponse(&body).rfind("HTTP/1.1 404", 0), 0u);
  c.Send(Get("/metricsx"));
  EXPECT_EQ(c.ReadResponse(&body).rfind("HTTP/1.1 404", 0), 0u);
  c.Send("DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.ReadResponse(&body).rfind("HTTP/1.1 405", 0), 0u);
  Conn d(server_->port());
  d.Send("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(d.ReadResponse(&body).rfind("HTTP/1.1 413", 0), 0u);
  Conn e(server_->port());
  e.Send("NOT HTTP AT ALL\r\n\r\n");
  EXPECT_EQ(e.ReadResponse(&body).rfind("HTTP/1.1 400", 0), 0u);
  EXPECT_TRUE(e.ClosedByPeer());
}

TEST_F(MetricsHttpTest, OversizedRequestIsRefusedAndClosed) {
  Conn c(server_->port());
  ASSERT_TRUE(c.connected());
  c.Send(Get("/metrics", "X-Big: " + std::string(20000, 'a') + "\r\n"));
  std::string body;
  const std::string head = c.ReadResponse(&body);
  EXPECT_EQ(head.rfind("HTTP/1.1 431", 0), 0u) << head;
  EXPECT_TRUE(c.ClosedByPeer());
}

TEST_F(MetricsHttpTest, SilentClientIsCutOffAndDoesNotBlockOthers) {
  Conn silent(server_->port());
  Conn half(server_->port());
  ASSERT_TRUE(silent.connected() && half.connected());
  half.Send("GET /metr");  // a request that never completes
  const auto t0 = std::chrono::steady_clock::now();
  Conn c(server_->port());
  c.Send(Get("/metrics"));
  std::string body;
  EXPECT_EQ(c.ReadResponse(&body).rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(300));
  // Both stalled connections are closed at the 400 ms read deadline (well before 5 s).
  EXPECT_TRUE(silent.ClosedByPeer());
  EXPECT_TRUE(half.ClosedByPeer());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
}

TEST(MetricsListen, Parse) {
  std::string host;
  uint16_t port = 1;
  ASSERT_TRUE(ParseMetricsListen("9100", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 9100);
  ASSERT_TRUE(ParseMetricsListen("0.0.0.0:0", &host, &port).ok());
  EXPECT_EQ(host, "0.0.0.0");
  EXPECT_EQ(port, 0);
  EXPECT_FALSE(ParseMetricsListen("", &host, &port).ok());
  EXPECT_FALSE(ParseMetricsListen("abc", &host, &port).ok());
  EXPECT_FALSE(ParseMetricsListen("127.0.0.1:99999", &host, &port).ok());
}

TEST(MetricsListen, PortInUseIsAnError) {
  metrics::Registry r;
  auto a = MetricsHttpServer::Start(r, {});
  ASSERT_TRUE(a.ok());
  MetricsHttpOptions o;
  o.port = (*a)->port();
  auto b = MetricsHttpServer::Start(r, o);
  EXPECT_FALSE(b.ok());
}

}  // namespace
}  // namespace longctx::coordinator
