// The coordinator server in process, on a loopback port of its own, against real clients
// (ControlConnection) and a real WorkerLink whose job loop is played by the test thread: every
// bad input is refused with a clear error while the server keeps serving; limits; a client gone
// mid-upload; a worker group lost mid-job; a restart that keeps finished results and lets the
// worker group reconnect. Every wait has a deadline.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "longctx/coordinator/client.h"
#include "longctx/coordinator/server.h"
#include "longctx/coordinator/worker_link.h"
#include "longctx/test/status_matchers.h"

namespace longctx::coordinator {
namespace {

using namespace std::chrono_literals;
const std::string kToken = "test-token-0123456789";
const std::string kWorkerToken = "worker-token-9876543210";

Deadline In(std::chrono::milliseconds ms) { return Clock::now() + ms; }

// Polls `pred` every 20 ms until it holds or `within` passes.
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds within) {
  const auto until = Clock::now() + within;
  while (Clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_ = ::testing::TempDir() + "/longctx_coord_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(state_);
    options_.token = kToken;
    options_.worker_token = kWorkerToken;
    options_.state_dir = state_;
    options_.port = 0;
    options_.hello_timeout = 1000ms;
    options_.frame_timeout = 500ms;
    options_.max_document_bytes = 1 << 20;
    options_.max_jobs_per_client = 3;
  }
  void TearDown() override {
    StopServer();
    std::filesystem::remove_all(state_);
  }

  void StartServer() {
    io_ = std::make_unique<boost::asio::io_context>();
    Result<std::unique_ptr<Server>> s = Server::Start(*io_, options_);
    ASSERT_OK(s);
    server_ = std::move(*s);
    port_ = server_->port();
    options_.port = port_;  // a restart listens on the same port
    thread_ = std::thread([this] { io_->run(); });
  }
  void StopServer() {
    if (!server_) return;
    server_->Stop();
    thread_.join();
    server_.reset();
    io_.reset();
  }

  std::unique_ptr<ControlConnection> Client(const std::string& token = kToken) {
    Result<std::unique_ptr<ControlConnection>> c =
        ControlConnection::ConnectClient("127.0.0.1", port_, token, In(5s), "", client_tls_);
    EXPECT_OK(c);
    return c.ok() ? std::move(*c) : nullptr;
  }
  std::unique_ptr<ControlConnection> Raw() {
    Result<std::unique_ptr<ControlConnection>> c = ControlConnection::Open("127.0.0.1", port_, In(5s));
    EXPECT_OK(c);
    return c.ok() ? std::move(*c) : nullptr;
  }
  control::StatusReply Status(uint64_t job = 0, const std::string& token = kToken) {
    auto c = Client(token);
    if (!c) return {};
    Result<control::StatusReply> r = QueryStatus(*c, job, In(5s));
    EXPECT_OK(r);
    return r.ok() ? *r : control::StatusReply();
  }
  // The next envelope must be a fatal Error containing `what`, then the connection closes.
  void ExpectRefused(ControlConnection& c, const std::string& what) {
    Result<control::Envelope> e = c.Receive(In(5s));
    ASSERT_OK(e);
    ASSERT_TRUE(e->has_error()) << e->DebugString();
    EXPECT_TRUE(e->error().fatal());
    EXPECT_NE(e->error().message().find(what), std::string::npos) << e->error().message();
    Result<control::Envelope> after = c.Receive(In(5s));
    EXPECT_EQ(after.status().code(), StatusCode::kUnavailable) << after.status().message();
  }
  void ExpectStillServing() {
    control::StatusReply s = Status();
    EXPECT_GE(s.clients(), 1u);
  }
  std::unique_ptr<WorkerLink> Link(const std::string& name, const std::string& token = kWorkerToken) {
    WorkerLinkOptions o;
    o.host = "127.0.0.1";
    o.port = port_;
    o.token = token;
    o.tls = link_tls_;
    o.name = name;
    o.model = "test";
    o.ranks = 2;
    auto link = std::make_unique<WorkerLink>(o);
    link->Start();
    return link;
  }

  metrics::Registry registry_;  // outlives the server (options_.metrics may point here)
  std::string state_;
  ServerOptions options_;
  TlsConfig client_tls_, link_tls_;  // what Client() and Link() use (empty: plaintext)
  std::unique_ptr<boost::asio::io_context> io_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  uint16_t port_ = 0;
};

TEST_F(ServerTest, WrongTokenRefusedAndServerKeepsServing) {
  StartServer();
  Result<std::unique_ptr<ControlConnection>> c =
      ControlConnection::ConnectClient("127.0.0.1", port_, "wrong", In(5s));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("authentication failed: wrong token"), std::string::npos)
      << c.status().message();
  ExpectStillServing();
}

TEST_F(ServerTest, MessageBeforeHelloRefused) {
  StartServer();
  auto c = Raw();
  control::Envelope q;
  q.mutable_query()->set_doc_id("d");
  q.mutable_query()->set_generate(1);
  ASSERT_OK(c->Send(q, In(5s)));
  ExpectRefused(*c, "the first message must be a Hello");
  ExpectStillServing();
}

TEST_F(ServerTest, OversizeFrameRefused) {
  StartServer();
  auto c = Raw();
  const char header[4] = {0x04, 0, 0, 0};  // 64 MiB announced
  ASSERT_OK(c->SendRaw(std::string_view(header, 4), In(5s)));
  ExpectRefused(*c, "exceeds the limit");
  ExpectStillServing();
}

