// The control plane's wire format (coordinator/frame.h): frames split anywhere, length checked
// before allocation, malformed / unknown-version / empty envelopes refused, message validation,
// the constant-time compare, HOST:PORT parsing and the token's sources.
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "longctx/coordinator/frame.h"
#include "longctx/test/status_matchers.h"

namespace longctx::coordinator {
namespace {

control::Envelope QueryEnvelope(const std::string& doc, const std::string& question) {
  control::Envelope env;
  env.set_request_id(7);
  env.mutable_query()->set_doc_id(doc);
  env.mutable_query()->set_question(question);
  env.mutable_query()->set_generate(3);
  return env;
}

TEST(Frame, HeaderIsBigEndianLength) {
  Result<std::string> f = EncodeFrame(std::string(258, 'x'), 1000);
  ASSERT_OK(f);
  ASSERT_EQ(f->size(), 262u);
  EXPECT_EQ((*f)[0], 0);
  EXPECT_EQ((*f)[1], 0);
  EXPECT_EQ((*f)[2], 1);
  EXPECT_EQ((*f)[3], 2);
  EXPECT_EQ(EncodeFrame(std::string(1001, 'x'), 1000).status().code(),
            StatusCode::kResourceExhausted);
}

TEST(Frame, RoundTripWithEverySplit) {
  std::string stream;
  std::vector<control::Envelope> sent;
  for (int i = 0; i < 5; ++i) {
    sent.push_back(QueryEnvelope("doc-" + std::to_string(i), std::string(size_t(i * 37), 'q')));
    Result<std::string> f = EncodeEnvelope(sent.back(), kDefaultMaxFrameBytes);
    ASSERT_OK(f);
    stream += *f;
  }
  // Feed the stream in pieces of every size from 1 byte to all of it; the frames must come out
  // whole, in order, identical to what was sent.
  for (size_t piece = 1; piece <= stream.size(); piece += (piece < 16 ? 1 : 29)) {
    FrameDecoder d(kDefaultMaxFrameBytes);
    std::vector<control::Envelope> got;
    for (size_t off = 0; off < stream.size(); off += piece) {
      ASSERT_OK(d.Feed(stream.data() + off, std::min(piece, stream.size() - off)));
      while (d.has_frame()) {
        Result<control::Envelope> e = ParseEnvelope(d.Pop());
        ASSERT_OK(e);
        got.push_back(*e);
      }
    }
    EXPECT_FALSE(d.partial());
    ASSERT_EQ(got.size(), sent.size()) << "piece " << piece;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].version(), kProtocolVersion);
      EXPECT_EQ(got[i].query().doc_id(), sent[i].query().doc_id());
      EXPECT_EQ(got[i].query().question(), sent[i].query().question());
    }
  }
}

TEST(Frame, PartialUntilComplete) {
  Result<std::string> f = EncodeEnvelope(QueryEnvelope("d", "why"), kDefaultMaxFrameBytes);
  ASSERT_OK(f);
  FrameDecoder d(kDefaultMaxFrameBytes);
  EXPECT_FALSE(d.partial());
  ASSERT_OK(d.Feed(f->data(), 2));
  EXPECT_TRUE(d.partial());
  ASSERT_OK(d.Feed(f->data() + 2, f->size() - 3));
  EXPECT_TRUE(d.partial());
  EXPECT_FALSE(d.has_frame());
  ASSERT_OK(d.Feed(f->data() + f->size() - 1, 1));
  EXPECT_FALSE(d.partial());
  EXPECT_TRUE(d.has_frame());
}

TEST(Frame, OversizeRefusedFromTheHeaderAlone) {
  FrameDecoder d(1024);
  const char header[4] = {0x7f, char(0xff), char(0xff), char(0xff)};  // announces ~2 GiB
  Status st = d.Feed(header, 4);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("exceeds the limit of 1024 bytes"), std::string::npos);
  // Sticky: the stream cannot be resynchronised.
  EXPECT_FALSE(d.Feed("abcd", 4).ok());
  // 1024 itself is allowed.
  FrameDecoder ok(1024);
  const char h2[4] = {0, 0, 4, 0};
  EXPECT_OK(ok.Feed(h2, 4));
}

