// TLS for the control plane (Boost.Asio SSL over OpenSSL): the coordinator's server context
// (its certificate, and the CA that signs worker groups' certificates: mutual TLS for workers),
// the client and worker contexts (the CA that signs the coordinator's certificate, and a worker's
// own certificate), and Channel, a connection that is TLS or plaintext behind one interface so
// the server, ControlConnection and WorkerLink drive both the same way.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

#include "longctx/core/status.h"

namespace longctx::coordinator {

// PEM files. All empty: plaintext.
struct TlsConfig {
  std::string cert_file;  // this side's certificate (chain)
  std::string key_file;   // its private key
  std::string ca_file;    // the CA(s) the peer's certificate must chain to
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !ca_file.empty(); }
};

// The coordinator: cert, key and ca all required. Peers are asked for a certificate; one that
// does not chain to `ca` fails the handshake; clients may present none (they authenticate with
// a token), worker groups must (checked at Hello with PeerCertificateVerified).
Result<std::shared_ptr<boost::asio::ssl::context>> MakeServerTlsContext(const TlsConfig& tls);
// Clients and worker groups: ca required (the coordinator's certificate must chain to it and
// name the host connected to); cert + key together, when given, are presented (worker groups).
Result<std::shared_ptr<boost::asio::ssl::context>> MakeClientTlsContext(const TlsConfig& tls);

// A TCP connection, TLS when made with a context. Handlers are Asio completion handlers.
class Channel {
 public:
  using Tcp = boost::asio::ip::tcp;
  // Plaintext when ctx is null. ctx must outlive the channel.
  Channel(Tcp::socket socket, boost::asio::ssl::context* ctx)
      : tls_(ctx != nullptr), stream_(std::move(socket), ctx ? *ctx : PlainContext()) {}

  bool tls() const { return tls_; }
  Tcp::socket& socket() { return stream_.next_layer(); }
  boost::asio::ssl::stream<Tcp::socket>& stream() { return stream_; }

  template <class Buffers, class Handler>
  void AsyncReadSome(const Buffers& b, Handler&& h) {
    if (tls_) stream_.async_read_some(b, std::forward<Handler>(h));
    else socket().async_read_some(b, std::forward<Handler>(h));
  }
  template <class Buffers, class Handler>
  void AsyncWrite(const Buffers& b, Handler&& h) {
    if (tls_) boost::asio::async_write(stream_, b, std::forward<Handler>(h));
    else boost::asio::async_write(socket(), b, std::forward<Handler>(h));
  }
  // Plaintext: completes at once with success.
  template <class Handler>
  void AsyncHandshake(boost::asio::ssl::stream_base::handshake_type type, Handler&& h) {
    if (tls_) {
      stream_.async_handshake(type, std::forward<Handler>(h));
    } else {
      boost::asio::post(socket().get_executor(),
                        [h = std::forward<Handler>(h)]() mutable { h(boost::system::error_code()); });
    }
  }
  // A client: the name the coordinator's certificate must carry (SNI + verification).
  Status ExpectPeerName(const std::string& host);
  // True when the peer presented a certificate that verified against the CA.
  bool PeerCertificateVerified();
  void Close() {
    boost::system::error_code ec;
    socket().shutdown(Tcp::socket::shutdown_both, ec);
    socket().close(ec);
  }

 private:
  static boost::asio::ssl::context& PlainContext();  // never used for a handshake
  bool tls_;
  boost::asio::ssl::stream<Tcp::socket> stream_;
};

}  // namespace longctx::coordinator
