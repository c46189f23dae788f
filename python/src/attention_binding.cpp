// longctx._core.attention / attention_backward: the CPU hybrid-attention kernel of
// attention/include/longctx/attention/hybrid_attention.h (the one `longctx attention` runs) over
// arrays the Python half describes by address, dtype, shape and strides — numpy arrays and torch
// tensors alike, without copying them when their layout is token-major.
//
// Zero-copy rule: an input is read in place when its dtype is float32, float16 or bfloat16, its
// last axis has stride 1, its heads axis stride head_dim, and its token axis a stride of at least
// heads*head_dim elements (any batch stride) — e.g. a contiguous [n, H, d] array, or q sliced out
// of a fused [n, 3, H, d] projection. Anything else (float64, transposed, negative or zero
// strides) is first copied into a dense float32 (or same-half-type) buffer, and the copy is
// counted by staged_copies() so a test can see that none happened.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bindings.h"
#include "longctx/attention/attention_backward.h"
#include "longctx/attention/hybrid_attention.h"
#include "longctx/attention/spec.h"
#include "longctx/core/dtype.h"
#include "longctx/core/thread_pool.h"

namespace py = pybind11;

namespace longctx::python {
namespace {

std::atomic<int64_t> g_staged_copies{0};

enum class ElemType { kF32, kF16, kBF16, kF64 };

// One array as the Python half describes it: (address, dtype name, shape, strides in elements).
struct ArrayArg {
  uintptr_t address = 0;
  ElemType type = ElemType::kF32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // elements, may be negative or zero
};

size_t ElemSize(ElemType t) {
  switch (t) {
    case ElemType::kF32:
      return 4;
    case ElemType::kF16:
      return 2;
    case ElemType::kBF16:
      return 2;
    case ElemType::kF64:
      return 8;
  }
  return 0;
}

Result<ArrayArg> ParseArray(const py::tuple& t, const char* name) {
  if (t.size() != 4) return Internal("{}: array descriptor must have 4 fields", name);
  ArrayArg a;
  a.address = t[0].cast<uintptr_t>();
  const std::string dtype = t[1].cast<std::string>();
  if (dtype == "float32")
    a.type = ElemType::kF32;
  else if (dtype == "float16")
    a.type = ElemType::kF16;
  else if (dtype == "bfloat16")
    a.type = ElemType::kBF16;
  else if (dtype == "float64")
    a.type = ElemType::kF64;
  else
    return InvalidArgument("{}: dtype {} is not supported (float32, float16, bfloat16 or float64)",
                           name, dtype);
  a.shape = t[2].cast<std::vector<int64_t>>();
  a.strides = t[3].cast<std::vector<int64_t>>();
  if (a.shape.size() != 3 && a.shape.size() != 4) {
    return InvalidArgument(
        "{}: expected [n, heads, head_dim] or [batch, n, heads, head_dim], got {} dimensions", name,
        a.shape.size());
  }
  if (a.strides.size() != a.shape.size())
    return Internal("{}: {} strides for {} dimensions", name, a.strides.size(), a.shape.size());
  for (int64_t s : a.shape) {
    if (s < 1)
      return InvalidArgument("{}: every dimension must be >= 1, got shape [{}]", name,
                             fmt::join(a.shape, ", "));
  }
  if (a.address == 0) return InvalidArgument("{}: no data", name);
  return a;
}

// Element (b, t, h, c) of `a` as float.
float ReadElem(const ArrayArg& a, int64_t offset_elems) {
  const std::byte* base = reinterpret_cast<const std::byte*>(a.address);
  const std::byte* p = base + offset_elems * int64_t(ElemSize(a.type));
  switch (a.type) {
    case ElemType::kF32: {
      float x;
      std::memcpy(&x, p, 4);
      return x;
    }
    case ElemType::kF64: {
      double x;
      std::memcpy(&x, p, 8);
      return float(x);
    }
    case ElemType::kF16: {
      uint16_t x;
      std::memcpy(&x, p, 2);
      return HalfToFloat(x);
    }
    case ElemType::kBF16: {
      uint16_t x;
      std::memcpy(&x, p, 2);
      return BF16ToFloat(x);
    }
  }
  return 0.0f;
}

// True when the `count` contiguous elements at `offset_elems` are all finite (f32/f16/bf16):
// an element is inf or NaN exactly when its exponent bits are all ones.
bool RowFinite(const ArrayArg& a, int64_t offset_elems, int64_t count) {
  const std::byte* p =
      reinterpret_cast<const std::byte*>(a.address) + offset_elems * int64_t(ElemSize(a.type));
  uint32_t bad = 0;
  if (a.type == ElemType::kF32) {
    for (int64_t i = 0; i < count; ++i) {
      uint32_t x;
      std::memcpy(&x, p + 4 * i, 4);
      bad |= uint32_t((x & 0x7f800000u) == 0x7f800000u);
    }
  } else {
    const uint16_t exp = a.type == ElemType::kF16 ? 0x7c00u : 0x7f80u;
    for (int64_t i = 0; i < count; ++i) {
      uint16_t x;
      std::memcpy(&x, p + 2 * i, 2);
      bad |= uint32_t((x & exp) == exp);
    }
  }
  return bad == 0;
}

// One batch element of an input, as the kernel sees it, and the buffer behind it if it had to be
// copied. Movable only (a view may point into `copy`).
struct Staged {
  attention::TokenView view;
  std::vector<float> f32;
  std::vector<uint16_t> half;
};

// The [n, H, d] view of batch element b. need_f32: the backward reads float32 only.
Status Stage(const ArrayArg& a, int64_t b, const char* name, bool need_f32, Staged* st) {
  const size_t r = a.shape.size();
  const int64_t n = a.shape[r - 3], H = a.shape[r - 2], d = a.shape[r - 1];
  const int64_t sb = r == 4 ? a.strides[0] : 0;
  const int64_t st_t = a.strides[r - 3], st_h = a.strides[r - 2], st_c = a.strides[r - 1];
  const int64_t base = b * sb;
  const bool half = a.type == ElemType::kF16 || a.type == ElemType::kBF16;
  const bool kernel_type = a.type == ElemType::kF32 || (half && !need_f32);
  const bool token_major = st_c == 1 && (H == 1 || st_h == d) && st_t >= H * d;
  const DType dtype = a.type == ElemType::kF16    ? DType::kF16
                      : a.type == ElemType::kBF16 ? DType::kBF16
                                                  : DType::kF32;
  // Non-finite inputs would give NaN outputs silently (as `longctx attention`, refuse them).
  // Token-major rows are scanned as H*d contiguous elements (a vectorizable bit test).
  for (int64_t t = 0; t < n; ++t) {
    if (token_major && a.type != ElemType::kF64 && RowFinite(a, base + t * st_t, H * d)) continue;
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t c = 0; c < d; ++c) {
        const float x = ReadElem(a, base + t * st_t + h * st_h + c * st_c);
        if (!std::isfinite(x)) {
          return InvalidArgument("{}: non-finite value {} at [{}{}, {}, {}]", name, x,
                                 r == 4 ? fmt::format("{}, ", b) : "", t, h, c);
        }
      }
    }
  }
  if (kernel_type && token_major) {
    const std::byte* p =
        reinterpret_cast<const std::byte*>(a.address) + base * int64_t(ElemSize(a.type));
    st->view = attention::TokenView{p, dtype, n, H, d, st_t};
    return Status::Ok();
  }
  g_staged_copies.fetch_add(1, std::memory_order_relaxed);
  if (half && !need_f32) {  // a dense copy in the same half type
    st->half.resize(size_t(n * H * d));
    const int64_t es = 2;
    const std::byte* src = reinterpret_cast<const std::byte*>(a.address);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t c = 0; c < d; ++c)
          std::memcpy(&st->half[size_t((t * H + h) * d + c)],
                      src + (base + t * st_t + h * st_h + c * st_c) * es, 2);
    st->view = attention::TokenView::Dense(st->half.data(), dtype, n, H, d);
    return Status::Ok();
  }
  st->f32.resize(size_t(n * H * d));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t c = 0; c < d; ++c)
        st->f32[size_t((t * H + h) * d + c)] = ReadElem(a, base + t * st_t + h * st_h + c * st_c);
  st->view = attention::TokenView::Dense(st->f32.data(), DType::kF32, n, H, d);
  return Status::Ok();
}

