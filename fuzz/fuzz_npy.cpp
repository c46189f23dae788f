// libFuzzer target for the .npy reader (core/src/npy.cpp): the input is a whole file.
// ReadNpyHeader, ReadNpy, ReadNpyRows and MappedNpy must agree: when the header parses, the array
// reads whole with numel x element size bytes, the mapped view holds the same bytes, and the
// first rows read by pread equal the array's first rows. A failure is a Status, never a crash.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_util.h"
#include "longctx/core/dtype.h"
#include "longctx/core/npy.h"

using longctx::fuzz::Check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = longctx::fuzz::ScratchPath("input.npy");
  if (!longctx::fuzz::WriteScratch(path, data, size)) return 0;
  longctx::Result<longctx::NpyHeader> header = longctx::ReadNpyHeader(path);
  longctx::Result<longctx::NpyArray> array = longctx::ReadNpy(path);
  Check(header.ok() == array.ok());
  if (!header.ok()) {
    Check(!header.status().message().empty());
    return 0;
  }
  const int64_t elem = static_cast<int64_t>(longctx::DTypeSize(header->dtype));
  Check(array->shape == header->shape && array->dtype == header->dtype);
  Check(static_cast<int64_t>(array->data.size()) == header->numel() * elem);
  Check(header->data_offset >= 10 && header->data_offset + header->numel() * elem ==
                                         static_cast<int64_t>(size));

  longctx::Result<longctx::MappedNpy> mapped = longctx::MappedNpy::Open(path, false);
  Check(mapped.ok());
  Check(mapped->data_bytes() == static_cast<int64_t>(array->data.size()));
  Check(array->data.empty() ||
        std::memcmp(mapped->data(), array->data.data(), array->data.size()) == 0);

  if (!header->shape.empty()) {
    const int64_t rows = header->shape[0] < 2 ? header->shape[0] : 2;
    longctx::Result<longctx::NpyArray> first = longctx::ReadNpyRows(path, 0, rows);
    Check(first.ok());
    Check(first->data.size() <= array->data.size());
    Check(first->data.empty() ||
          std::memcmp(first->data.data(), array->data.data(), first->data.size()) == 0);
    Check(!longctx::ReadNpyRows(path, 0, header->shape[0] + 1).ok());
  } else {
    Check(!longctx::ReadNpyRows(path, 0, 0).ok());  // a scalar has no rows
  }
  return 0;
}