TEST_F(ServerTest, GarbageBytesRefused) {
  StartServer();
  {
    auto c = Raw();  // an HTTP request: "GET " read as a length is ~1.2 GB
    ASSERT_OK(c->SendRaw("GET / HTTP/1.1\r\nHost: x\r\n\r\n", In(5s)));
    ExpectRefused(*c, "exceeds the limit");
  }
  {
    auto c = Raw();  // a well-framed payload that is no envelope
    Result<std::string> f = EncodeFrame("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 100);
    ASSERT_OK(f);
    ASSERT_OK(c->SendRaw(*f, In(5s)));
    ExpectRefused(*c, "malformed message");
  }
  ExpectStillServing();
}

TEST_F(ServerTest, UnknownVersionRefused) {
  StartServer();
  auto c = Raw();
  control::Envelope hello;
  hello.set_version(2);
  hello.mutable_hello()->set_protocol_version(2);
  hello.mutable_hello()->set_role(control::ROLE_CLIENT);
  hello.mutable_hello()->set_token(kToken);
  ASSERT_OK(c->Send(hello, In(5s)));
  ExpectRefused(*c, "unsupported protocol version 2");
  ExpectStillServing();
}

TEST_F(ServerTest, TruncatedFrameCutOffByPartialFrameTimeout) {
  StartServer();
  auto c = Raw();
  const char partial[10] = {0, 0, 0, 100, 1, 2, 3, 4, 5, 6};  // 100 announced, 6 sent
  const auto t0 = Clock::now();
  ASSERT_OK(c->SendRaw(std::string_view(partial, 10), In(5s)));
  ExpectRefused(*c, "partial-frame timeout");
  EXPECT_LT(Clock::now() - t0, 3s);
  ExpectStillServing();
}

TEST_F(ServerTest, TricklingClientCutOff) {
  StartServer();
  auto c = Raw();
  control::Envelope hello;
  hello.mutable_hello()->set_protocol_version(kProtocolVersion);
  hello.mutable_hello()->set_role(control::ROLE_CLIENT);
  hello.mutable_hello()->set_token(kToken);
  Result<std::string> f = EncodeEnvelope(hello, kDefaultMaxFrameBytes);
  ASSERT_OK(f);
  // One byte every 100 ms: a valid Hello that would take ~3 s; the frame timeout is 0.5 s.
  const auto t0 = Clock::now();
  bool cut = false;
  for (char ch : *f) {
    if (!c->SendRaw(std::string_view(&ch, 1), In(5s)).ok()) {
      cut = true;
      break;
    }
    std::this_thread::sleep_for(100ms);
    if (Clock::now() - t0 > 1500ms) break;
  }
  if (!cut) ExpectRefused(*c, "partial-frame timeout");
  EXPECT_LT(Clock::now() - t0, 3s);
  ExpectStillServing();
}

TEST_F(ServerTest, SilentConnectionCutOffByHelloTimeout) {
  StartServer();
  auto c = Raw();
  ExpectRefused(*c, "no Hello within");
}

TEST_F(ServerTest, DocumentLimitAndJobsInFlightLimit) {
  StartServer();
  auto c = Client();
  const std::string big(size_t(options_.max_document_bytes) + 1, 'x');
  JobRequest r;
  r.doc_id = "big";
  r.document = &big;
  Result<control::JobEvent> e = SubmitJob(*c, r, nullptr, In(10s));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("exceeds the limit"), std::string::npos)
      << e.status().message();
  // No worker group: jobs with documents stay queued; the fourth exceeds 3 in flight.
  const std::string small = "A small document.";
  for (int i = 0; i < 3; ++i) {
    control::Envelope env;
    env.set_request_id(c->NextRequestId());
    control::SubmitDocument* s = env.mutable_submit();
    s->set_doc_id("d" + std::to_string(i));
    s->set_total_bytes(small.size());
    s->set_data(small);
    s->set_last(true);
    ASSERT_OK(c->Send(env, In(5s)));
    Result<control::Envelope> q = c->Receive(In(5s));
    ASSERT_OK(q);
    ASSERT_TRUE(q->has_event()) << q->DebugString();
    EXPECT_EQ(q->event().kind(), control::JobEvent::QUEUED);
  }
  r.doc_id = "d3";
  r.document = &small;
  e = SubmitJob(*c, r, nullptr, In(10s));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("too many jobs in flight"), std::string::npos)
      << e.status().message();
  control::StatusReply s = Status();
  EXPECT_EQ(s.queued(), 3u);
}

TEST_F(ServerTest, QueryOnUnknownDocumentFailsClearly) {
  StartServer();
  auto c = Client();
  JobRequest r;
  r.doc_id = "nowhere";
  r.question = "why?";
  Result<control::JobEvent> e = SubmitJob(*c, r, nullptr, In(10s));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("not held by any worker group"), std::string::npos)
      << e.status().message();
}

TEST_F(ServerTest, ClientGoneMidUploadIsDiscarded) {
  StartServer();
  {
    auto c = Client();
    control::Envelope env;
    env.set_request_id(c->NextRequestId());
    control::SubmitDocument* s = env.mutable_submit();
    s->set_doc_id("partial");
    s->set_total_bytes(1000);
    s->set_data(std::string(100, 'a'));
    ASSERT_OK(c->Send(env, In(5s)));
    ASSERT_TRUE(WaitFor([&] { return Status().uploads_in_progress() == 1; }, 5s));
  }  // the client disconnects with 900 bytes missing
  ASSERT_TRUE(WaitFor([&] { return Status().uploads_in_progress() == 0; }, 5s));
  control::StatusReply s = Status();
  EXPECT_EQ(s.jobs_size(), 0);
  EXPECT_EQ(s.queued(), 0u);
}

