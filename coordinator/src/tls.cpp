// TLS contexts and Channel (tls.h).
#include "longctx/coordinator/tls.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace longctx::coordinator {

namespace ssl = boost::asio::ssl;
using boost::system::error_code;

namespace {

Result<std::shared_ptr<ssl::context>> NewContext(ssl::context::method method) {
  auto ctx = std::make_shared<ssl::context>(method);
  error_code ec;
  // TLS 1.2 or newer only; no compression, no renegotiation surprises.
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                       ssl::context::no_tlsv1_1 | ssl::context::no_compression,
                   ec);
  if (ec) return Internal("TLS: cannot set the context's options: {}", ec.message());
  return ctx;
}

Status LoadIdentity(ssl::context& ctx, const TlsConfig& tls) {
  error_code ec;
  ctx.use_certificate_chain_file(tls.cert_file, ec);
  if (ec) return InvalidArgument("--tls-cert {}: {}", tls.cert_file, ec.message());
  ctx.use_private_key_file(tls.key_file, ssl::context::pem, ec);
  if (ec) return InvalidArgument("--tls-key {}: {}", tls.key_file, ec.message());
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1) {
    return InvalidArgument("--tls-key {} does not match the certificate {}", tls.key_file,
                           tls.cert_file);
  }
  return Status::Ok();
}

Status LoadCa(ssl::context& ctx, const TlsConfig& tls) {
  error_code ec;
  ctx.load_verify_file(tls.ca_file, ec);
  if (ec) return InvalidArgument("--tls-ca {}: {}", tls.ca_file, ec.message());
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<ssl::context>> MakeServerTlsContext(const TlsConfig& tls) {
  if (tls.cert_file.empty() || tls.key_file.empty() || tls.ca_file.empty()) {
    return InvalidArgument("TLS on the coordinator needs --tls-cert, --tls-key and --tls-ca (the "
                           "CA of the worker groups' certificates)");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<ssl::context> ctx, NewContext(ssl::context::tls_server));
  RETURN_IF_ERROR(LoadIdentity(*ctx, tls));
  RETURN_IF_ERROR(LoadCa(*ctx, tls));
  // Ask every peer for a certificate and refuse one that does not verify; a peer without one is
  // let through here (clients authenticate with their token) and refused at Hello if it says it
  // is a worker group.
  error_code ec;
  ctx->set_verify_mode(ssl::verify_peer, ec);
  if (ec) return Internal("TLS: {}", ec.message());
  return ctx;
}

Result<std::shared_ptr<ssl::context>> MakeClientTlsContext(const TlsConfig& tls) {
  if (tls.ca_file.empty()) {
    return InvalidArgument("TLS needs --tls-ca (the CA of the coordinator's certificate)");
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return InvalidArgument("--tls-cert and --tls-key go together");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<ssl::context> ctx, NewContext(ssl::context::tls_client));
  RETURN_IF_ERROR(LoadCa(*ctx, tls));
  if (!tls.cert_file.empty()) RETURN_IF_ERROR(LoadIdentity(*ctx, tls));
  error_code ec;
  ctx->set_verify_mode(ssl::verify_peer, ec);
  if (ec) return Internal("TLS: {}", ec.message());
  return ctx;
}

ssl::context& Channel::PlainContext() {
  static ssl::context ctx(ssl::context::tls_client);
  return ctx;
}

Status Channel::ExpectPeerName(const std::string& host) {
  if (!tls_) return Status::Ok();
  // SNI, then the certificate must name `host` (a DNS name or an IP address in its SAN).
  if (SSL_set_tlsext_host_name(stream_.native_handle(), host.c_str()) != 1) {
    return Internal("TLS: cannot set the server name '{}'", host);
  }
  error_code ec;
  stream_.set_verify_callback(ssl::host_name_verification(host), ec);
  if (ec) return Internal("TLS: {}", ec.message());
  return Status::Ok();
}

bool Channel::PeerCertificateVerified() {
  if (!tls_) return false;
  SSL* s = stream_.native_handle();
  X509* cert = SSL_get0_peer_certificate(s);
  return cert != nullptr && SSL_get_verify_result(s) == X509_V_OK;
}

}  // namespace longctx::coordinator