TEST(Frame, GarbageUnknownVersionAndEmptyRefused) {
  Result<control::Envelope> garbage = ParseEnvelope("\xff\xff\xff\xff\xff\xff garbage");
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find("malformed message"), std::string::npos);

  control::Envelope env = QueryEnvelope("d", "q");
  env.set_version(99);
  std::string bytes;
  ASSERT_TRUE(env.SerializeToString(&bytes));
  Result<control::Envelope> v = ParseEnvelope(bytes);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("unsupported protocol version 99"), std::string::npos);

  control::Envelope empty;
  empty.set_version(kProtocolVersion);
  ASSERT_TRUE(empty.SerializeToString(&bytes));
  EXPECT_FALSE(ParseEnvelope(bytes).ok());
  EXPECT_FALSE(ParseEnvelope("").ok());  // version 0
}

TEST(Frame, RandomBytesNeverCrashAndRarelyParse) {
  std::mt19937_64 rng(42);
  int parsed = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string s(size_t(rng() % 64), '\0');
    for (char& c : s) c = char(rng());
    FrameDecoder d(256);
    (void)d.Feed(s.data(), s.size());
    while (d.has_frame()) parsed += ParseEnvelope(d.Pop()).ok();
  }
  EXPECT_LT(parsed, 50);  // random bytes are almost never a versioned envelope with a body
}

TEST(Validate, DocIds) {
  EXPECT_OK(ValidateDocId("doc-1.a_b:c"));
  EXPECT_FALSE(ValidateDocId("").ok());
  EXPECT_FALSE(ValidateDocId("../etc/passwd").ok());
  EXPECT_FALSE(ValidateDocId("a b").ok());
  EXPECT_FALSE(ValidateDocId(std::string(129, 'a')).ok());
  EXPECT_OK(ValidateDocId(std::string(128, 'a')));
}

TEST(Validate, SubmitChunks) {
  control::SubmitDocument s;
  s.set_doc_id("d");
  s.set_total_bytes(10);
  s.set_offset(0);
  s.set_data("0123");
  EXPECT_OK(ValidateSubmitChunk(s, 100));
  EXPECT_EQ(ValidateSubmitChunk(s, 9).code(), StatusCode::kResourceExhausted);
  s.set_last(true);  // ends at 4 of 10
  EXPECT_FALSE(ValidateSubmitChunk(s, 100).ok());
  s.set_last(false);
  s.set_offset(8);  // [8, 12) outside 10
  EXPECT_FALSE(ValidateSubmitChunk(s, 100).ok());
  s.set_offset(0);
  s.set_total_bytes(0);
  s.set_data("");
  EXPECT_FALSE(ValidateSubmitChunk(s, 100).ok());  // empty document
  s.set_total_bytes(10);
  s.set_generate(-1);
  EXPECT_FALSE(ValidateSubmitChunk(s, 100).ok());
  // Offsets near 2^64 do not wrap around.
  control::SubmitDocument w;
  w.set_total_bytes(10);
  w.set_offset(~uint64_t(0) - 1);
  w.set_data("abc");
  EXPECT_FALSE(ValidateSubmitChunk(w, 100).ok());
}

TEST(Validate, QueriesAndEvents) {
  control::Query q;
  q.set_doc_id("d");
  EXPECT_FALSE(ValidateQuery(q).ok());  // neither question nor generate
  q.set_generate(4);
  EXPECT_OK(ValidateQuery(q));
  control::JobEvent e;
  e.set_kind(control::JobEvent::PROGRESS);
  e.set_job_id(1);
  e.set_layer(3);
  e.set_layers(2);
  EXPECT_FALSE(ValidateEvent(e).ok());
  e.set_layer(2);
  EXPECT_OK(ValidateEvent(e));
  e.set_job_id(0);
  EXPECT_FALSE(ValidateEvent(e).ok());
  e.set_job_id(1);
  e.set_kind(control::JobEvent::QUEUED);  // only the coordinator sends QUEUED
  EXPECT_FALSE(ValidateEvent(e).ok());
}

TEST(Security, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("secret", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secreT"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret2"));
  EXPECT_FALSE(ConstantTimeEquals("secret", ""));
  EXPECT_FALSE(ConstantTimeEquals(std::string_view("a\0b", 3), std::string_view("a\0c", 3)));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(Security, TokenSources) {
  const std::string path = ::testing::TempDir() + "/longctx_token_test";
  {
    std::ofstream out(path);
    out << "s3cret\n";
  }
  ::setenv("LONGCTX_TOKEN", "from-env", 1);
  Result<std::string> t = LoadToken(path);
  ASSERT_OK(t);
  EXPECT_EQ(*t, "s3cret");  // the file wins, trailing newline removed
  t = LoadToken("");
  ASSERT_OK(t);
  EXPECT_EQ(*t, "from-env");
  ::unsetenv("LONGCTX_TOKEN");
  EXPECT_FALSE(LoadToken("").ok());
  EXPECT_EQ(LoadToken(path + ".missing").status().code(), StatusCode::kNotFound);
  {
    std::ofstream out(path);
    out << "  \n";
  }
  EXPECT_FALSE(LoadToken(path).ok());
  std::remove(path.c_str());
}