// A worker group's loop, played by the test: takes one job from the link and answers it with
// `tokens` generated tokens (the bytes of "abc..."), reporting progress first.
struct GroupAnswer {
  WorkerJob job;
  bool ok = false;
};
GroupAnswer ServeOne(WorkerLink& link, int tokens, std::vector<std::string> held) {
  GroupAnswer a;
  std::optional<WorkerJob> j = link.NextJob(10s);
  if (!j) return a;
  a.job = *j;
  control::JobEvent p;
  p.set_kind(control::JobEvent::PROGRESS);
  p.set_layer(1);
  p.set_layers(1);
  link.Send(*j, p);
  control::JobEvent done;
  done.set_kind(control::JobEvent::RESULT);
  control::JobResult* r = done.mutable_result();
  r->set_document_tokens(int64_t(j->document.size()));
  r->set_prefilled(!j->document.empty());
  for (int i = 0; i < tokens; ++i) {
    control::JobEvent t;
    t.set_kind(control::JobEvent::TOKEN);
    t.set_token('a' + i);
    t.set_index(i);
    link.Send(*j, t);
    r->add_appended_tokens('a' + i);
    r->mutable_generated()->push_back(char('a' + i));
  }
  for (const auto& d : held) r->add_held_documents(d);
  link.Send(*j, done);
  a.ok = true;
  return a;
}

TEST_F(ServerTest, JobThroughWorkerLinkStreamsEventsAndRoutesQueries) {
  StartServer();
  auto link = Link("group-a");
  ASSERT_TRUE(WaitFor([&] { return Status().workers_size() == 1; }, 10s));
  std::string doc(600 * 1024, 'z');  // three chunks each way
  doc[12345] = 'Q';
  GroupAnswer served;
  std::thread group([&] { served = ServeOne(*link, 3, {"default/doc-a"}); });
  auto c = Client();
  JobRequest r;
  r.doc_id = "doc-a";
  r.document = &doc;
  r.question = "q";
  r.generate = 3;
  std::vector<control::JobEvent::Kind> kinds;
  Result<control::JobEvent> e =
      SubmitJob(*c, r, [&](const control::JobEvent& ev) { kinds.push_back(ev.kind()); }, In(20s));
  group.join();
  ASSERT_TRUE(served.ok);
  EXPECT_EQ(served.job.document, doc);  // the document arrived whole at the group
  EXPECT_EQ(served.job.assignment.question(), "q");
  ASSERT_OK(e);
  EXPECT_EQ(e->result().generated(), "abc");
  EXPECT_EQ(e->result().document_tokens(), int64_t(doc.size()));
  const std::vector<control::JobEvent::Kind> want = {
      control::JobEvent::QUEUED, control::JobEvent::STARTED, control::JobEvent::PROGRESS,
      control::JobEvent::TOKEN,  control::JobEvent::TOKEN,   control::JobEvent::TOKEN,
      control::JobEvent::RESULT};
  EXPECT_EQ(kinds, want);

  // A question on the held document goes to the group without the document.
  group = std::thread([&] { served = ServeOne(*link, 2, {"default/doc-a"}); });
  JobRequest q;
  q.doc_id = "doc-a";
  q.generate = 2;
  e = SubmitJob(*c, q, nullptr, In(20s));
  group.join();
  ASSERT_OK(e);
  EXPECT_TRUE(served.job.document.empty());
  EXPECT_EQ(served.job.assignment.doc_id(), "default/doc-a");
  EXPECT_FALSE(e->result().prefilled());
  EXPECT_EQ(e->result().generated(), "ab");
}

TEST_F(ServerTest, WorkerGroupLostMidJobFailsTheJobQuickly) {
  options_.max_attempts = 1;  // no second dispatch: the loss fails the job
  StartServer();
  auto link = Link("doomed");
  ASSERT_TRUE(WaitFor([&] { return Status().workers_size() == 1; }, 10s));
  auto c = Client();
  const std::string doc = "Some text. More text.";
  std::thread killer([&] {
    std::optional<WorkerJob> j = link->NextJob(10s);  // the job arrives; the group then dies
    link.reset();
  });
  JobRequest r;
  r.doc_id = "doc-x";
  r.document = &doc;
  r.generate = 4;
  const auto t0 = Clock::now();
  Result<control::JobEvent> e = SubmitJob(*c, r, nullptr, In(30s));
  killer.join();
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("was lost mid-job"), std::string::npos)
      << e.status().message();
  EXPECT_NE(e.status().message().find("attempt 1 of 1"), std::string::npos)
      << e.status().message();
  EXPECT_LT(Clock::now() - t0, 10s);
  control::StatusReply s = Status();
  EXPECT_EQ(s.workers_size(), 0);
  ASSERT_GE(s.jobs_size(), 1);
  EXPECT_EQ(s.jobs(0).state(), control::JOB_FAILED);
}

TEST_F(ServerTest, IdleClientCutOff) {
  options_.idle_timeout = 400ms;
  StartServer();
  auto c = Client();
  ExpectRefused(*c, "idle for more than");
}

// A worker group that stops talking without closing its connection (a hung node, a stopped
// process) is lost after the worker timeout, and its job fails.
TEST_F(ServerTest, SilentWorkerGroupIsLostAndItsJobFails) {
  options_.worker_timeout = 800ms;
  options_.max_attempts = 1;
  StartServer();
  auto w = Raw();
  control::Envelope hello;
  hello.mutable_hello()->set_protocol_version(kProtocolVersion);
  hello.mutable_hello()->set_role(control::ROLE_WORKER);
  hello.mutable_hello()->set_token(kWorkerToken);
  hello.mutable_hello()->set_ranks(1);
  ASSERT_OK(w->Send(hello, In(5s)));
  Result<control::Envelope> reply = w->Receive(In(5s));
  ASSERT_TRUE(reply.ok() && reply->has_hello_reply()) << reply.status().message();
  auto c = Client();
  const std::string doc = "A document for a group that hangs.";
  JobRequest r;
  r.doc_id = "hung";
  r.document = &doc;
  r.generate = 1;
  const auto t0 = Clock::now();
  Result<control::JobEvent> e = SubmitJob(*c, r, nullptr, In(20s));  // the "worker" never answers
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("silent for more than"), std::string::npos)
      << e.status().message();
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_EQ(Status().workers_size(), 0);
}

