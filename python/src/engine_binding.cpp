// longctx._core.Engine: worker::Engine (worker/include/longctx/worker/engine.h) in this process,
// over the one-rank "self" communicator — the model loaded once, documents prefilled and kept,
// questions answered against them — reading text exactly as `longctx run` does
// (launch/src/run_command.cpp): the tokenizer given, else the model directory's tokenizer.json,
// else bytes; the same global classes, stop ids and generated-token global rule. So the ids an
// Engine generates are the ids `longctx run` writes for the same input (tests/python/
// test_python_engine.py checks it).
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "bindings.h"
#include "longctx/attention/global_selection.h"
#include "longctx/cache/kv_block.h"
#include "longctx/comm/communicator.h"
#include "longctx/core/byte_size.h"
#include "longctx/model/tokenizer.h"
#include "longctx/worker/engine.h"
#include "longctx/worker/token_rules.h"

namespace py = pybind11;

namespace longctx::python {
namespace {

// The text rules of `longctx run` (worker/token_rules.h; the Engine test compares the two end
// to end).
using worker::TokenTextEndsSentenceOrParagraph;

// What the Python Engine() call gives (None = the model's own value).
struct EngineArgs {
  std::string model = "builtin:tiny";
  uint64_t seed = model::kDefaultBuiltinSeed;
  int threads = 0;
  std::optional<std::vector<int64_t>> window;
  std::optional<double> global_ratio;
  std::optional<int64_t> global_max, sinks;
  std::optional<std::string> fusion;
  std::optional<bool> query_globals;
  std::optional<int64_t> logn_base;
  std::optional<std::string> tokenizer;
  std::string kv_codec = "f32";
  int32_t kv_block_tokens = 64;
  std::optional<std::string> kv_device_budget, kv_host_budget;
};

class PyEngine {
 public:
  explicit PyEngine(const EngineArgs& a) {
    Status st;
    {
      py::gil_scoped_release release;
      st = Open(a);
    }
    ThrowIfError(st);
  }

  // Prefill a document given as text (bytes, UTF-8) or as token ids. Returns a dict.
  py::dict Prefill(const std::string& doc_id, const std::optional<py::bytes>& text,
                   const std::optional<std::vector<int64_t>>& ids,
                   const std::optional<std::function<void(int64_t, int64_t)>>& on_layer) {
    if (text.has_value() == ids.has_value()) {
      ThrowIfError(InvalidArgument("give exactly one of text and ids"));
    }
    std::string doc_text = text ? std::string(*text) : std::string();
    CallbackError cb_error;
    worker::DocumentInfo info;
    Status st;
    mu_.CheckNotReentered("Engine.prefill");
    {
      py::gil_scoped_release release;
      CallLock::Held lock(mu_);
      st = [&]() -> Status {
        std::vector<int32_t> tok_ids;
        std::vector<attention::TokenClass> classes;
        if (text) {
          ASSIGN_OR_RETURN(tok_ids, tok_->Encode(doc_text, true));
          classes = tok_->is_byte_level() ? attention::ClassifyBytes(doc_text)
                                          : worker::ClassifyTokenIds(*tok_, tok_ids);
        } else {
          tok_ids.resize(ids->size());
          for (size_t i = 0; i < ids->size(); ++i) {
            const int64_t v = (*ids)[i];
            if (v < 0 || v > INT32_MAX) {
              return OutOfRange("token id {} at position {} is negative or too large", v, i);
            }
            tok_ids[i] = int32_t(v);
          }
          classes = tok_->is_byte_level() ? attention::ClassifyByteIds(tok_ids)
                                          : worker::ClassifyTokenIds(*tok_, tok_ids);
        }
        if (tok_ids.empty()) return InvalidArgument("the document is empty");
        const int64_t vocab = engine_->config().vocab_size;
        for (size_t i = 0; i < tok_ids.size(); ++i) {
          if (tok_ids[i] >= vocab) {
            return OutOfRange(
                "token id {} at position {} is outside the model's vocabulary [0, {})", tok_ids[i],
                i, vocab);
          }
        }
        worker::LayerProgress progress;
        if (on_layer) {
          progress = [&](int64_t layer, int64_t layers) {
            cb_error.Run([&] { (*on_layer)(layer, layers); });
          };
        }
        return engine_->Prefill(doc_id, tok_ids, classes, progress, &info);
      }();
    }
    cb_error.Rethrow();
    ThrowIfError(st);
    py::dict d;
    d["doc_id"] = doc_id;
    d["tokens"] = info.tokens;
    d["globals"] = info.globals;
    d["next_token"] = info.next_token;
    d["seconds"] = info.prefill_seconds;
    return d;
  }

