// `longctx._core`: the C++ half of the Python package `longctx` (python/longctx/ is the typed,
// documented Python half that users import). One exception class, longctx.Error, carries every
// longctx::Status: `.code` is the code's name ("InvalidArgument", "NotFound", ...), `.message`
// the one-line message, str(e) = "Code: message".
#include <pybind11/pybind11.h>

#include <string>

#include "bindings.h"
#include "longctx/core/status.h"

namespace py = pybind11;

namespace longctx::python {
namespace {

// The exception class object, created once at import (a module-lifetime reference).
PyObject* g_error_class = nullptr;

py::object MakeError(const std::string& code, const std::string& message) {
  py::object cls = py::reinterpret_borrow<py::object>(g_error_class);
  py::object e = cls(code + ": " + message);
  e.attr("code") = code;
  e.attr("message") = message;
  return e;
}

}  // namespace
}  // namespace longctx::python

PYBIND11_MODULE(_core, m) {
  using namespace longctx::python;
  m.doc() = "longctx C++ bindings (private: import longctx instead)";
  g_error_class = PyErr_NewExceptionWithDoc(
      "longctx.Error",
      "An error reported by longctx: .code is the status code's name (e.g. 'InvalidArgument', "
      "'NotFound', 'Unavailable'), .message the one-line message; str(e) is 'code: message'.",
      PyExc_Exception, nullptr);
  if (g_error_class == nullptr) throw py::error_already_set();
  m.attr("Error") = py::handle(g_error_class);
  m.def("make_error", &MakeError, py::arg("code"), py::arg("message"),
        "An Error instance with .code and .message set (for the Python half's own checks).");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      const longctx::Status& s = e.status();
      py::object err = MakeError(std::string(longctx::StatusCodeName(s.code())), s.message());
      PyErr_SetObject(g_error_class, err.ptr());
    }
  });
  AddAttention(m);
  AddEngine(m);
  AddClient(m);
}