TEST_F(ServerTest, RestartKeepsResultsAndTheGroupReconnects) {
  StartServer();
  auto link = Link("survivor");
  ASSERT_TRUE(WaitFor([&] { return Status().workers_size() == 1; }, 10s));
  const std::string doc = "Held across restarts.";
  GroupAnswer served;
  std::thread group([&] { served = ServeOne(*link, 4, {"default/kept"}); });
  uint64_t job_id = 0;
  {
    auto c = Client();
    JobRequest r;
    r.doc_id = "kept";
    r.document = &doc;
    r.generate = 4;
    Result<control::JobEvent> e = SubmitJob(*c, r, nullptr, In(20s));
    group.join();
    ASSERT_OK(e);
    job_id = e->job_id();
  }
  link->SetDocuments({"default/kept"});
  // A job running when the coordinator stops is queued again by the restart, with its document.
  {
    auto c = Client();
    std::string other = "queued then stopped";
    control::Envelope env;
    env.set_request_id(c->NextRequestId());
    auto* s = env.mutable_submit();
    s->set_doc_id("other");
    s->set_total_bytes(other.size());
    s->set_data(other);
    s->set_last(true);
    // The group is idle, so this one is dispatched; it is never answered.
    ASSERT_OK(c->Send(env, In(5s)));
    ASSERT_TRUE(WaitFor([&] { return Status().running() == 1; }, 5s));
  }
  StopServer();
  (void)link->NextJob(100ms);  // the unanswered job: dropped with its connection
  StartServer();
  ASSERT_EQ(port_, options_.port);
  control::StatusReply s = Status(job_id);
  ASSERT_EQ(s.job().job_id(), job_id);
  EXPECT_EQ(s.job().state(), control::JOB_DONE);
  EXPECT_EQ(s.job().result().generated(), "abcd");
  uint64_t other_id = 0;
  for (const auto& j : s.jobs()) {
    if (j.doc_id() == "other") {
      other_id = j.job_id();
      EXPECT_TRUE(j.state() == control::JOB_QUEUED || j.state() == control::JOB_RUNNING)
          << j.ShortDebugString();
      ASSERT_EQ(j.requeue_reasons_size(), 1);
      EXPECT_NE(j.requeue_reasons(0).find("restarted"), std::string::npos);
    }
  }
  ASSERT_NE(other_id, 0u);
  // The worker group reconnects (backoff <= 2 s), reports what it holds, and gets the requeued
  // job again with its whole document (kept on disk across the restart).
  ASSERT_TRUE(WaitFor([&] { return Status().workers_size() == 1; }, 10s));
  group = std::thread([&] { served = ServeOne(*link, 2, {"default/kept", "default/other"}); });
  ASSERT_TRUE(WaitFor([&] { return Status(other_id).job().state() == control::JOB_DONE; }, 15s));
  group.join();
  EXPECT_EQ(served.job.assignment.job_id(), other_id);
  EXPECT_EQ(served.job.document, "queued then stopped");
  EXPECT_EQ(Status(other_id).job().attempts(), 2);
  s = Status();
  ASSERT_EQ(s.workers(0).documents_size(), 2);
  EXPECT_EQ(s.workers(0).documents(0), "kept");
  group = std::thread([&] { served = ServeOne(*link, 1, {"default/kept"}); });
  auto c = Client();
  JobRequest q;
  q.doc_id = "kept";
  q.generate = 1;
  Result<control::JobEvent> e = SubmitJob(*c, q, nullptr, In(20s));
  group.join();
  ASSERT_OK(e);
  EXPECT_EQ(served.job.assignment.doc_id(), "default/kept");
  EXPECT_TRUE(served.job.document.empty());
}

// ---- Issue 17: identities, bounds, retention, connection limits, requeue -------------------

// Sends a Hello with `role` and `token` on a raw connection; returns the reply envelope.
Result<control::Envelope> Hello(ControlConnection& c, control::Role role, const std::string& token) {
  control::Envelope hello;
  hello.mutable_hello()->set_protocol_version(kProtocolVersion);
  hello.mutable_hello()->set_role(role);
  hello.mutable_hello()->set_token(token);
  hello.mutable_hello()->set_ranks(1);
  RETURN_IF_ERROR(c.Send(hello, In(5s)));
  return c.Receive(In(5s));
}

// The attack found on main: a client token registered a worker group, which then received another
// client's document and question and returned a forged answer. A client token is no worker
// credential, and the worker token is no client identity.
TEST_F(ServerTest, ClientTokenCannotRegisterAWorkerGroup) {
  options_.auth_free_failures = 10;  // three refusals below; no lock-out of the honest client
  StartServer();
  {
    auto w = Raw();
    Result<control::Envelope> reply = Hello(*w, control::ROLE_WORKER, kToken);
    ASSERT_OK(reply);
    ASSERT_TRUE(reply->has_error()) << reply->DebugString();
    EXPECT_TRUE(reply->error().fatal());
    EXPECT_NE(reply->error().message().find("authentication failed"), std::string::npos);
  }
  {
    auto c = Raw();
    Result<control::Envelope> reply = Hello(*c, control::ROLE_CLIENT, kWorkerToken);
    ASSERT_OK(reply);
    ASSERT_TRUE(reply->has_error()) << reply->DebugString();
    EXPECT_NE(reply->error().message().find("authentication failed"), std::string::npos);
  }
  // A real WorkerLink holding a client token is refused for good (it stops retrying).
  auto link = Link("impostor", kToken);
  ASSERT_TRUE(WaitFor([&] { return !link->fatal().ok(); }, 10s));
  EXPECT_NE(link->fatal().message().find("authentication failed"), std::string::npos)
      << link->fatal().message();
  EXPECT_EQ(Status().workers_size(), 0);
  // A submitted job therefore stays queued: no impostor receives it.
  auto c = Client();
  const std::string doc = "secret contract text";
  control::Envelope env;
  env.set_request_id(c->NextRequestId());
  env.mutable_submit()->set_doc_id("contract");
  env.mutable_submit()->set_total_bytes(doc.size());
  env.mutable_submit()->set_data(doc);
  env.mutable_submit()->set_last(true);
  ASSERT_OK(c->Send(env, In(5s)));
  EXPECT_FALSE(link->NextJob(500ms).has_value());
  EXPECT_EQ(Status().queued(), 1u);
}