Result<attention::AttentionSpec> MakeSpec(int64_t window, const std::string& fusion, bool causal,
                                          double scale) {
  attention::AttentionSpec spec;
  if (window < 1) return InvalidArgument("window must be >= 1, got {}", window);
  spec.window = window;
  spec.causal = causal;
  if (!std::isfinite(scale) || scale < 0.0) {
    return InvalidArgument("scale must be a positive number (or None for 1/sqrt(head_dim)), got {}",
                           scale);
  }
  spec.scale = float(scale);
  RETURN_IF_ERROR(attention::ParseFusion(fusion, &spec));
  return spec;
}

struct Inputs {
  ArrayArg q, k, v;
  int64_t batch = 1, n = 0, H = 0, Hkv = 0, d = 0;
};

Result<Inputs> ParseInputs(const py::tuple& q, const py::tuple& k, const py::tuple& v) {
  Inputs in;
  ASSIGN_OR_RETURN(in.q, ParseArray(q, "q"));
  ASSIGN_OR_RETURN(in.k, ParseArray(k, "k"));
  ASSIGN_OR_RETURN(in.v, ParseArray(v, "v"));
  if (in.k.shape.size() != in.q.shape.size() || in.v.shape.size() != in.q.shape.size()) {
    return InvalidArgument("q, k and v must have the same number of dimensions, got {}, {} and {}",
                           in.q.shape.size(), in.k.shape.size(), in.v.shape.size());
  }
  const size_t r = in.q.shape.size();
  if (r == 4 && (in.k.shape[0] != in.q.shape[0] || in.v.shape[0] != in.q.shape[0])) {
    return InvalidArgument("batch sizes differ: q {}, k {}, v {}", in.q.shape[0], in.k.shape[0],
                           in.v.shape[0]);
  }
  if (in.k.shape != in.v.shape) {
    return InvalidArgument("k [{}] and v [{}] shapes differ", fmt::join(in.k.shape, ", "),
                           fmt::join(in.v.shape, ", "));
  }
  in.batch = r == 4 ? in.q.shape[0] : 1;
  in.n = in.q.shape[r - 3];
  in.H = in.q.shape[r - 2];
  in.d = in.q.shape[r - 1];
  in.Hkv = in.k.shape[r - 2];
  return in;
}

