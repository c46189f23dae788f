// Plain TCP sockets with deadlines, for the UCX bootstrap (worker addresses and rkeys travel
// out of band: a pool server answers a tiny hello on host:port). POSIX sockets and poll() —
// no Asio in comm/. Every call that can block takes a deadline.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/comm/communicator.h"
#include "longctx/core/file.h"
#include "longctx/core/status.h"

namespace longctx::comm::ucx {

struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const { return host + ":" + std::to_string(port); }
};
// "HOST:PORT" (PORT 0..65535; 0 = any free port when listening). kInvalidArgument naming `what`.
Result<HostPort> ParseHostPort(std::string_view text, std::string_view what);

// A listening IPv4 socket (SO_REUSEADDR, non-blocking).
class TcpListener {
 public:
  static Result<TcpListener> Listen(const HostPort& where);
  int fd() const { return fd_.get(); }
  // The address it is bound to (the port chosen by the kernel when asked for port 0).
  const HostPort& address() const { return address_; }
  // A connection, or kDeadlineExceeded. The accepted socket is non-blocking.
  Result<UniqueFd> Accept(Deadline deadline);

 private:
  UniqueFd fd_;
  HostPort address_;
};

// Connects (non-blocking socket), or kUnavailable ("connection refused") / kDeadlineExceeded.
Result<UniqueFd> TcpConnect(const HostPort& peer, Deadline deadline);

// Length-prefixed frames (uint32 little-endian length, then the bytes). A closed peer is
// kUnavailable; a frame longer than `max_bytes` is kDataLoss.
Status SendFrame(int fd, std::span<const std::byte> payload, Deadline deadline);
Result<std::vector<std::byte>> RecvFrame(int fd, size_t max_bytes, Deadline deadline);

// True when the peer closed the connection or it failed (never blocks). Pending unread bytes
// do not count as closed.
bool PeerClosed(int fd);

}  // namespace longctx::comm::ucx