TEST_F(ServerTest, StartRefusesWeakOrSharedTokens) {
  io_ = std::make_unique<boost::asio::io_context>();
  ServerOptions o = options_;
  o.token = "short";
  Result<std::unique_ptr<Server>> s = Server::Start(*io_, o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("at least 16"), std::string::npos) << s.status().message();
  o = options_;
  o.worker_token = "";
  s = Server::Start(*io_, o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("worker token"), std::string::npos) << s.status().message();
  o = options_;
  o.worker_token = o.token;
  s = Server::Start(*io_, o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("equals a client token"), std::string::npos)
      << s.status().message();
  o = options_;
  o.client_tokens = {{"alice", "alice-token-0123456789"}, {"bob", "alice-token-0123456789"}};
  s = Server::Start(*io_, o);
  ASSERT_FALSE(s.ok());
  io_.reset();
}

// Client B cannot list, fetch or question client A's jobs and documents.
TEST_F(ServerTest, ClientsSeeOnlyTheirOwnJobsAndDocuments) {
  const std::string alice = "alice-token-0123456789", bob = "bob-token-01234567890";
  options_.token.clear();
  options_.client_tokens = {{"alice", alice}, {"bob", bob}};
  StartServer();
  auto link = Link("group");
  ASSERT_TRUE(WaitFor([&] { return Status(0, alice).workers_size() == 1; }, 10s));
  GroupAnswer served;
  std::thread group([&] { served = ServeOne(*link, 3, {"alice/private"}); });
  auto a = Client(alice);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->client(), "alice");
  const std::string doc = "Alice's private document.";
  JobRequest r;
  r.doc_id = "private";
  r.document = &doc;
  r.question = "what is the secret?";
  r.generate = 3;
  Result<control::JobEvent> e = SubmitJob(*a, r, nullptr, In(20s));
  group.join();
  ASSERT_OK(e);
  const uint64_t job = e->job_id();
  EXPECT_EQ(served.job.assignment.doc_id(), "alice/private");

  control::StatusReply mine = Status(job, alice);
  EXPECT_EQ(mine.client(), "alice");
  ASSERT_EQ(mine.jobs_size(), 1);
  EXPECT_EQ(mine.job().job_id(), job);
  EXPECT_EQ(mine.job().result().generated(), "abc");
  ASSERT_EQ(mine.workers_size(), 1);
  ASSERT_EQ(mine.workers(0).documents_size(), 1);
  EXPECT_EQ(mine.workers(0).documents(0), "private");

  control::StatusReply theirs = Status(job, bob);
  EXPECT_EQ(theirs.client(), "bob");
  EXPECT_EQ(theirs.jobs_size(), 0);
  EXPECT_EQ(theirs.job().job_id(), 0u);  // like a job that does not exist
  ASSERT_EQ(theirs.workers_size(), 1);
  EXPECT_EQ(theirs.workers(0).documents_size(), 0);
  // Bob naming Alice's document id reaches his own (empty) namespace, not hers.
  auto b = Client(bob);
  JobRequest q;
  q.doc_id = "private";
  q.question = "what is the secret?";
  q.generate = 3;
  e = SubmitJob(*b, q, nullptr, In(10s));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("not held by any worker group"), std::string::npos)
      << e.status().message();
  EXPECT_FALSE(link->NextJob(300ms).has_value());
}

// Queries on an unknown document fail at once: a cheap way to fill the job table.
void FailQueries(ControlConnection& c, int n, size_t question_bytes) {
  for (int i = 0; i < n; ++i) {
    JobRequest q;
    q.doc_id = "nowhere";
    q.question = std::string(question_bytes, 'q');
    Result<control::JobEvent> e = SubmitJob(c, q, nullptr, In(10s));
    ASSERT_FALSE(e.ok());
    ASSERT_NE(e.status().message().find("not held"), std::string::npos) << e.status().message();
  }
}

// On main, five 1 MiB questions made every status reply exceed the 4 MiB frame limit, for good.
TEST_F(ServerTest, StatusStaysUnderTheFrameLimitAndPages) {
  StartServer();
  auto c = Client();
  FailQueries(*c, 8, size_t(1) << 20);  // 8 MiB of questions in the table
  FailQueries(*c, 150, 10);
  control::StatusReply s = Status();
  EXPECT_LT(s.ByteSizeLong(), kDefaultMaxFrameBytes);
  EXPECT_EQ(s.jobs_size(), 100);
  ASSERT_NE(s.next_before_job_id(), 0u);
  // Paging through every job, newest first, each exactly once.
  std::vector<uint64_t> seen;
  control::StatusRequest page;
  page.set_limit(37);
  while (true) {
    Result<control::StatusReply> r = QueryStatus(*c, page, In(5s));
    ASSERT_OK(r);
    EXPECT_LE(r->jobs_size(), 37);
    for (const auto& j : r->jobs()) {
      EXPECT_TRUE(j.question().empty());
      seen.push_back(j.job_id());
    }
    if (r->next_before_job_id() == 0) break;
    page.set_before_job_id(r->next_before_job_id());
  }
  ASSERT_EQ(seen.size(), 158u);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_LT(seen[i], seen[i - 1]);
  // One job's record comes without the question's text (its size is given).
  control::StatusReply one = Status(seen.back());
  EXPECT_EQ(one.job().job_id(), seen.back());
  EXPECT_EQ(one.job().question_bytes(), size_t(1) << 20);
  EXPECT_TRUE(one.job().question().empty());
}

// Job records (job-<id>.pb) or kept documents (job-<id>.doc) in a state directory.
size_t FilesIn(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    n += e.is_regular_file() && e.path().filename().string().rfind("job-", 0) == 0;
  }
  return n;
}

