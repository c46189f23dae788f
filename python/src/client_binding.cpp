// longctx._core.Client: a client of the coordinator (coordinator/include/longctx/coordinator/
// client.h) — what `longctx submit` and `longctx status` do, with each job's events handed to a
// Python callable as they arrive (PROGRESS, TOKEN, ..., RESULT). One connection per Client,
// opened on first use and again after an error (a deadline closes the socket).
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "bindings.h"
#include "longctx/coordinator/client.h"
#include "longctx/coordinator/frame.h"

namespace py = pybind11;

namespace longctx::python {
namespace {

namespace co = longctx::coordinator;

const char* KindName(control::JobEvent::Kind k) {
  switch (k) {
    case control::JobEvent::QUEUED:
      return "queued";
    case control::JobEvent::STARTED:
      return "started";
    case control::JobEvent::PROGRESS:
      return "progress";
    case control::JobEvent::TOKEN:
      return "token";
    case control::JobEvent::RESULT:
      return "result";
    case control::JobEvent::FAILED:
      return "failed";
    default:
      return "unknown";
  }
}

const char* StateName(control::JobState s) {
  switch (s) {
    case control::JOB_QUEUED:
      return "queued";
    case control::JOB_RUNNING:
      return "running";
    case control::JOB_DONE:
      return "done";
    case control::JOB_FAILED:
      return "failed";
    default:
      return "unknown";
  }
}

py::dict ResultDict(const control::JobResult& r) {
  py::dict d;
  d["document_tokens"] = r.document_tokens();
  d["globals"] = std::vector<int64_t>(r.globals().begin(), r.globals().end());
  d["appended_tokens"] =
      std::vector<int32_t>(r.appended_tokens().begin(), r.appended_tokens().end());
  d["generated"] = py::bytes(r.generated());
  d["next_token"] = r.next_token();
  d["prefilled"] = r.prefilled();
  d["prefill_seconds"] = r.prefill_seconds();
  d["first_token_seconds"] = r.first_token_seconds();
  d["ms_per_token"] = r.ms_per_token();
  d["seconds"] = r.seconds();
  d["comm_bytes"] = r.comm_bytes();
  return d;
}

py::dict EventDict(const control::JobEvent& e) {
  py::dict d;
  d["kind"] = KindName(e.kind());
  d["job_id"] = e.job_id();
  d["layer"] = e.layer();
  d["layers"] = e.layers();
  d["token"] = e.token();
  d["index"] = e.index();
  d["group_id"] = e.group_id();
  d["error"] = e.error();
  d["result"] = e.kind() == control::JobEvent::RESULT ? py::object(ResultDict(e.result()))
                                                      : py::object(py::none());
  return d;
}

py::dict RecordDict(const control::JobRecord& j, bool with_result) {
  py::dict d;
  d["job_id"] = j.job_id();
  d["doc_id"] = j.doc_id();
  d["question"] = j.question();
  d["generate"] = j.generate();
  d["state"] = StateName(j.state());
  d["error"] = j.error();
  d["document_bytes"] = j.document_bytes();
  d["group_id"] = j.group_id();
  d["queue_seconds"] = j.queue_seconds();
  d["total_seconds"] = j.total_seconds();
  d["result"] = with_result && j.state() == control::JOB_DONE ? py::object(ResultDict(j.result()))
                                                              : py::object(py::none());
  return d;
}

class PyClient {
 public:
  // address "HOST:PORT"; the token itself, or (empty) the token file / LONGCTX_TOKEN.
  PyClient(const std::string& address, const std::optional<std::string>& token,
           const std::string& token_file) {
    ThrowIfError(co::ParseHostPort(address, false, &host_, &port_).WithContext("address"));
    if (token && !token->empty()) {
      token_ = *token;
    } else {
      token_ = ValueOrThrow(co::LoadToken(token_file));
    }
  }