  // The question (text) and `generate` greedy tokens (or -1: as many as the length head
  // predicts, at most max_generate) against document doc_id. Returns a dict.
  py::dict Ask(const std::string& doc_id, const py::bytes& question_bytes, int64_t generate,
               int64_t max_generate,
               const std::optional<std::function<void(int32_t, int64_t)>>& on_token) {
    const std::string question(question_bytes);
    CallbackError cb_error;
    worker::AnswerResult answer;
    int64_t query_tokens = int64_t(question.size());
    Status st;
    mu_.CheckNotReentered("Engine.ask");
    {
      py::gil_scoped_release release;
      CallLock::Held lock(mu_);
      st = [&]() -> Status {
        if (generate < -1) return InvalidArgument("generate must be >= 0, got {}", generate);
        if (!engine_->Has(doc_id)) {
          return NotFound("document '{}' is not prefilled in this engine", doc_id);
        }
        worker::TokenCallback token_cb;
        if (on_token) {
          token_cb = [&](int32_t token, int64_t index) {
            cb_error.Run([&] { (*on_token)(token, index); });
          };
        }
        if (tok_->is_byte_level()) {
          if (generate < 0) {
            ASSIGN_OR_RETURN(generate,
                             engine_->PredictAnswerLength(doc_id, question, max_generate));
          }
          return engine_->Answer(doc_id, question, generate, token_cb, &answer);
        }
        worker::AnswerTokens at;
        ASSIGN_OR_RETURN(at.query_ids, tok_->Encode(question, false));
        query_tokens = int64_t(at.query_ids.size());
        at.stop_ids = tok_->eos_ids();
        for (int64_t id : engine_->config().eos_token_ids) {
          if (std::find(at.stop_ids.begin(), at.stop_ids.end(), int32_t(id)) == at.stop_ids.end()) {
            at.stop_ids.push_back(int32_t(id));
          }
        }
        const model::Tokenizer& tok = *tok_;
        at.is_global = [&tok](int32_t token, const std::vector<int32_t>& prev) {
          return TokenTextEndsSentenceOrParagraph(
              prev.empty() ? std::string() : tok.TokenText(prev.back()), tok.TokenText(token));
        };
        at.decode = [&tok](const std::vector<int32_t>& gen) {
          auto text = tok.Decode(gen, true);
          return text.ok() ? *text : std::string();
        };
        if (generate < 0) {
          ASSIGN_OR_RETURN(generate,
                           engine_->PredictAnswerLength(doc_id, question, max_generate, &at));
        }
        return engine_->Answer(doc_id, question, generate, token_cb, &answer, &at);
      }();
    }
    cb_error.Rethrow();
    ThrowIfError(st);
    py::dict d;
    d["appended"] = answer.appended;
    d["appended_globals"] = answer.appended_globals;
    d["query_tokens"] = query_tokens;
    d["generated"] = py::bytes(answer.generated);
    d["first_token_seconds"] = answer.first_token_seconds;
    d["seconds"] = answer.seconds;
    return d;
  }

  void Drop(const std::string& doc_id) {
    Status st;
    mu_.CheckNotReentered("Engine.drop");
    {
      py::gil_scoped_release release;
      CallLock::Held lock(mu_);
      st = engine_->Drop(doc_id);
    }
    ThrowIfError(st);
  }

  bool Has(const std::string& doc_id) {
    mu_.CheckNotReentered("Engine.has");
    py::gil_scoped_release release;
    CallLock::Held lock(mu_);
    return engine_->Has(doc_id);
  }

  std::vector<int64_t> Encode(const py::bytes& text, bool add_special_tokens) {
    std::vector<int32_t> ids = ValueOrThrow(tok_->Encode(std::string(text), add_special_tokens));
    return {ids.begin(), ids.end()};
  }

  py::bytes Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) {
    std::vector<int32_t> v;
    for (int64_t id : ids) {
      if (id < 0 || id > INT32_MAX) ThrowIfError(OutOfRange("token id {} is out of range", id));
      v.push_back(int32_t(id));
    }
    return py::bytes(ValueOrThrow(tok_->Decode(v, skip_special_tokens)));
  }

  py::dict Config() const {
    const model::ModelConfig& c = engine_->config();
    py::dict d;
    d["vocab_size"] = c.vocab_size;
    d["hidden_size"] = c.hidden_size;
    d["num_hidden_layers"] = c.num_hidden_layers;
    std::vector<int64_t> windows;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) windows.push_back(c.Window(l));
    d["windows"] = windows;
    d["fusion"] = c.hybrid.fusion;
    d["eos_token_ids"] = c.eos_token_ids;
    d["tokenizer"] = tok_->Describe();
    d["byte_level"] = tok_->is_byte_level();
    return d;
  }

