// Frames, envelope parsing and validation, the constant-time compare and the token (frame.h).
#include "longctx/coordinator/frame.h"


#include <cctype>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>

namespace longctx::coordinator {

Result<std::string> EncodeFrame(std::string_view payload, size_t max_frame_bytes) {
  if (payload.size() > max_frame_bytes) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("message of {} bytes exceeds the frame limit of {} bytes",
                              payload.size(), max_frame_bytes));
  }
  const uint32_t n = uint32_t(payload.size());
  std::string out(kFrameHeaderBytes + payload.size(), '\0');
  out[0] = char((n >> 24) & 0xff);
  out[1] = char((n >> 16) & 0xff);
  out[2] = char((n >> 8) & 0xff);
  out[3] = char(n & 0xff);
  if (!payload.empty()) std::memcpy(out.data() + kFrameHeaderBytes, payload.data(), payload.size());
  return out;
}

Result<std::string> EncodeEnvelope(const control::Envelope& env, size_t max_frame_bytes) {
  std::string payload;
  if (env.version() == 0) {
    control::Envelope copy = env;
    copy.set_version(kProtocolVersion);
    if (!copy.SerializeToString(&payload)) return Internal("cannot serialize a control message");
  } else if (!env.SerializeToString(&payload)) {
    return Internal("cannot serialize a control message");
  }
  return EncodeFrame(payload, max_frame_bytes);
}

Status FrameDecoder::Feed(const char* data, size_t bytes) {
  if (!error_.ok()) return error_;
  while (bytes > 0) {
    if (!need_body_) {
      const size_t take = std::min(bytes, kFrameHeaderBytes - have_);
      std::memcpy(header_ + have_, data, take);
      have_ += take;
      data += take;
      bytes -= take;
      if (have_ < kFrameHeaderBytes) break;
      const auto* h = reinterpret_cast<const unsigned char*>(header_);
      body_bytes_ = (size_t(h[0]) << 24) | (size_t(h[1]) << 16) | (size_t(h[2]) << 8) | size_t(h[3]);
      have_ = 0;
      // The length is checked before anything is allocated for the body.
      if (body_bytes_ > max_frame_bytes_) {
        error_ = Status(StatusCode::kResourceExhausted,
                        fmt::format("frame of {} bytes exceeds the limit of {} bytes", body_bytes_,
                                    max_frame_bytes_));
        return error_;
      }
      body_.clear();
      body_.reserve(body_bytes_);
      need_body_ = true;
    }
    const size_t take = std::min(bytes, body_bytes_ - body_.size());
    body_.append(data, take);
    data += take;
    bytes -= take;
    if (body_.size() == body_bytes_) {
      frames_.push_back(std::move(body_));
      body_ = std::string();
      need_body_ = false;
    }
  }
  return Status::Ok();
}

std::string FrameDecoder::Pop() {
  std::string f = std::move(frames_.front());
  frames_.pop_front();
  return f;
}

Result<control::Envelope> ParseEnvelope(std::string_view payload) {
  control::Envelope env;
  if (payload.size() > size_t(std::numeric_limits<int>::max()) ||
      !env.ParseFromArray(payload.data(), int(payload.size()))) {
    return InvalidArgument("malformed message: {} bytes that are not a longctx control envelope",
                           payload.size());
  }
  if (env.version() != kProtocolVersion) {
    return InvalidArgument("unsupported protocol version {} (this side speaks {})", env.version(),
                           kProtocolVersion);
  }
  if (env.body_case() == control::Envelope::BODY_NOT_SET) {
    return InvalidArgument("message without a body (unknown message type?)");
  }
  return env;
}

Status ValidateDocId(std::string_view doc_id) {
  if (doc_id.empty() || doc_id.size() > 128) {
    return InvalidArgument("document id must be 1 to 128 characters, got {}", doc_id.size());
  }
  for (char c : doc_id) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
                    c == '-' || c == ':';
    if (!ok) {
      return InvalidArgument("document id may hold only letters, digits and . _ - : (got byte {})",
                             int(static_cast<unsigned char>(c)));
    }
  }
  return Status::Ok();
}

Status ValidateClientName(std::string_view name) {
  if (name.empty() || name.size() > 64) {
    return InvalidArgument("client name must be 1 to 64 characters, got {}", name.size());
  }
  for (char c : name) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    if (!ok) {
      return InvalidArgument("client name may hold only letters, digits and . _ - (got byte {})",
                             int(static_cast<unsigned char>(c)));
    }
  }
  return Status::Ok();
}