  py::dict Submit(const std::string& doc_id, const std::optional<py::bytes>& document,
                  const py::bytes& question, int64_t generate, double timeout_s,
                  const std::optional<std::function<void(py::dict)>>& on_event) {
    co::JobRequest req;
    req.doc_id = doc_id;
    std::string doc;
    if (document) {
      doc = std::string(*document);
      if (doc.empty()) ThrowIfError(InvalidArgument("the document is empty"));
      req.document = &doc;
    }
    req.question = std::string(question);
    req.generate = generate;
    if (generate < 0) ThrowIfError(InvalidArgument("generate must be >= 0, got {}", generate));
    if (!document && req.question.empty() && generate == 0) {
      ThrowIfError(
          InvalidArgument("a question on a held document needs a question or generate > 0"));
    }
    ThrowIfError(co::ValidateDocId(req.doc_id).WithContext("doc_id"));
    const co::Deadline end = DeadlineIn(timeout_s);
    CallbackError cb_error;
    control::JobEvent done;
    Status st;
    mu_.CheckNotReentered("Client.submit");
    {
      py::gil_scoped_release release;
      CallLock::Held lock(mu_);
      st = [&]() -> Status {
        RETURN_IF_ERROR(Connect(end));
        auto forward = [&](const control::JobEvent& e) {
          if (on_event) cb_error.Run([&] { (*on_event)(EventDict(e)); });
        };
        Result<control::JobEvent> r = co::SubmitJob(*conn_, req, forward, end);
        if (!r.ok()) {
          conn_.reset();  // the connection may be mid-job or closed: start afresh next time
          return r.status();
        }
        done = std::move(*r);
        return Status::Ok();
      }();
    }
    cb_error.Rethrow();
    ThrowIfError(st);
    return EventDict(done);
  }

  py::dict StatusOf(uint64_t job_id, double timeout_s) {
    const co::Deadline end = DeadlineIn(timeout_s);
    Result<control::StatusReply> reply = Internal("not run");
    mu_.CheckNotReentered("Client.status");
    {
      py::gil_scoped_release release;
      CallLock::Held lock(mu_);
      Status st = Connect(end);
      reply = st.ok() ? co::QueryStatus(*conn_, job_id, end) : Result<control::StatusReply>(st);
      if (!reply.ok()) conn_.reset();
    }
    const control::StatusReply& s = ValueOrThrow(std::move(reply));
    if (job_id != 0 && s.job().job_id() != job_id) {
      ThrowIfError(NotFound("job {} is not known to the coordinator", job_id));
    }
    py::dict d;
    py::list workers, jobs;
    for (const control::WorkerInfo& w : s.workers()) {
      py::dict wd;
      wd["group_id"] = w.group_id();
      wd["name"] = w.name();
      wd["ranks"] = w.ranks();
      wd["model"] = w.model();
      wd["busy"] = w.busy();
      wd["running_job"] = w.running_job();
      wd["documents"] = std::vector<std::string>(w.documents().begin(), w.documents().end());
      workers.append(wd);
    }
    for (const control::JobRecord& j : s.jobs()) jobs.append(RecordDict(j, false));
    d["workers"] = workers;
    d["jobs"] = jobs;
    d["job"] = job_id != 0 ? py::object(RecordDict(s.job(), true)) : py::object(py::none());
    d["clients"] = s.clients();
    d["queued"] = s.queued();
    d["running"] = s.running();
    d["uploads_in_progress"] = s.uploads_in_progress();
    return d;
  }

  void Close() {
    mu_.CheckNotReentered("Client.close");
    py::gil_scoped_release release;
    CallLock::Held lock(mu_);
    conn_.reset();
  }

 private:
  static co::Deadline DeadlineIn(double timeout_s) {
    if (!(timeout_s > 0) || timeout_s > 1e7) {
      ThrowIfError(InvalidArgument("timeout must be > 0 seconds, got {}", timeout_s));
    }
    return co::Clock::now() + std::chrono::milliseconds(int64_t(timeout_s * 1e3));
  }

  Status Connect(co::Deadline end) {
    if (conn_) return Status::Ok();
    // Connecting gets at most 30 s of the budget (as `longctx submit`): a dead address fails fast.
    const co::Deadline by = std::min(end, co::Clock::now() + std::chrono::seconds(30));
    ASSIGN_OR_RETURN(conn_, co::ControlConnection::ConnectClient(host_, port_, token_, by));
    return Status::Ok();
  }

  std::string host_;
  uint16_t port_ = 0;
  std::string token_;
  CallLock mu_;  // one request at a time over the one connection
  std::unique_ptr<co::ControlConnection> conn_;
};

}  // namespace

void AddClient(py::module_& m) {
  py::class_<PyClient>(m, "Client", "A coordinator client (private; see longctx.Client)")
      .def(py::init<const std::string&, const std::optional<std::string>&, const std::string&>(),
           py::arg("address"), py::arg("token"), py::arg("token_file"))
      .def("submit", &PyClient::Submit, py::arg("doc_id"), py::arg("document"), py::arg("question"),
           py::arg("generate"), py::arg("timeout"), py::arg("on_event"))
      .def("status", &PyClient::StatusOf, py::arg("job_id"), py::arg("timeout"))
      .def("close", &PyClient::Close);
}

}  // namespace longctx::python
