// libFuzzer target for the safetensors reader (model/src/safetensors.cpp): the input is a whole
// file. When it opens, every tensor is fetched and converted to float32, which reads every
// byte the header claims (a range past the mapping would fault and be reported); the sizes must
// agree with the shapes. Whatever is malformed must come back as a Status.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "longctx/core/dtype.h"
#include "longctx/model/safetensors.h"

using longctx::fuzz::Check;
namespace model = longctx::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = longctx::fuzz::ScratchPath("input.safetensors");
  if (!longctx::fuzz::WriteScratch(path, data, size)) return 0;
  longctx::Result<model::SafetensorsFile> file = model::SafetensorsFile::Open(path);
  if (!file.ok()) {
    Check(!file.status().message().empty());
    return 0;
  }
  Check(file->file_bytes() == size);
  uint64_t total = 0;
  for (const std::string& name : file->Names()) {
    Check(file->Contains(name));
    longctx::Result<model::TensorRef> t = file->Get(name);
    if (!t.ok()) continue;  // a dtype longctx does not compute in
    Check(t->bytes == static_cast<size_t>(t->numel()) * longctx::DTypeSize(t->dtype));
    total += t->bytes;
    Check(total <= size);  // tensors do not overlap, so they fit in the file together
    const std::vector<float> values = model::ToFloat32(*t);
    Check(values.size() == static_cast<size_t>(t->numel()));
  }
  Check(!file->Get("\x01no such tensor").ok());
  return 0;
}
