// Weights in the safetensors format (https://github.com/huggingface/safetensors): a validating,
// memory-mapped reader for one file (SafetensorsFile) or a model directory, single-file or
// sharded through model.safetensors.index.json (ModelWeights), and an atomic writer.
//
// File layout: 8-byte little-endian unsigned header length N (bytes), N bytes of UTF-8 JSON
// (an object: tensor name -> {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional
// "__metadata__" object of strings), then the data section; offsets are bytes relative to the
// start of the data section (byte 8 + N of the file), elements little-endian, C order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/dtype.h"
#include "longctx/core/status.h"

namespace longctx::model {

// Headers longer than this are refused before anything is allocated (bytes; the reference
// Rust library's bound is 100,000,000).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t{100} << 20;

// A view of one tensor. When returned by a reader, `data` points into the file's mapping (or
// the owning ModelWeights' memory) and stays valid while that object lives; it is NOT aligned
// to the element size in general, so read elements with std::memcpy or CopyToFloat32.
// As writer input, `data` must hold exactly numel() * DTypeSize(dtype) bytes.
struct TensorRef {
  std::string name;
  DType dtype = DType::kF32;    // kF32, kF16 or kBF16 from a reader
  std::vector<int64_t> shape;   // elements per dimension; empty = scalar
  const std::byte* data = nullptr;
  size_t bytes = 0;             // numel() * DTypeSize(dtype)

  int64_t numel() const;        // elements (1 for a scalar)
  std::span<const std::byte> span() const { return {data, bytes}; }
};

// Converts `t` (F32/F16/BF16) to float32; `out` must hold exactly t.numel() floats.
Status CopyToFloat32(const TensorRef& t, std::span<float> out);
std::vector<float> ToFloat32(const TensorRef& t);  // as above, into a new vector

// "F32", "F16", "BF16", "I32", "I64" (safetensors' dtype names).
std::string_view SafetensorsDTypeName(DType t);

// One memory-mapped .safetensors file whose header has been validated in full at Open:
//   - the file holds at least 8 bytes; header length N <= kMaxSafetensorsHeaderBytes and
//     N <= file size - 8 (so a length of 2^63 is a clean error, never an allocation);
//   - the header is a JSON object without duplicate keys; "__metadata__" (string -> string) is
//     kept aside; every other entry has a known dtype string, a shape of non-negative integers
//     and data_offsets [begin, end] with begin <= end <= data section size;
//   - shape product x dtype size == end - begin (computed with overflow checks);
//   - no two non-empty tensors overlap. Unlike the reference library, gaps between tensors and
//     bytes after the last one are tolerated (they cannot alias a tensor).
// The first problem found is reported, naming the file and the tensor. Codes: a missing file is
// kNotFound; a file shorter than its header claims (header or offsets past the end) is
// kDataLoss; anything else malformed is kInvalidArgument. Tensors of dtypes other than
// F32/F16/BF16 (I64, U8, F64, ...) are accepted by Open, so a checkpoint carrying e.g. an int
// buffer still opens, and refused by Get with an error naming the tensor and its dtype.
// Move-only; the mapping is released with the object. If the file is truncated by someone else
// while mapped, reading a tensor may raise SIGBUS (as with any mmap reader).
class SafetensorsFile {
 public:
  static Result<SafetensorsFile> Open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // kNotFound ("<path>: no tensor named X") or kInvalidArgument for an unsupported dtype.
  Result<TensorRef> Get(std::string_view name) const;
  bool Contains(std::string_view name) const;
  std::vector<std::string> Names() const;  // sorted; excludes "__metadata__"
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_bytes() const;

 private:
  struct Mapping;
  struct Entry {
    std::string dtype_name;      // as in the header ("F32", "I64", ...)
    size_t elem_bytes = 0;
    bool supported = false;      // F32/F16/BF16
    DType dtype = DType::kF32;   // valid when supported
    std::vector<int64_t> shape;
    uint64_t begin = 0;          // bytes from the start of the data section
    uint64_t end = 0;
  };
  SafetensorsFile() = default;

  std::string path_;
  std::unique_ptr<Mapping> mapping_;
  uint64_t data_start_ = 0;  // bytes from the start of the file: 8 + header length
  std::map<std::string, Entry, std::less<>> entries_;
  std::map<std::string, std::string> metadata_;
};

// A tensor owned in memory (the built-in model, or a tensor built by a test).
struct OwnedTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<std::byte> data;  // numel * DTypeSize(dtype) bytes, little-endian, C order

  TensorRef ref() const;
};

// All the tensors of a model, by name, from one of:
//   - OpenDir(dir): dir/model.safetensors.index.json when present (sharded), else
//     dir/model.safetensors;
//   - OpenFile(path): one .safetensors file;
//   - OpenIndex(path): an index {"weight_map": {tensor: shard file}} whose shard names are
//     plain file names in the index's directory (no '/', not "." or ".."); each shard is opened
//     once and must contain every tensor the index places in it;
//   - FromTensors: in memory (builtin models; no file).
// Errors name the file (or "<memory>") first. Move-only.
class ModelWeights {
 public:
  static Result<ModelWeights> OpenDir(const std::string& dir);
  static Result<ModelWeights> OpenFile(const std::string& path);
  static Result<ModelWeights> OpenIndex(const std::string& index_path);
  // kInvalidArgument on duplicate names or a data size that does not match shape x dtype.
  static Result<ModelWeights> FromTensors(std::vector<OwnedTensor> tensors,
                                          std::string source = "<memory>");

  ModelWeights(ModelWeights&&) noexcept;
  ModelWeights& operator=(ModelWeights&&) noexcept;
  ~ModelWeights();

  // What errors name: the .safetensors file, the index file, or "<memory>".
  const std::string& source() const { return source_; }
  Result<TensorRef> Get(std::string_view name) const;
  bool Contains(std::string_view name) const;
  std::vector<std::string> Names() const;  // sorted
  // OK when every name is present; else kNotFound naming the first missing one in the order
  // given ("model.safetensors: missing tensor model.norm.weight").
  Status Require(std::span<const std::string> names) const;

 private:
  ModelWeights() = default;
  // Per tensor: which file holds it (index into files_), or -1 for an owned tensor.
  std::string source_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, int, std::less<>> where_;
  std::map<std::string, OwnedTensor, std::less<>> owned_;
};

// Writes a .safetensors file readable by the Python safetensors library and by transformers
// (give metadata {"format": "pt"} for the latter): compact JSON header padded with spaces to a
// multiple of 8 bytes, "__metadata__" first, tensors contiguous in the reference library's
// order (I64, F32, I32, BF16, F16, then by name) so each starts aligned to its element size.
// The bytes equal the reference library's output (checked against its own test vectors) when
// metadata has at most one key (it orders several by hash; we sort them).
// Atomic: writes "<path>.tmp.<pid>", fsyncs, renames; a failed write leaves no file behind.
// Refuses (kInvalidArgument) duplicate or empty names, "__metadata__" as a tensor name, and data
// whose size is not numel x dtype size. Accepted dtypes: F32, F16, BF16, I32, I64.
Status WriteSafetensors(const std::string& path, std::span<const TensorRef> tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace longctx::model