TEST_F(ServerTest, FinishedJobsExpireByCountAndByAge) {
  options_.retain_jobs = 2;
  options_.retain = 1500ms;
  StartServer();
  auto c = Client();
  FailQueries(*c, 5, 100);
  control::StatusReply s = Status();
  ASSERT_EQ(s.jobs_size(), 2);  // the newest two of five
  EXPECT_EQ(s.jobs(0).job_id(), 5u);
  EXPECT_EQ(s.jobs(1).job_id(), 4u);
  EXPECT_EQ(FilesIn(state_ + "/jobs"), 2u);
  EXPECT_EQ(Status(1).job().job_id(), 0u);
  ASSERT_TRUE(WaitFor([&] { return Status().jobs_size() == 0; }, 5s));
  EXPECT_EQ(FilesIn(state_ + "/jobs"), 0u);
  // Expired on disk too: a restart does not bring them back, and job ids are not reused.
  StopServer();
  StartServer();
  EXPECT_EQ(Status().jobs_size(), 0);
  FailQueries(*Client(), 1, 10);
  s = Status();
  ASSERT_EQ(s.jobs_size(), 1);
  EXPECT_EQ(s.jobs(0).job_id(), 6u);
}

// Before authenticating, a peer may send one small Hello's worth of bytes: on main it could
// make the coordinator buffer a 4 MiB frame per connection.
TEST_F(ServerTest, PreAuthenticationByteBudget) {
  StartServer();
  auto c = Raw();
  const char header[4] = {0, 0, char(0x80), 0};  // 32 KiB announced before any Hello
  ASSERT_OK(c->SendRaw(std::string_view(header, 4), In(5s)));
  ExpectRefused(*c, "exceeds the limit");
  // After authentication the full frame limit applies (a 600 KiB document goes through).
  auto ok = Client();
  FailQueries(*ok, 1, 600 * 1024);
  ExpectStillServing();
}

// 127.0.0.2 plays the attacker (all of 127/8 is loopback); 127.0.0.1 the honest client.
TEST_F(ServerTest, PerAddressConnectionLimits) {
  options_.max_connections = 12;
  options_.max_connections_per_address = 6;
  options_.max_unauthenticated_per_address = 3;
  options_.hello_timeout = 5000ms;
  StartServer();
  std::vector<std::unique_ptr<ControlConnection>> idle;
  int refused = 0;
  for (int i = 0; i < 20; ++i) {
    Result<std::unique_ptr<ControlConnection>> r =
        ControlConnection::Open("127.0.0.1", port_, In(5s), "127.0.0.2");
    ASSERT_OK(r);
    idle.push_back(std::move(*r));
  }
  // The connections beyond 3 unauthenticated ones from 127.0.0.2 are told so and closed.
  for (auto& c : idle) {
    Result<control::Envelope> e = c->Receive(In(300ms));
    // "too many unauthenticated connections from 127.0.0.2", or the global limit in a burst.
    if (e.ok() && e->has_error() && e->error().message().find("too many") != std::string::npos) {
      ++refused;
    }
  }
  EXPECT_EQ(refused, 17);
  // Another address is served meanwhile (on main 12 idle sockets would lock everyone out).
  ExpectStillServing();
}

TEST_F(ServerTest, FailedAuthenticationsBackOff) {
  options_.auth_free_failures = 2;
  options_.auth_backoff_initial = 1500ms;
  StartServer();
  for (int i = 0; i < 3; ++i) {
    Result<std::unique_ptr<ControlConnection>> c = ControlConnection::ConnectClient(
        "127.0.0.1", port_, "wrong-token-0123456789", In(5s), "127.0.0.2");
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.status().message().find("authentication failed"), std::string::npos)
        << c.status().message();
  }
  // Locked out now, even with the right token; other addresses are not.
  Result<std::unique_ptr<ControlConnection>> c =
      ControlConnection::ConnectClient("127.0.0.1", port_, kToken, In(5s), "127.0.0.2");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("too many failed authentications"), std::string::npos)
      << c.status().message();
  ExpectStillServing();
  std::this_thread::sleep_for(1600ms);
  c = ControlConnection::ConnectClient("127.0.0.1", port_, kToken, In(5s), "127.0.0.2");
  EXPECT_OK(c);
}

// A client that asks and never reads is cut off once its queue passes the bound (64 MiB on main).
TEST_F(ServerTest, ClientThatDoesNotReadIsCutOff) {
  options_.max_client_queued_bytes = 256 * 1024;
  StartServer();
  auto c = Client();
  FailQueries(*c, 100, 10);
  control::Envelope req;
  req.mutable_status_request();
  Result<std::string> frame = EncodeEnvelope(req, kDefaultMaxFrameBytes);
  ASSERT_OK(frame);
  std::string burst;
  for (int i = 0; i < 2000; ++i) burst += *frame;  // ~2000 replies of ~10 KiB: ~20 MB
  ASSERT_OK(c->SendRaw(burst, In(10s)));
  int replies = 0;
  Result<control::Envelope> e = c->Receive(In(10s));
  while (e.ok()) {
    ++replies;
    e = c->Receive(In(10s));
  }
  EXPECT_EQ(e.status().code(), StatusCode::kUnavailable) << e.status().message();
  EXPECT_LT(replies, 2000);
  ExpectStillServing();
}