// out [batch?, n, H, d] and lse [batch?, n, H], dense float32, written by the caller's buffers.
void Attention(const py::tuple& q, const py::tuple& k, const py::tuple& v,
               const std::vector<int64_t>& globals, int64_t window, const std::string& fusion,
               bool causal, double scale, int threads, uintptr_t out_address,
               uintptr_t lse_address) {
  const Inputs in = ValueOrThrow(ParseInputs(q, k, v));
  const attention::AttentionSpec spec = ValueOrThrow(MakeSpec(window, fusion, causal, scale));
  if (threads < 0) ThrowIfError(InvalidArgument("threads must be >= 0, got {}", threads));
  float* out = reinterpret_cast<float*>(out_address);
  float* lse = reinterpret_cast<float*>(lse_address);
  Status st;
  {
    py::gil_scoped_release release;
    ThreadPool pool(threads);
    const attention::ExecOptions exec{&pool, attention::Isa::kAuto};
    for (int64_t b = 0; b < in.batch && st.ok(); ++b) {
      Staged sq, sk, sv;
      st = Stage(in.q, b, "q", false, &sq);
      if (st.ok()) st = Stage(in.k, b, "k", false, &sk);
      if (st.ok()) st = Stage(in.v, b, "v", false, &sv);
      if (st.ok()) {
        st = attention::HybridAttention(sq.view, sk.view, sv.view, globals, spec,
                                        out + b * in.n * in.H * in.d, lse + b * in.n * in.H, exec);
      }
    }
  }
  ThrowIfError(st);
}