std::string ScopedDocId(std::string_view client, std::string_view doc_id) {
  std::string s(client);
  s.push_back('/');
  s.append(doc_id);
  return s;
}

Status ValidateScopedDocId(std::string_view scoped) {
  const size_t slash = scoped.find('/');
  if (slash == std::string_view::npos) {
    return InvalidArgument("held document '{}' lacks its client prefix",
                           scoped.substr(0, std::min<size_t>(scoped.size(), 64)));
  }
  RETURN_IF_ERROR(ValidateClientName(scoped.substr(0, slash)));
  return ValidateDocId(scoped.substr(slash + 1));
}

namespace {
constexpr int64_t kMaxGenerate = 1 << 20;
constexpr size_t kMaxQuestionBytes = size_t(1) << 20;

Status ValidateQuestion(const std::string& question, int64_t generate) {
  if (question.size() > kMaxQuestionBytes) {
    return InvalidArgument("question of {} bytes exceeds {} bytes", question.size(),
                           kMaxQuestionBytes);
  }
  if (generate < 0 || generate > kMaxGenerate) {
    return InvalidArgument("generate must be in [0, {}], got {}", kMaxGenerate, generate);
  }
  return Status::Ok();
}
}  // namespace

Status ValidateSubmitChunk(const control::SubmitDocument& s, uint64_t max_document_bytes) {
  if (s.offset() == 0) {
    RETURN_IF_ERROR(ValidateDocId(s.doc_id()));
    RETURN_IF_ERROR(ValidateQuestion(s.question(), s.generate()));
    if (s.total_bytes() == 0) return InvalidArgument("the document is empty");
    if (s.total_bytes() > max_document_bytes) {
      return Status(StatusCode::kResourceExhausted,
                    fmt::format("document of {} bytes exceeds the limit of {} bytes",
                                s.total_bytes(), max_document_bytes));
    }
  }
  if (s.data().size() > s.total_bytes() || s.offset() > s.total_bytes() - s.data().size()) {
    return InvalidArgument("chunk [{}, +{}) lies outside the announced {} bytes", s.offset(),
                           s.data().size(), s.total_bytes());
  }
  if (s.last() && s.offset() + s.data().size() != s.total_bytes()) {
    return InvalidArgument("last chunk ends at {} but the document has {} bytes",
                           s.offset() + s.data().size(), s.total_bytes());
  }
  return Status::Ok();
}

Status ValidateQuery(const control::Query& q) {
  RETURN_IF_ERROR(ValidateDocId(q.doc_id()));
  RETURN_IF_ERROR(ValidateQuestion(q.question(), q.generate()));
  if (q.question().empty() && q.generate() == 0) {
    return InvalidArgument("a query needs a question or generate > 0");
  }
  return Status::Ok();
}

