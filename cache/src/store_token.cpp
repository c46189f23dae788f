// Store tokens (store.h): 256 random bits in a mode-0600 file of 64 hex digits, compared in
// constant time. OpenSSL supplies the randomness and the comparison (a well-kept Debian library
// rather than hand-written code).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <string>

#include "longctx/cache/store.h"
#include "longctx/core/file.h"
#include "store_wire.h"

namespace longctx::cache {

namespace {

constexpr char kHex[] = "0123456789abcdef";

std::string ToHex(const StoreToken& token) {
  std::string out;
  for (uint8_t b : token.bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Result<StoreToken> NewStoreToken() {
  StoreToken token;
  if (RAND_bytes(token.bytes.data(), static_cast<int>(token.bytes.size())) != 1) {
    return Internal("store token: OpenSSL RAND_bytes failed");
  }
  return token;
}

bool SameToken(const StoreToken& a, const StoreToken& b) {
  return CRYPTO_memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()) == 0;
}

namespace wire {
std::array<uint8_t, kProofBytes> HelloProof(const StoreToken& token,
                                            const uint8_t (&nonce)[kNonceBytes]) {
  static constexpr char kLabel[] = "longctx store hello v2";
  uint8_t message[sizeof(kLabel) - 1 + kNonceBytes];
  std::memcpy(message, kLabel, sizeof(kLabel) - 1);
  std::memcpy(message + sizeof(kLabel) - 1, nonce, kNonceBytes);
  std::array<uint8_t, kProofBytes> proof{};
  unsigned int n = 0;
  // HMAC fails only when OpenSSL cannot allocate; the zero proof is then refused by the pool.
  (void)HMAC(EVP_sha256(), token.bytes.data(), static_cast<int>(token.bytes.size()), message,
             sizeof(message), proof.data(), &n);
  return proof;
}
}  // namespace wire

Result<StoreToken> ReadStoreToken(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return ErrnoStatus(errno, fmt::format("token file '{}'", path));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, fmt::format("token file '{}'", path));
  if (!S_ISREG(st.st_mode)) {
    return FailedPrecondition("token file '{}' is not a regular file", path);
  }
  if ((st.st_mode & 077) != 0) {
    return FailedPrecondition("token file '{}' has mode {:o}: group or others may use it "
                              "(chmod 600 it)", path, st.st_mode & 0777);
  }
  char buf[256];
  ssize_t n = 0, got = 0;
  while ((n = ::read(fd.get(), buf + got, sizeof(buf) - got)) > 0) got += n;
  if (n < 0) return ErrnoStatus(errno, fmt::format("token file '{}'", path));
  std::string_view text(buf, static_cast<size_t>(got));
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  StoreToken token;
  if (text.size() != 2 * token.bytes.size()) {
    return InvalidArgument("token file '{}': expected 64 hex digits (a 256-bit token)", path);
  }
  for (size_t i = 0; i < token.bytes.size(); ++i) {
    const int hi = HexValue(text[2 * i]), lo = HexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return InvalidArgument("token file '{}': expected 64 hex digits (a 256-bit token)", path);
    }
    token.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return token;
}

Result<StoreToken> LoadOrCreateStoreToken(const std::string& path, bool* created) {
  *created = false;
  if (::access(path.c_str(), F_OK) == 0) return ReadStoreToken(path);
  ASSIGN_OR_RETURN(const StoreToken token, NewStoreToken());
  // 0600 from its first byte, and never replacing a token another store wrote meanwhile:
  // AtomicFile's CommitNoReplace link()s the temporary file into place (the loser of a race
  // reads the winner's token).
  ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path, AtomicWriteOptions{.mode = 0600}));
  const std::string text = ToHex(token) + "\n";
  Status st = file.Write(text.data(), text.size());
  if (!st.ok()) return st.WithContext("token file");
  Result<bool> linked = file.CommitNoReplace();
  if (!linked.ok()) return linked.status().WithContext("token file");
  if (!*linked) return ReadStoreToken(path);
  *created = true;
  return token;
}

}  // namespace longctx::cache