// Gradients of sum(dout * out) w.r.t. q, k, v (accumulated into the caller's zeroed dense float32
// buffers dq [.., n, H, d], dk/dv [.., n, Hkv, d]); out/lse are the forward's.
void AttentionBackward(const py::tuple& q, const py::tuple& k, const py::tuple& v,
                       const std::vector<int64_t>& globals, int64_t window,
                       const std::string& fusion, bool causal, double scale, int threads,
                       uintptr_t out_address, uintptr_t lse_address, const py::tuple& dout_arg,
                       uintptr_t dq_address, uintptr_t dk_address, uintptr_t dv_address) {
  const Inputs in = ValueOrThrow(ParseInputs(q, k, v));
  const attention::AttentionSpec spec = ValueOrThrow(MakeSpec(window, fusion, causal, scale));
  if (threads < 0) ThrowIfError(InvalidArgument("threads must be >= 0, got {}", threads));
  const ArrayArg dout = ValueOrThrow(ParseArray(dout_arg, "dout"));
  if (dout.shape != in.q.shape) {
    ThrowIfError(InvalidArgument("dout [{}] must have q's shape [{}]", fmt::join(dout.shape, ", "),
                                 fmt::join(in.q.shape, ", ")));
  }
  const float* out = reinterpret_cast<const float*>(out_address);
  const float* lse = reinterpret_cast<const float*>(lse_address);
  float* dq = reinterpret_cast<float*>(dq_address);
  float* dk = reinterpret_cast<float*>(dk_address);
  float* dv = reinterpret_cast<float*>(dv_address);
  const int64_t qsz = in.n * in.H * in.d, ksz = in.n * in.Hkv * in.d;
  Status st;
  {
    py::gil_scoped_release release;
    ThreadPool pool(threads);
    const attention::ExecOptions exec{&pool, attention::Isa::kAuto};
    for (int64_t b = 0; b < in.batch && st.ok(); ++b) {
      Staged sq, sk, sv, sd;
      st = Stage(in.q, b, "q", true, &sq);
      if (st.ok()) st = Stage(in.k, b, "k", true, &sk);
      if (st.ok()) st = Stage(in.v, b, "v", true, &sv);
      if (st.ok()) st = Stage(dout, b, "dout", true, &sd);
      if (!st.ok()) break;
      // The kernel reads a dense dout [n, H, d].
      const float* dptr = static_cast<const float*>(sd.view.data);
      std::vector<float> dense;
      if (sd.view.row_stride != in.H * in.d) {
        g_staged_copies.fetch_add(1, std::memory_order_relaxed);
        dense.resize(size_t(qsz));
        for (int64_t t = 0; t < in.n; ++t) {
          std::memcpy(dense.data() + t * in.H * in.d, dptr + t * sd.view.row_stride,
                      size_t(in.H * in.d) * sizeof(float));
        }
        dptr = dense.data();
      }
      st = attention::HybridAttentionBackward(sq.view, sk.view, sv.view, globals, spec,
                                              out + b * qsz, lse + b * in.n * in.H, dptr,
                                              dq + b * qsz, dk + b * ksz, dv + b * ksz, exec);
    }
  }
  ThrowIfError(st);
}

}  // namespace

void AddAttention(py::module_& m) {
  m.def("attention", &Attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("globals"),
        py::arg("window"), py::arg("fusion"), py::arg("causal"), py::arg("scale"),
        py::arg("threads"), py::arg("out"), py::arg("lse"),
        "Hybrid attention into caller-owned float32 buffers (private; see longctx.attention).");
  m.def("attention_backward", &AttentionBackward, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("globals"), py::arg("window"), py::arg("fusion"), py::arg("causal"),
        py::arg("scale"), py::arg("threads"), py::arg("out"), py::arg("lse"), py::arg("dout"),
        py::arg("dq"), py::arg("dk"), py::arg("dv"),
        "Backward of attention, accumulated into caller-owned zeroed float32 buffers (private).");
  m.def(
      "staged_copies", [] { return g_staged_copies.load(); },
      "How many input arrays were copied because their layout or dtype could not be read in "
      "place (a diagnostic: contiguous float32/float16/bfloat16 inputs never are).");
}

}  // namespace longctx::python