Status ValidateEvent(const control::JobEvent& e) {
  if (e.job_id() == 0) return InvalidArgument("job event without a job id");
  switch (e.kind()) {
    case control::JobEvent::PROGRESS:
      if (e.layers() <= 0 || e.layer() < 0 || e.layer() > e.layers()) {
        return InvalidArgument("progress {}/{} out of range", e.layer(), e.layers());
      }
      return Status::Ok();
    case control::JobEvent::TOKEN:
      if (e.index() < 0) return InvalidArgument("token index {} is negative", e.index());
      return Status::Ok();
    case control::JobEvent::RESULT:
      if (e.result().held_documents_size() > kMaxHeldDocuments) {
        return InvalidArgument("{} held documents reported (limit {})",
                               e.result().held_documents_size(), kMaxHeldDocuments);
      }
      for (const std::string& d : e.result().held_documents()) {
        RETURN_IF_ERROR(ValidateScopedDocId(d));
      }
      return Status::Ok();
    case control::JobEvent::FAILED:
      return Status::Ok();
    default:
      return InvalidArgument("unexpected job event kind {}", int(e.kind()));
  }
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // Every byte of the longer input is visited and folded into `diff` with no branch on the data;
  // volatile keeps the compiler from turning the fold into an early-exit comparison.
  const size_t n = std::max(a.size(), b.size());
  volatile unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff = diff | static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

Result<std::string> LoadToken(const std::string& token_file) {
  return LoadSecret(token_file, "LONGCTX_TOKEN", "--token-file", "token");
}

Result<std::string> LoadSecret(const std::string& token_file, const char* env_var,
                               const char* flag, const char* what) {
  std::string token;
  if (!token_file.empty()) {
    std::ifstream in(token_file, std::ios::binary);
    if (!in) return NotFound("{}: cannot open the {} file", token_file, what);
    char buf[4097];
    in.read(buf, sizeof buf);
    if (in.bad()) return DataLoss("{}: read error", token_file);
    if (in.gcount() > 4096) return InvalidArgument("{}: token file larger than 4096 bytes", token_file);
    token.assign(buf, size_t(in.gcount()));
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
    if (token.empty()) return InvalidArgument("{}: the {} file is empty", token_file, what);
    return token;
  }
  const char* env = std::getenv(env_var);
  if (env != nullptr) token = env;
  if (token.empty()) {
    return InvalidArgument("no {}: give {} FILE or set {}", what, flag, env_var);
  }
  if (token.size() > 4096) return InvalidArgument("{} is longer than 4096 bytes", env_var);
  return token;
}

Status CheckTokenStrength(std::string_view token, std::string_view what) {
  if (token.size() < kMinTokenBytes) {
    return InvalidArgument("the {} is {} bytes; at least {} are required (e.g. head -c 32 "
                           "/dev/urandom | base64 > FILE)", what, token.size(), kMinTokenBytes);
  }
  return Status::Ok();
}

Result<std::vector<ClientCredential>> LoadClientTokens(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return NotFound("{}: cannot open the client tokens file", file);
  std::vector<ClientCredential> out;
  std::string line;
  int number = 0;
  size_t total = 0;
  while (std::getline(in, line)) {
    ++number;
    total += line.size() + 1;
    if (total > (size_t(1) << 20)) return InvalidArgument("{}: larger than 1 MiB", file);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    size_t b = 0;
    while (b < line.size() && std::isspace(static_cast<unsigned char>(line[b]))) ++b;
    if (b == line.size() || line[b] == '#') continue;
    size_t e = b;
    while (e < line.size() && !std::isspace(static_cast<unsigned char>(line[e]))) ++e;
    size_t t = e;
    while (t < line.size() && std::isspace(static_cast<unsigned char>(line[t]))) ++t;
    ClientCredential c{line.substr(b, e - b), line.substr(t)};
    if (c.token.empty()) {
      return InvalidArgument("{}:{}: expected 'NAME TOKEN'", file, number);
    }
    RETURN_IF_ERROR(ValidateClientName(c.name).WithContext(fmt::format("{}:{}", file, number)));
    RETURN_IF_ERROR(CheckTokenStrength(c.token, fmt::format("token of client '{}'", c.name))
                        .WithContext(fmt::format("{}:{}", file, number)));
    for (const ClientCredential& o : out) {
      if (o.name == c.name) return InvalidArgument("{}:{}: client '{}' twice", file, number, c.name);
      if (o.token == c.token) {
        return InvalidArgument("{}:{}: clients '{}' and '{}' have the same token", file, number,
                               o.name, c.name);
      }
    }
    out.push_back(std::move(c));
  }
  if (in.bad()) return DataLoss("{}: read error", file);
  if (out.empty()) return InvalidArgument("{}: no 'NAME TOKEN' line", file);
  return out;
}

Status ParseHostPort(std::string_view text, bool allow_zero, std::string* host, uint16_t* port) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) {
    return InvalidArgument("'{}': expected HOST:PORT", text);
  }
  std::string_view h = text.substr(0, colon), p = text.substr(colon + 1);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  unsigned long v = 0;
  for (char c : p) {
    if (!std::isdigit(static_cast<unsigned char>(c)) || v > 65535) {
      return InvalidArgument("'{}': port must be a number in [0, 65535]", text);
    }
    v = v * 10 + unsigned(c - '0');
  }
  if (v > 65535 || (v == 0 && !allow_zero)) {
    return InvalidArgument("'{}': port must be in [{}, 65535]", text, allow_zero ? 0 : 1);
  }
  *host = std::string(h);
  *port = uint16_t(v);
  return Status::Ok();
}

}  // namespace longctx::coordinator
