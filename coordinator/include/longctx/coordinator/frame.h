// The control plane's wire format: a frame is a 4-byte big-endian length, then that many bytes of
// one serialized control::Envelope. FrameDecoder checks each length against a maximum before it
// buffers a byte of the body, so a peer cannot make the coordinator allocate what it announces;
// ParseEnvelope refuses malformed messages, unknown protocol versions and empty bodies.
// No I/O here: the server, the client and the fuzz target all drive these functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "control.pb.h"
#include "longctx/core/status.h"

namespace longctx::coordinator {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 4;
// Default cap on one frame (bytes of the envelope, header excluded). Document chunks are
// kDocumentChunkBytes, so a frame never needs more than this.
inline constexpr size_t kDefaultMaxFrameBytes = size_t(4) << 20;
inline constexpr size_t kDocumentChunkBytes = size_t(256) << 10;
// Documents a worker group may report holding (in its Hello and in each result): with ids of at
// most 64 + 1 + 128 bytes this keeps a Hello under the pre-authentication budget (server.h).
inline constexpr int kMaxHeldDocuments = 32;

// The 4-byte header followed by `payload`. Fails (kResourceExhausted) when the payload is larger
// than max_frame_bytes, so a sender never emits a frame its peer must refuse.
Result<std::string> EncodeFrame(std::string_view payload, size_t max_frame_bytes);
// Serializes `env` (its version set to kProtocolVersion when 0) and frames it.
Result<std::string> EncodeEnvelope(const control::Envelope& env, size_t max_frame_bytes);

// Incremental frame parser. Feed() bytes as they arrive (any split), then take complete frame
// payloads with Pop(). Invariant: the buffered bytes never exceed kFrameHeaderBytes +
// max_frame_bytes plus one Feed() call's input. After an error every call fails.
class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

  // kResourceExhausted when a header announces more than max_frame_bytes.
  Status Feed(const char* data, size_t bytes);
  bool has_frame() const { return !frames_.empty(); }
  std::string Pop();  // precondition: has_frame()
  // True while bytes of an incomplete frame are buffered (the partial-frame timeout runs then).
  bool partial() const { return have_ != 0 || need_body_; }
  size_t max_frame_bytes() const { return max_frame_bytes_; }
  // Raises (or lowers) the cap for headers not yet parsed (the server: after authentication).
  void set_max_frame_bytes(size_t bytes) { max_frame_bytes_ = bytes; }

 private:
  size_t max_frame_bytes_;
  Status error_;
  char header_[kFrameHeaderBytes] = {};
  size_t have_ = 0;           // bytes of the current header or body received
  bool need_body_ = false;    // header complete, body being received
  size_t body_bytes_ = 0;
  std::string body_;
  std::deque<std::string> frames_;
};

// Parses one frame payload: kInvalidArgument for bytes that are not an Envelope, for a version
// other than kProtocolVersion ("unsupported protocol version 7 (this side speaks 1)") and for an
// envelope without a body.
Result<control::Envelope> ParseEnvelope(std::string_view payload);

// The checks the coordinator applies to a client's or worker's message before acting on it
// (identifier syntax, sizes, ranges), so the fuzz target exercises them too.
// Document ids: 1..128 bytes of [A-Za-z0-9._:-]; they never name a file.
Status ValidateDocId(std::string_view doc_id);
// Client identities (names in --client-tokens-file): 1..64 bytes of [A-Za-z0-9._-].
Status ValidateClientName(std::string_view name);
// What a worker group holds a document as: "<client>/<doc-id>", so one client's documents are
// never reachable by another client's question (a client only ever names its own doc ids).
std::string ScopedDocId(std::string_view client, std::string_view doc_id);
// A valid client name, one '/', a valid document id.
Status ValidateScopedDocId(std::string_view scoped);
Status ValidateSubmitChunk(const control::SubmitDocument& s, uint64_t max_document_bytes);
Status ValidateQuery(const control::Query& q);
Status ValidateEvent(const control::JobEvent& e);

// Equality of two secrets whose running time depends only on their lengths, not on where they
// differ (no early exit). Written here, not OpenSSL's CRYPTO_memcmp, so frame.cpp (and its fuzz
// target) stays free of OpenSSL (only tls.cpp uses it).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// The shared token: the contents of `token_file` (trailing whitespace removed) when it is not
// empty, else the LONGCTX_TOKEN environment variable. Never taken from the command line, so it
// does not show in `ps`. Errors name the file, never the token.
Result<std::string> LoadToken(const std::string& token_file);
// The same for another secret: `file` when given, else the environment variable `env_var`;
// `flag` names the option in errors ("no worker token: give --worker-token-file FILE or set ...").
Result<std::string> LoadSecret(const std::string& file, const char* env_var, const char* flag,
                               const char* what);

// Tokens shorter than this are refused when the coordinator starts (a guessable secret).
inline constexpr size_t kMinTokenBytes = 16;
Status CheckTokenStrength(std::string_view token, std::string_view what);

// One client identity: jobs belong to the identity whose token submitted them.
struct ClientCredential {
  std::string name;
  std::string token;
};
// A --client-tokens-file: one "NAME TOKEN" per line (blank lines and lines starting with '#'
// ignored); names valid and unique, tokens unique and at least kMinTokenBytes. Errors name the
// file and the line, never a token.
Result<std::vector<ClientCredential>> LoadClientTokens(const std::string& file);

// "HOST:PORT" -> host, port (port 0..65535; port 0 only when allow_zero: the OS picks one).
Status ParseHostPort(std::string_view text, bool allow_zero, std::string* host, uint16_t* port);

}  // namespace longctx::coordinator