TEST(Security, ClientNamesAndScopedDocumentIds) {
  EXPECT_OK(ValidateClientName("alice.b_c-1"));
  EXPECT_FALSE(ValidateClientName("").ok());
  EXPECT_FALSE(ValidateClientName("a/b").ok());
  EXPECT_FALSE(ValidateClientName("a b").ok());
  EXPECT_FALSE(ValidateClientName(std::string(65, 'a')).ok());
  EXPECT_EQ(ScopedDocId("alice", "book:1"), "alice/book:1");
  EXPECT_OK(ValidateScopedDocId("alice/book:1"));
  EXPECT_FALSE(ValidateScopedDocId("book").ok());         // no identity
  EXPECT_FALSE(ValidateScopedDocId("alice/").ok());       // no document
  EXPECT_FALSE(ValidateScopedDocId("a/b/c").ok());        // '/' is no document-id byte
  EXPECT_FALSE(ValidateScopedDocId("/book").ok());
  control::JobEvent e;
  e.set_job_id(1);
  e.set_kind(control::JobEvent::RESULT);
  e.mutable_result()->add_held_documents("alice/book");
  EXPECT_OK(ValidateEvent(e));
  e.mutable_result()->add_held_documents("book");  // a group may only report scoped ids
  EXPECT_FALSE(ValidateEvent(e).ok());
}

TEST(Security, ClientTokensFile) {
  const std::string path = ::testing::TempDir() + "/longctx_client_tokens_test";
  auto write = [&](const std::string& text) {
    std::ofstream out(path);
    out << text;
  };
  write("# name token\n\nalice alice-token-0123456789\n  bob   bob-token-0123456789xx  \n");
  Result<std::vector<ClientCredential>> c = LoadClientTokens(path);
  ASSERT_OK(c);
  ASSERT_EQ(c->size(), 2u);
  EXPECT_EQ((*c)[0].name, "alice");
  EXPECT_EQ((*c)[0].token, "alice-token-0123456789");
  EXPECT_EQ((*c)[1].name, "bob");
  EXPECT_EQ((*c)[1].token, "bob-token-0123456789xx");
  write("alice short\n");
  c = LoadClientTokens(path);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("at least 16"), std::string::npos) << c.status().message();
  EXPECT_EQ(c.status().message().find("short"), std::string::npos);  // the token is not echoed
  write("alice alice-token-0123456789\nalice other-token-0123456789\n");
  EXPECT_FALSE(LoadClientTokens(path).ok());  // a name twice
  write("alice alice-token-0123456789\nbob alice-token-0123456789\n");
  EXPECT_FALSE(LoadClientTokens(path).ok());  // a token twice
  write("alice\n");
  EXPECT_FALSE(LoadClientTokens(path).ok());  // no token
  write("a/b alice-token-0123456789\n");
  EXPECT_FALSE(LoadClientTokens(path).ok());  // bad name
  write("# only a comment\n");
  EXPECT_FALSE(LoadClientTokens(path).ok());
  EXPECT_EQ(LoadClientTokens(path + ".missing").status().code(), StatusCode::kNotFound);
  EXPECT_OK(CheckTokenStrength(std::string(16, 'x'), "t"));
  EXPECT_FALSE(CheckTokenStrength(std::string(15, 'x'), "t").ok());
  std::remove(path.c_str());
}

TEST(Address, HostPort) {
  std::string host;
  uint16_t port = 0;
  ASSERT_OK(ParseHostPort("127.0.0.1:7070", false, &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 7070);
  ASSERT_OK(ParseHostPort("[::1]:0", true, &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_FALSE(ParseHostPort("127.0.0.1:0", false, &host, &port).ok());
  EXPECT_FALSE(ParseHostPort("127.0.0.1", false, &host, &port).ok());
  EXPECT_FALSE(ParseHostPort("h:65536", false, &host, &port).ok());
  EXPECT_FALSE(ParseHostPort("h:12a", false, &host, &port).ok());
  EXPECT_FALSE(ParseHostPort(":80", false, &host, &port).ok());
}

}  // namespace
}  // namespace longctx::coordinator