// Item 5: a worker group dies mid-job; the job runs again on a second group and completes there
// with the right answer; the client hears REQUEUED; status records the attempt and the reason.
TEST_F(ServerTest, JobOfALostGroupIsRequeuedOnAnotherGroup) {
  options_.metrics = &registry_;  // the job's transitions are counted (docs/metrics.md)
  StartServer();
  auto doomed = Link("doomed");
  ASSERT_TRUE(WaitFor([&] { return Status().workers_size() == 1; }, 10s));
  auto second = Link("second");
  ASSERT_TRUE(WaitFor([&] { return Status().workers_size() == 2; }, 10s));
  std::string doc(300 * 1024, 'd');  // two chunks
  doc[777] = 'X';
  std::thread killer([&] {
    std::optional<WorkerJob> j = doomed->NextJob(10s);  // g1 is first in line; it then dies
    EXPECT_TRUE(j.has_value());
    doomed.reset();
  });
  GroupAnswer served;
  std::thread group([&] { served = ServeOne(*second, 5, {"default/doc-r"}); });
  auto c = Client();
  JobRequest r;
  r.doc_id = "doc-r";
  r.document = &doc;
  r.question = "q?";
  r.generate = 5;
  std::vector<control::JobEvent::Kind> kinds;
  Result<control::JobEvent> e =
      SubmitJob(*c, r, [&](const control::JobEvent& ev) { kinds.push_back(ev.kind()); }, In(30s));
  killer.join();
  group.join();
  ASSERT_OK(e);
  ASSERT_TRUE(served.ok);
  EXPECT_EQ(served.job.document, doc);
  EXPECT_EQ(served.job.assignment.question(), "q?");
  EXPECT_EQ(e->result().generated(), "abcde");
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), control::JobEvent::REQUEUED), kinds.end());
  control::StatusReply s = Status(e->job_id());
  EXPECT_EQ(s.job().state(), control::JOB_DONE);
  EXPECT_EQ(s.job().attempts(), 2);
  ASSERT_EQ(s.job().requeue_reasons_size(), 1);
  EXPECT_NE(s.job().requeue_reasons(0).find("lost mid-job"), std::string::npos);
  EXPECT_EQ(s.job().group_id(), "g2");
  EXPECT_EQ(FilesIn(state_ + "/documents"), 0u);  // the kept document is gone once done
  // One submission, two dispatches, one requeue, done; one group left alive, nothing waiting.
  const std::string text = registry_.Expose();
  for (const char* line :
       {"longctx_jobs_total{event=\"submitted\"} 1\n", "longctx_jobs_total{event=\"started\"} 2\n",
        "longctx_jobs_total{event=\"requeued\"} 1\n", "longctx_jobs_total{event=\"done\"} 1\n",
        "longctx_jobs_total{event=\"failed\"} 0\n", "longctx_worker_groups 1\n",
        "longctx_jobs_queued 0\n", "longctx_jobs_running 0\n",
        "longctx_job_phase_seconds_count{phase=\"queue_wait\"} 2\n",
        "longctx_job_phase_seconds_count{phase=\"run\"} 1\n",
        "longctx_job_phase_seconds_count{phase=\"total\"} 1\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << text;
  }
}

TEST_F(ServerTest, RequeueIsBoundedByMaxAttempts) {
  options_.max_attempts = 2;
  StartServer();
  auto c = Client();
  const std::string doc = "doomed twice";
  control::Envelope env;
  env.set_request_id(c->NextRequestId());
  env.mutable_submit()->set_doc_id("twice");
  env.mutable_submit()->set_total_bytes(doc.size());
  env.mutable_submit()->set_data(doc);
  env.mutable_submit()->set_last(true);
  ASSERT_OK(c->Send(env, In(5s)));
  for (int i = 0; i < 2; ++i) {
    auto link = Link("doomed");
    std::optional<WorkerJob> j = link->NextJob(10s);
    ASSERT_TRUE(j.has_value());
    EXPECT_EQ(j->document, doc);
  }  // the link dies with the job
  std::string error;
  for (int i = 0; i < 20 && error.empty(); ++i) {
    Result<control::Envelope> e = c->Receive(In(10s));
    ASSERT_OK(e);
    if (e->has_event() && e->event().kind() == control::JobEvent::FAILED) error = e->event().error();
  }
  EXPECT_NE(error.find("attempt 2 of 2"), std::string::npos) << error;
}

// A restart keeps queued jobs (with their documents) and runs them once a group connects.
TEST_F(ServerTest, RestartKeepsQueuedJobs) {
  StartServer();
  const std::string doc = "queued across a restart";
  {
    auto c = Client();
    control::Envelope env;
    env.set_request_id(c->NextRequestId());
    env.mutable_submit()->set_doc_id("waiting");
    env.mutable_submit()->set_total_bytes(doc.size());
    env.mutable_submit()->set_data(doc);
    env.mutable_submit()->set_question("still there?");
    env.mutable_submit()->set_generate(2);
    env.mutable_submit()->set_last(true);
    ASSERT_OK(c->Send(env, In(5s)));
    Result<control::Envelope> q = c->Receive(In(5s));
    ASSERT_TRUE(q.ok() && q->has_event()) << q.status().message();
  }
  StopServer();
  {
    std::ofstream stray(state_ + "/documents/job-99.doc");  // no job of that id: removed at start
    stray << "stale";
  }
  EXPECT_EQ(FilesIn(state_ + "/documents"), 2u);
  StartServer();
  EXPECT_EQ(FilesIn(state_ + "/documents"), 1u);
  control::StatusReply s = Status();
  ASSERT_EQ(s.jobs_size(), 1);
  EXPECT_EQ(s.jobs(0).state(), control::JOB_QUEUED);
  EXPECT_EQ(s.queued(), 1u);
  const uint64_t id = s.jobs(0).job_id();
  auto link = Link("late");
  GroupAnswer served = ServeOne(*link, 2, {"default/waiting"});
  ASSERT_TRUE(served.ok);
  EXPECT_EQ(served.job.document, doc);
  EXPECT_EQ(served.job.assignment.question(), "still there?");
  ASSERT_TRUE(WaitFor([&] { return Status(id).job().state() == control::JOB_DONE; }, 10s));
  EXPECT_EQ(Status(id).job().result().generated(), "ab");
  EXPECT_EQ(FilesIn(state_ + "/documents"), 0u);
}

// ---- Item 4: TLS (Boost.Asio SSL over OpenSSL), with a CA made here by the openssl CLI --------

