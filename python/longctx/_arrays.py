"""Array descriptors for longctx._core: numpy arrays and torch tensors are both handed to the C++
side as (address, dtype name, shape, strides in elements), so neither is copied here. The C++
side reads an input in place when its layout is token-major (see python/src/
attention_binding.cpp) and copies it otherwise."""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import numpy as np

from . import _core

Descriptor = Tuple[int, str, Tuple[int, ...], Tuple[int, ...]]

_SUPPORTED = "float32, float16, bfloat16 or float64"
_NUMPY_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16",
                 np.dtype(np.float64): "float64"}


def error(code: str, message: str) -> Exception:
    """A longctx.Error with .code and .message (what the C++ side raises for a bad Status)."""
    return _core.make_error(code, message)


def is_torch(x: Any) -> bool:
    """True for a torch.Tensor, without importing torch when the caller never did."""
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def _torch_dtype_name(t: Any) -> str:
    name = str(t.dtype).replace("torch.", "")
    return name


def describe(x: Any, name: str) -> Tuple[Descriptor, Any]:
    """(descriptor, keep-alive object) of a float array; raises longctx.Error for anything that
    is not a float32/float16/bfloat16/float64 numpy array or CPU torch tensor."""
    if is_torch(x):
        if x.device.type != "cpu":
            raise error("InvalidArgument",
                        f"{name}: tensor is on {x.device}; longctx runs on the CPU")
        dtype = _torch_dtype_name(x)
        if dtype not in ("float32", "float16", "bfloat16", "float64"):
            raise error("InvalidArgument",
                        f"{name}: dtype {dtype} is not supported ({_SUPPORTED})")
        if x.numel() == 0:
            raise error("InvalidArgument", f"{name}: empty tensor of shape {list(x.shape)}")
        return (x.data_ptr(), dtype, tuple(x.shape), tuple(x.stride())), x
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as e:  # e.g. ragged lists
            raise error("InvalidArgument",
                        f"{name}: not an array ({type(x).__name__}): {e}") from None
    dtype = _NUMPY_DTYPES.get(x.dtype)
    if dtype is None or not x.dtype.isnative:
        raise error("InvalidArgument",
                    f"{name}: dtype {x.dtype} is not supported ({_SUPPORTED})")
    if x.size == 0:
        raise error("InvalidArgument", f"{name}: empty array of shape {list(x.shape)}")
    item = x.itemsize
    if any(s % item for s in x.strides):
        raise error("InvalidArgument", f"{name}: strides {x.strides} are not whole elements")
    strides = tuple(s // item for s in x.strides)
    return (int(x.ctypes.data), dtype, tuple(x.shape), strides), x


def positions(globals_: Any, name: str = "globals") -> List[int]:
    """Global positions as a list of ints (None -> []); sortedness and range are checked in C++."""
    if globals_ is None:
        return []
    if is_torch(globals_):
        globals_ = globals_.detach().cpu().numpy()
    a = np.asarray(globals_)
    if a.size == 0:
        return []
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise error("InvalidArgument",
                    f"{name} must be a 1-D sequence of integer positions, got dtype {a.dtype} and "
                    f"{a.ndim} dimension(s)")
    return [int(p) for p in a]


def check_shapes(q: Sequence[int], k: Sequence[int], v: Sequence[int]) -> None:
    """The shape rules the caller can see before any C++ runs (the C++ side checks them again)."""
    for name, s in (("q", q), ("k", k), ("v", v)):
        if len(s) not in (3, 4):
            raise error("InvalidArgument",
                        f"{name}: expected [n, heads, head_dim] or [batch, n, heads, head_dim], "
                        f"got shape {list(s)}")