 private:
  Status Open(const EngineArgs& a) {
    ASSIGN_OR_RETURN(comm_, comm::WorldCommunicator("self"));
    worker::EngineOptions eo;
    eo.model = a.model;
    eo.seed = a.seed;
    if (a.threads < 0) return InvalidArgument("threads must be >= 0, got {}", a.threads);
    eo.threads = a.threads;
    eo.keep_kv = true;
    eo.overrides.window = a.window;
    eo.overrides.global_ratio = a.global_ratio;
    eo.overrides.global_max = a.global_max;
    eo.overrides.sinks = a.sinks;
    eo.overrides.fusion = a.fusion;
    eo.overrides.query_globals = a.query_globals;
    eo.overrides.logn_base = a.logn_base;
    ASSIGN_OR_RETURN(eo.kv.codec, cache::ParseCodec(a.kv_codec));
    if (a.kv_block_tokens < 1) {
      return InvalidArgument("kv_block_tokens must be >= 1, got {}", a.kv_block_tokens);
    }
    eo.kv.block_tokens = a.kv_block_tokens;
    if (a.kv_device_budget) {
      ASSIGN_OR_RETURN(eo.kv.device_budget, ParseByteSize(*a.kv_device_budget, "kv_device_budget"));
    }
    if (a.kv_host_budget) {
      ASSIGN_OR_RETURN(eo.kv.host_budget, ParseByteSize(*a.kv_host_budget, "kv_host_budget"));
    }
    // The tokenizer as `longctx run` picks it (before the model: a bad tokenizer fails first
    // there too).
    if (a.tokenizer) {
      ASSIGN_OR_RETURN(tok_, model::OpenTokenizer(*a.tokenizer));
    } else {
      std::error_code ec;
      const std::filesystem::path dir(a.model);
      if (a.model.rfind("builtin:", 0) != 0 &&
          std::filesystem::is_regular_file(dir / "tokenizer.json", ec)) {
        ASSIGN_OR_RETURN(tok_, model::OpenTokenizer((dir / "tokenizer.json").string()));
      } else {
        tok_ = std::make_unique<model::ByteTokenizer>();
      }
    }
    ASSIGN_OR_RETURN(engine_, worker::Engine::Open(*comm_, eo));
    return Status::Ok();
  }

  CallLock mu_;  // one call at a time (the engine is not thread-safe; the GIL is released)
  std::shared_ptr<comm::Communicator> comm_;
  std::unique_ptr<model::Tokenizer> tok_;
  std::unique_ptr<worker::Engine> engine_;  // after comm_: destroyed first
};

}  // namespace

void AddEngine(py::module_& m) {
  py::class_<EngineArgs>(m, "EngineArgs", "Options of Engine (private; see longctx.Engine)")
      .def(py::init<>())
      .def_readwrite("model", &EngineArgs::model)
      .def_readwrite("seed", &EngineArgs::seed)
      .def_readwrite("threads", &EngineArgs::threads)
      .def_readwrite("window", &EngineArgs::window)
      .def_readwrite("global_ratio", &EngineArgs::global_ratio)
      .def_readwrite("global_max", &EngineArgs::global_max)
      .def_readwrite("sinks", &EngineArgs::sinks)
      .def_readwrite("fusion", &EngineArgs::fusion)
      .def_readwrite("query_globals", &EngineArgs::query_globals)
      .def_readwrite("logn_base", &EngineArgs::logn_base)
      .def_readwrite("tokenizer", &EngineArgs::tokenizer)
      .def_readwrite("kv_codec", &EngineArgs::kv_codec)
      .def_readwrite("kv_block_tokens", &EngineArgs::kv_block_tokens)
      .def_readwrite("kv_device_budget", &EngineArgs::kv_device_budget)
      .def_readwrite("kv_host_budget", &EngineArgs::kv_host_budget);
  py::class_<PyEngine>(m, "Engine", "worker::Engine on one process (private; see longctx.Engine)")
      .def(py::init<const EngineArgs&>(), py::arg("args"))
      .def("prefill", &PyEngine::Prefill, py::arg("doc_id"), py::arg("text"), py::arg("ids"),
           py::arg("on_layer"))
      .def("ask", &PyEngine::Ask, py::arg("doc_id"), py::arg("question"), py::arg("generate"),
           py::arg("max_generate"), py::arg("on_token"))
      .def("drop", &PyEngine::Drop, py::arg("doc_id"))
      .def("has", &PyEngine::Has, py::arg("doc_id"))
      .def("encode", &PyEngine::Encode, py::arg("text"), py::arg("add_special_tokens"))
      .def("decode", &PyEngine::Decode, py::arg("ids"), py::arg("skip_special_tokens"))
      .def("config", &PyEngine::Config);
}

}  // namespace longctx::python