// A CA, the coordinator's certificate for 127.0.0.1, a worker group's certificate, and a rogue
// CA with a worker certificate of its own, all made by the openssl command-line tool.
class TestPki {
 public:
  explicit TestPki(const std::string& dir) : dir_(dir) {
    std::filesystem::create_directories(dir);
    {
      std::ofstream ext(dir + "/server.ext");
      ext << "subjectAltName=IP:127.0.0.1\n";
    }
    ok_ = Ca("ca") && Ca("rogue-ca") && Leaf("server", "ca", "server.ext") &&
          Leaf("worker", "ca", "") && Leaf("rogue-worker", "rogue-ca", "");
  }
  bool ok() const { return ok_; }
  std::string File(const std::string& name) const { return dir_ + "/" + name; }

 private:
  bool Run(const std::string& cmd) {
    return std::system((cmd + " >>" + dir_ + "/openssl.log 2>&1").c_str()) == 0;
  }
  bool Ca(const std::string& name) {
    return Run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " +
               File(name + ".key") + " -out " + File(name + ".pem") + " -days 2 -subj /CN=" + name);
  }
  bool Leaf(const std::string& name, const std::string& ca, const std::string& ext) {
    return Run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " +
               File(name + ".key") + " -out " + File(name + ".csr") + " -subj /CN=" + name) &&
           Run("openssl x509 -req -in " + File(name + ".csr") + " -CA " + File(ca + ".pem") +
               " -CAkey " + File(ca + ".key") + " -CAcreateserial -days 2 -out " +
               File(name + ".pem") + (ext.empty() ? "" : " -extfile " + File(ext)));
  }
  std::string dir_;
  bool ok_ = false;
};

TEST_F(ServerTest, TlsWithMutualTlsForWorkerGroups) {
  TestPki pki(state_ + "-pki");
  ASSERT_TRUE(pki.ok()) << "openssl failed; see " << pki.File("openssl.log");
  options_.tls = {pki.File("server.pem"), pki.File("server.key"), pki.File("ca.pem")};
  StartServer();
  client_tls_.ca_file = pki.File("ca.pem");
  link_tls_ = {pki.File("worker.pem"), pki.File("worker.key"), pki.File("ca.pem")};
  auto link = Link("tls-group");
  ASSERT_TRUE(WaitFor([&] { return Status().workers_size() == 1; }, 10s));
  GroupAnswer served;
  std::thread group([&] { served = ServeOne(*link, 3, {"default/tls-doc"}); });
  auto c = Client();
  ASSERT_TRUE(c);
  std::string doc(400 * 1024, 't');  // several chunks and TLS records each way
  doc[4242] = '!';
  JobRequest r;
  r.doc_id = "tls-doc";
  r.document = &doc;
  r.question = "over TLS?";
  r.generate = 3;
  Result<control::JobEvent> e = SubmitJob(*c, r, nullptr, In(20s));
  group.join();
  ASSERT_OK(e);
  EXPECT_EQ(served.job.document, doc);
  EXPECT_EQ(e->result().generated(), "abc");

  // A plaintext client is not understood.
  Result<std::unique_ptr<ControlConnection>> plain =
      ControlConnection::ConnectClient("127.0.0.1", port_, kToken, In(5s));
  EXPECT_FALSE(plain.ok());
  // A client trusting another CA refuses the coordinator's certificate.
  TlsConfig rogue_trust;
  rogue_trust.ca_file = pki.File("rogue-ca.pem");
  Result<std::unique_ptr<ControlConnection>> wrong_ca =
      ControlConnection::ConnectClient("127.0.0.1", port_, kToken, In(5s), "", rogue_trust);
  ASSERT_FALSE(wrong_ca.ok());
  EXPECT_NE(wrong_ca.status().message().find("TLS handshake"), std::string::npos)
      << wrong_ca.status().message();
  // The certificate must name the host connected to: it names 127.0.0.1, not "localhost".
  Result<std::unique_ptr<ControlConnection>> wrong_name =
      ControlConnection::ConnectClient("localhost", port_, kToken, In(5s), "", client_tls_);
  ASSERT_FALSE(wrong_name.ok());
  EXPECT_NE(wrong_name.status().message().find("TLS handshake"), std::string::npos)
      << wrong_name.status().message();

  // A worker group with the worker token but no certificate is refused at Hello, for good.
  link_tls_ = {"", "", pki.File("ca.pem")};
  auto no_cert = Link("no-cert");
  ASSERT_TRUE(WaitFor([&] { return !no_cert->fatal().ok(); }, 10s));
  EXPECT_NE(no_cert->fatal().message().find("must present a TLS certificate"), std::string::npos)
      << no_cert->fatal().message();
  // One whose certificate another CA signed fails the handshake and never registers.
  link_tls_ = {pki.File("rogue-worker.pem"), pki.File("rogue-worker.key"), pki.File("ca.pem")};
  auto rogue = Link("rogue");
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(Status().workers_size(), 1);
  std::filesystem::remove_all(state_ + "-pki");
}

TEST_F(ServerTest, PlaintextOnlyOnLoopbackUnlessInsecure) {
  io_ = std::make_unique<boost::asio::io_context>();
  ServerOptions o = options_;
  o.host = "0.0.0.0";
  o.port = 0;
  Result<std::unique_ptr<Server>> s = Server::Start(*io_, o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("needs TLS"), std::string::npos) << s.status().message();
  o.insecure_plaintext = true;
  s = Server::Start(*io_, o);
  EXPECT_OK(s);
  if (s.ok()) (*s)->Stop();
  io_->run();
  if (s.ok()) s->reset();  // the server (its timers) before its io_context (ASan: use after free)
  io_.reset();
  // TLS needs all three files.
  o = options_;
  o.tls.cert_file = "/nonexistent.pem";
  io_ = std::make_unique<boost::asio::io_context>();
  s = Server::Start(*io_, o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("--tls-ca"), std::string::npos) << s.status().message();
  io_.reset();
}

}  // namespace
}  // namespace longctx::coordinator
