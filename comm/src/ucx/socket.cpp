// Deadline-bounded TCP for the UCX bootstrap (socket.h).
#include "longctx/comm/ucx/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace longctx::comm::ucx {

namespace {

// Milliseconds left before `deadline` (0 when passed), capped for poll().
int MillisLeft(Deadline deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 1'000'000 ? 1'000'000 : static_cast<int>(left);
}

Status SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return ErrnoStatus(errno, "fcntl(O_NONBLOCK)");
  }
  return Status::Ok();
}

// Waits until fd is ready for `events`; kDeadlineExceeded when the deadline passes first.
Status PollFor(int fd, short events, Deadline deadline, std::string_view what) {
  while (true) {
    pollfd p{fd, events, 0};
    const int n = poll(&p, 1, MillisLeft(deadline));
    if (n > 0) return Status::Ok();  // ready, or an error/hangup the next call reports
    if (n < 0 && errno != EINTR) return ErrnoStatus(errno, fmt::format("poll ({})", what));
    if (n == 0 && Clock::now() >= deadline) {
      return Status(StatusCode::kDeadlineExceeded, fmt::format("{}: timed out", what));
    }
  }
}

Result<sockaddr_in> Resolve(const HostPort& where) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(where.host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || found == nullptr) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("cannot resolve host '{}': {}", where.host, gai_strerror(rc)));
  }
  sockaddr_in addr;
  std::memcpy(&addr, found->ai_addr, sizeof(addr));
  freeaddrinfo(found);
  addr.sin_port = htons(where.port);
  return addr;
}

}  // namespace

Result<HostPort> ParseHostPort(std::string_view text, std::string_view what) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) {
    return InvalidArgument("{}: expected HOST:PORT, got '{}'", what, text);
  }
  const std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(),
                                         port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return InvalidArgument("{}: '{}' is not a port number (0-65535) in '{}'", what, port_text,
                           text);
  }
  return HostPort{std::string(text.substr(0, colon)), static_cast<uint16_t>(port)};
}

Result<TcpListener> TcpListener::Listen(const HostPort& where) {
  ASSIGN_OR_RETURN(sockaddr_in addr, Resolve(where));
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return ErrnoStatus(errno, "socket");
  const int one = 1;
  (void)setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    return Status(StatusCode::kUnavailable,
                  fmt::format("cannot listen on {}: {}", where.ToString(), std::strerror(err)));
  }
  if (listen(fd.get(), 64) != 0) return ErrnoStatus(errno, "listen");
  RETURN_IF_ERROR(SetNonBlocking(fd.get()));
  sockaddr_in bound;
  socklen_t len = sizeof(bound);
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    return ErrnoStatus(errno, "getsockname");
  }
  TcpListener listener;
  listener.fd_ = std::move(fd);
  listener.address_ = HostPort{where.host, ntohs(bound.sin_port)};
  return listener;
}

Result<UniqueFd> TcpListener::Accept(Deadline deadline) {
  while (true) {
    UniqueFd conn(accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (conn.get() >= 0) {
      const int one = 1;
      (void)setsockopt(conn.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return conn;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return ErrnoStatus(errno, "accept");
    }
    RETURN_IF_ERROR(PollFor(fd_.get(), POLLIN, deadline, "accept"));
  }
}

Result<UniqueFd> TcpConnect(const HostPort& peer, Deadline deadline) {
  ASSIGN_OR_RETURN(sockaddr_in addr, Resolve(peer));
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return ErrnoStatus(errno, "socket");
  const int one = 1;
  (void)setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EINPROGRESS) {
      const int err = errno;
      return Status(StatusCode::kUnavailable,
                    fmt::format("cannot connect to {}: {}", peer.ToString(), std::strerror(err)));
    }
    RETURN_IF_ERROR(PollFor(fd.get(), POLLOUT, deadline, "connecting to " + peer.ToString()));
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
      return Status(StatusCode::kUnavailable,
                    fmt::format("cannot connect to {}: {}", peer.ToString(), std::strerror(err)));
    }
  }
  return fd;
}

namespace {
Status SendBytes(int fd, const std::byte* data, size_t bytes, Deadline deadline) {
  while (bytes > 0) {
    const ssize_t n = send(fd, data, bytes, MSG_NOSIGNAL);
    if (n > 0) {
      data += n;
      bytes -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      RETURN_IF_ERROR(PollFor(fd, POLLOUT, deadline, "send"));
      continue;
    }
    const int err = errno;
    return Status(StatusCode::kUnavailable, fmt::format("send: {}", std::strerror(err)));
  }
  return Status::Ok();
}

Status RecvBytes(int fd, std::byte* data, size_t bytes, Deadline deadline) {
  while (bytes > 0) {
    const ssize_t n = recv(fd, data, bytes, 0);
    if (n > 0) {
      data += n;
      bytes -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return Status(StatusCode::kUnavailable, "the peer closed the connection");
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      RETURN_IF_ERROR(PollFor(fd, POLLIN, deadline, "receive"));
      continue;
    }
    const int err = errno;
    return Status(StatusCode::kUnavailable, fmt::format("recv: {}", std::strerror(err)));
  }
  return Status::Ok();
}
}  // namespace

Status SendFrame(int fd, std::span<const std::byte> payload, Deadline deadline) {
  if (payload.size() > UINT32_MAX) return InvalidArgument("frame of {} bytes", payload.size());
  const uint32_t n = static_cast<uint32_t>(payload.size());
  const std::byte length[4] = {std::byte(n & 0xff), std::byte((n >> 8) & 0xff),
                               std::byte((n >> 16) & 0xff), std::byte(n >> 24)};
  RETURN_IF_ERROR(SendBytes(fd, length, 4, deadline));
  return SendBytes(fd, payload.data(), payload.size(), deadline);
}

Result<std::vector<std::byte>> RecvFrame(int fd, size_t max_bytes, Deadline deadline) {
  std::byte length[4];
  RETURN_IF_ERROR(RecvBytes(fd, length, 4, deadline));
  const uint32_t n = uint32_t(length[0]) | (uint32_t(length[1]) << 8) |
                     (uint32_t(length[2]) << 16) | (uint32_t(length[3]) << 24);
  if (n > max_bytes) return DataLoss("a {}-byte frame (at most {} expected)", n, max_bytes);
  std::vector<std::byte> payload(n);
  RETURN_IF_ERROR(RecvBytes(fd, payload.data(), n, deadline));
  return payload;
}

bool PeerClosed(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if ((p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) return true;
  if ((p.revents & POLLIN) == 0) return false;
  std::byte b;
  const ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

}  // namespace longctx::comm::ucx
