// The coordinator server in process, on a loopback port of its own, against real clients
// (ControlConnection) and a real WorkerLink whose job loop is played by the test thread: every
// bad input is refused with a clear error while the server keeps serving; limits; a client gone
// mid-upload; a worker group lost mid-job; a restart that keeps finished results and lets the
// worker group reconnect. Every wait has a deadline.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "longctx/coordinator/client.h"
#include "longctx/coordinator/server.h"
#include "longctx/coordinator/worker_link.h"

namespace longctx::coordinator {
namespace {

using namespace std::chrono_literals;
const std::string kToken = "test-token-0123456789";

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
    ASSERT_TRUE(s.ok()) << s.status().message();
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

  std::unique_ptr<ControlConnection> Client() {
    Result<std::unique_ptr<ControlConnection>> c =
        ControlConnection::ConnectClient("127.0.0.1", port_, kToken, In(5s));
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? std::move(*c) : nullptr;
  }
  std::unique_ptr<ControlConnection> Raw() {
    Result<std::unique_ptr<ControlConnection>> c = ControlConnection::Open("127.0.0.1", port_, In(5s));
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? std::move(*c) : nullptr;
  }
  control::StatusReply Status(uint64_t job = 0) {
    auto c = Client();
    if (!c) return {};
    Result<control::StatusReply> r = QueryStatus(*c, job, In(5s));
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? *r : control::StatusReply();
  }
  // The next envelope must be a fatal Error containing `what`, then the connection closes.
  void ExpectRefused(ControlConnection& c, const std::string& what) {
    Result<control::Envelope> e = c.Receive(In(5s));
    ASSERT_TRUE(e.ok()) << e.status().message();
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
  std::unique_ptr<WorkerLink> Link(const std::string& name) {
    WorkerLinkOptions o;
    o.host = "127.0.0.1";
    o.port = port_;
    o.token = kToken;
    o.name = name;
    o.model = "test";
    o.ranks = 2;
    auto link = std::make_unique<WorkerLink>(o);
    link->Start();
    return link;
  }

  std::string state_;
  ServerOptions options_;
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
  ASSERT_TRUE(c->Send(q, In(5s)).ok());
  ExpectRefused(*c, "the first message must be a Hello");
  ExpectStillServing();
}

TEST_F(ServerTest, OversizeFrameRefused) {
  StartServer();
  auto c = Raw();
  const char header[4] = {0x04, 0, 0, 0};  // 64 MiB announced
  ASSERT_TRUE(c->SendRaw(std::string_view(header, 4), In(5s)).ok());
  ExpectRefused(*c, "exceeds the limit");
  ExpectStillServing();
}

TEST_F(ServerTest, GarbageBytesRefused) {
  StartServer();
  {
    auto c = Raw();  // an HTTP request: "GET " read as a length is ~1.2 GB
    ASSERT_TRUE(c->SendRaw("GET / HTTP/1.1\r\nHost: x\r\n\r\n", In(5s)).ok());
    ExpectRefused(*c, "exceeds the limit");
  }
  {
    auto c = Raw();  // a well-framed payload that is no envelope
    Result<std::string> f = EncodeFrame("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 100);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(c->SendRaw(*f, In(5s)).ok());
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
  ASSERT_TRUE(c->Send(hello, In(5s)).ok());
  ExpectRefused(*c, "unsupported protocol version 2");
  ExpectStillServing();
}

TEST_F(ServerTest, TruncatedFrameCutOffByPartialFrameTimeout) {
  StartServer();
  auto c = Raw();
  const char partial[10] = {0, 0, 0, 100, 1, 2, 3, 4, 5, 6};  // 100 announced, 6 sent
  const auto t0 = Clock::now();
  ASSERT_TRUE(c->SendRaw(std::string_view(partial, 10), In(5s)).ok());
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
  ASSERT_TRUE(f.ok());
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
    ASSERT_TRUE(c->Send(env, In(5s)).ok());
    Result<control::Envelope> q = c->Receive(In(5s));
    ASSERT_TRUE(q.ok());
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
    ASSERT_TRUE(c->Send(env, In(5s)).ok());
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
  std::thread group([&] { served = ServeOne(*link, 3, {"doc-a"}); });
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
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_EQ(e->result().generated(), "abc");
  EXPECT_EQ(e->result().document_tokens(), int64_t(doc.size()));
  const std::vector<control::JobEvent::Kind> want = {
      control::JobEvent::QUEUED, control::JobEvent::STARTED, control::JobEvent::PROGRESS,
      control::JobEvent::TOKEN,  control::JobEvent::TOKEN,   control::JobEvent::TOKEN,
      control::JobEvent::RESULT};
  EXPECT_EQ(kinds, want);

  // A question on the held document goes to the group without the document.
  group = std::thread([&] { served = ServeOne(*link, 2, {"doc-a"}); });
  JobRequest q;
  q.doc_id = "doc-a";
  q.generate = 2;
  e = SubmitJob(*c, q, nullptr, In(20s));
  group.join();
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_TRUE(served.job.document.empty());
  EXPECT_EQ(served.job.assignment.doc_id(), "doc-a");
  EXPECT_FALSE(e->result().prefilled());
  EXPECT_EQ(e->result().generated(), "ab");
}

TEST_F(ServerTest, WorkerGroupLostMidJobFailsTheJobQuickly) {
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
  StartServer();
  auto w = Raw();
  control::Envelope hello;
  hello.mutable_hello()->set_protocol_version(kProtocolVersion);
  hello.mutable_hello()->set_role(control::ROLE_WORKER);
  hello.mutable_hello()->set_token(kToken);
  hello.mutable_hello()->set_ranks(1);
  ASSERT_TRUE(w->Send(hello, In(5s)).ok());
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
  std::thread group([&] { served = ServeOne(*link, 4, {"kept"}); });
  uint64_t job_id = 0;
  {
    auto c = Client();
    JobRequest r;
    r.doc_id = "kept";
    r.document = &doc;
    r.generate = 4;
    Result<control::JobEvent> e = SubmitJob(*c, r, nullptr, In(20s));
    group.join();
    ASSERT_TRUE(e.ok()) << e.status().message();
    job_id = e->job_id();
  }
  link->SetDocuments({"kept"});
  // A job queued when the coordinator stops is failed by the restart, not lost silently.
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
    ASSERT_TRUE(c->Send(env, In(5s)).ok());
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
  bool saw_failed = false;
  for (const auto& j : s.jobs()) {
    if (j.doc_id() == "other") {
      saw_failed = j.state() == control::JOB_FAILED;
      EXPECT_NE(j.error().find("stopped"), std::string::npos) << j.error();
    }
  }
  EXPECT_TRUE(saw_failed);
  // The worker group reconnects (backoff <= 2 s) and reports what it holds.
  ASSERT_TRUE(WaitFor([&] { return Status().workers_size() == 1; }, 10s));
  s = Status();
  ASSERT_EQ(s.workers(0).documents_size(), 1);
  EXPECT_EQ(s.workers(0).documents(0), "kept");
  group = std::thread([&] { served = ServeOne(*link, 1, {"kept"}); });
  auto c = Client();
  JobRequest q;
  q.doc_id = "kept";
  q.generate = 1;
  Result<control::JobEvent> e = SubmitJob(*c, q, nullptr, In(20s));
  group.join();
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_EQ(served.job.assignment.doc_id(), "kept");
  EXPECT_TRUE(served.job.document.empty());
}

}  // namespace
}  // namespace longctx::coordinator
