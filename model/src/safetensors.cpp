#include "longctx/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "file_util.h"
#include "json_util.h"

namespace longctx::model {

static_assert(std::endian::native == std::endian::little,
              "safetensors I/O assumes a little-endian host");

namespace {

using json = nlohmann::json;
using internal::JsonErrorText;
using internal::Repr;
using internal::ErrnoStatus;
using internal::Fd;

constexpr uint64_t kMaxIndexBytes = uint64_t{64} << 20;  // model.safetensors.index.json bound
constexpr std::string_view kMetadataKey = "__metadata__";

struct DTypeInfo {
  std::string_view name;
  size_t elem_bytes;
  bool supported;  // F32/F16/BF16: what longctx computes with
  DType dtype;
};

// safetensors' dtype names with their element sizes (bytes).
constexpr DTypeInfo kDTypes[] = {
    {"F32", 4, true, DType::kF32},       {"F16", 2, true, DType::kF16},
    {"BF16", 2, true, DType::kBF16},     {"F64", 8, false, DType::kF32},
    {"I64", 8, false, DType::kI64},      {"U64", 8, false, DType::kF32},
    {"I32", 4, false, DType::kI32},      {"U32", 4, false, DType::kF32},
    {"I16", 2, false, DType::kF32},      {"U16", 2, false, DType::kF32},
    {"I8", 1, false, DType::kF32},       {"U8", 1, false, DType::kF32},
    {"BOOL", 1, false, DType::kF32},     {"F8_E4M3", 1, false, DType::kF32},
    {"F8_E5M2", 1, false, DType::kF32},  {"C64", 8, false, DType::kF32},
};

const DTypeInfo* FindDType(std::string_view name) {
  for (const DTypeInfo& d : kDTypes) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// numel * elem_bytes in bytes, or false on overflow.
bool ShapeBytes(const std::vector<int64_t>& shape, size_t elem_bytes, uint64_t* bytes) {
  uint64_t n = elem_bytes;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  *bytes = n;
  return true;
}

// A non-negative integer that fits int64 (for shapes and offsets).
bool AsNonNegative(const json& v, uint64_t* out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
  } else {
    const auto x = v.get<int64_t>();
    if (x < 0) return false;
    *out = static_cast<uint64_t>(x);
  }
  return *out <= static_cast<uint64_t>(INT64_MAX);
}

}  // namespace

// ---- TensorRef / conversions ----------------------------------------------------------------

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string_view SafetensorsDTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
  }
  return "?";
}

Status CopyToFloat32(const TensorRef& t, std::span<float> out) {
  const auto n = static_cast<size_t>(t.numel());
  if (out.size() != n) {
    return InvalidArgument("tensor {}: {} elements, output holds {}", t.name, n, out.size());
  }
  if (t.bytes != n * DTypeSize(t.dtype)) {
    return InvalidArgument("tensor {}: {} bytes for {} elements of {}", t.name, t.bytes, n,
                           SafetensorsDTypeName(t.dtype));
  }
  switch (t.dtype) {
    case DType::kF32:
      if (n > 0) std::memcpy(out.data(), t.data, n * 4);
      return Status::Ok();
    case DType::kF16:
    case DType::kBF16: {
      const bool half = t.dtype == DType::kF16;
      for (size_t i = 0; i < n; ++i) {
        uint16_t u;
        std::memcpy(&u, t.data + 2 * i, 2);
        out[i] = half ? HalfToFloat(u) : BF16ToFloat(u);
      }
      return Status::Ok();
    }
    default:
      return InvalidArgument("tensor {}: dtype {} is not F32, F16 or BF16", t.name,
                             SafetensorsDTypeName(t.dtype));
  }
}

std::vector<float> ToFloat32(const TensorRef& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  if (!CopyToFloat32(t, out).ok()) out.clear();
  return out;
}

// ---- SafetensorsFile ------------------------------------------------------------------------

// Owns a read-only mapping of a whole file.
struct SafetensorsFile::Mapping {
  const std::byte* base = nullptr;
  size_t bytes = 0;

  Mapping(const std::byte* b, size_t n) : base(b), bytes(n) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (base != nullptr) ::munmap(const_cast<std::byte*>(base), bytes);
  }
};

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

uint64_t SafetensorsFile::file_bytes() const { return mapping_ ? mapping_->bytes : 0; }

Result<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  // O_NONBLOCK so that opening a FIFO by mistake cannot hang; no effect on regular files.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) return ErrnoStatus(errno, fmt::format("{}: cannot open", path));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, fmt::format("{}: fstat", path));
  if (!S_ISREG(st.st_mode)) return InvalidArgument("{}: not a regular file", path);
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    return DataLoss("{}: file is {} bytes, shorter than the 8-byte header length", path, size);
  }

  // Validate the header length before mapping or allocating anything.
  unsigned char len_bytes[8];
  ssize_t got;
  do {
    got = ::pread(fd.get(), len_bytes, 8, 0);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return ErrnoStatus(errno, fmt::format("{}: read of the header length", path));
  if (got != 8) return DataLoss("{}: file ended inside the header length", path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return InvalidArgument(
        "{}: header length {} bytes exceeds the {} byte limit (not a safetensors file?)", path,
        header_len, kMaxSafetensorsHeaderBytes);
  }
  if (header_len > size - 8) {
    return DataLoss("{}: header length {} bytes runs past the end of the {}-byte file", path,
                    header_len, size);
  }

  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (addr == MAP_FAILED) return ErrnoStatus(errno, fmt::format("{}: mmap", path));
  SafetensorsFile file;
  file.path_ = path;
  file.mapping_ = std::make_unique<Mapping>(static_cast<const std::byte*>(addr), size);
  file.data_start_ = 8 + header_len;
  const uint64_t data_bytes = size - file.data_start_;

  const auto* header = reinterpret_cast<const char*>(file.mapping_->base + 8);
  // Top-level keys, to refuse duplicates (a JSON object keeps only the last one, which could
  // hide a tensor).
  std::set<std::string, std::less<>> seen;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json root;
  try {
    root = json::parse(header, header + header_len, on_event);
  } catch (const json::exception& e) {
    return InvalidArgument("{}: header is not valid JSON: {}", path, JsonErrorText(e));
  }
  if (!root.is_object()) {
    return InvalidArgument("{}: header is a JSON {}, expected an object", path, root.type_name());
  }
  if (!duplicate.empty()) {
    return InvalidArgument("{}: header names tensor {} twice", path, duplicate);
  }

  for (const auto& [name, info] : root.items()) {
    if (name == kMetadataKey) {
      if (!info.is_object()) {
        return InvalidArgument("{}: __metadata__ = {} is not an object", path, Repr(info));
      }
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) {
          return InvalidArgument("{}: __metadata__.{} = {} is not a string", path, k, Repr(v));
        }
        file.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    // clang 14 cannot capture a structured binding (C++20 allows it; the fuzz build uses clang).
    auto bad = [&path, &tensor = name](std::string_view what) {
      return InvalidArgument("{}: tensor {}: {}", path, tensor, what);
    };
    if (!info.is_object()) return bad(fmt::format("entry {} is not an object", Repr(info)));
    const auto dt = info.find("dtype");
    const auto sh = info.find("shape");
    const auto off = info.find("data_offsets");
    if (dt == info.end() || !dt->is_string()) return bad("missing or non-string \"dtype\"");
    if (sh == info.end() || !sh->is_array()) return bad("missing or non-array \"shape\"");
    if (off == info.end() || !off->is_array()) return bad("missing or non-array \"data_offsets\"");

    Entry e;
    e.dtype_name = dt->get<std::string>();
    const DTypeInfo* d = FindDType(e.dtype_name);
    if (d == nullptr) {
      return bad(fmt::format("unknown dtype \"{}\"", e.dtype_name.substr(0, 40)));
    }
    e.elem_bytes = d->elem_bytes;
    e.supported = d->supported;
    e.dtype = d->dtype;
    for (const json& dim : *sh) {
      uint64_t x = 0;
      if (!AsNonNegative(dim, &x)) {
        return bad(fmt::format("shape {} has a dimension that is not a non-negative integer",
                               Repr(*sh)));
      }
      e.shape.push_back(static_cast<int64_t>(x));
    }
    if (off->size() != 2 || !AsNonNegative((*off)[0], &e.begin) ||
        !AsNonNegative((*off)[1], &e.end)) {
      return bad(fmt::format("data_offsets {} is not two non-negative integers", Repr(*off)));
    }
    if (e.begin > e.end) {
      return bad(fmt::format("data_offsets [{}, {}] has begin > end", e.begin, e.end));
    }
    if (e.end > data_bytes) {
      return DataLoss(
          "{}: tensor {}: data_offsets [{}, {}) end past the {}-byte data section (file "
          "truncated?)",
          path, name, e.begin, e.end, data_bytes);
    }
    uint64_t need = 0;
    if (!ShapeBytes(e.shape, e.elem_bytes, &need)) {
      return bad(fmt::format("shape {} of {} overflows 64-bit byte counts", ShapeText(e.shape),
                             e.dtype_name));
    }
    if (need != e.end - e.begin) {
      return bad(fmt::format("data_offsets [{}, {}) but shape {} of {} needs {} bytes", e.begin,
                             e.end, ShapeText(e.shape), e.dtype_name, need));
    }
    file.entries_.emplace(name, std::move(e));
  }

  // No two non-empty tensors may share a byte.
  std::vector<std::pair<const std::string*, const Entry*>> spans;
  for (const auto& [name, e] : file.entries_) {
    if (e.end > e.begin) spans.emplace_back(&name, &e);
  }
  std::sort(spans.begin(), spans.end(), [](const auto& a, const auto& b) {
    return a.second->begin != b.second->begin ? a.second->begin < b.second->begin
                                              : *a.first < *b.first;
  });
  for (size_t i = 1; i < spans.size(); ++i) {
    const Entry& prev = *spans[i - 1].second;
    const Entry& cur = *spans[i].second;
    if (cur.begin < prev.end) {
      return InvalidArgument("{}: tensors {} [{}, {}) and {} [{}, {}) overlap", path,
                             *spans[i - 1].first, prev.begin, prev.end, *spans[i].first,
                             cur.begin, cur.end);
    }
  }
  return file;
}

Result<TensorRef> SafetensorsFile::Get(std::string_view name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) return NotFound("{}: no tensor named {}", path_, name);
  const Entry& e = it->second;
  if (!e.supported) {
    return InvalidArgument("{}: tensor {} has dtype {}; longctx reads F32, F16 and BF16", path_,
                           name, e.dtype_name);
  }
  TensorRef t;
  t.name = it->first;
  t.dtype = e.dtype;
  t.shape = e.shape;
  t.data = mapping_->base + data_start_ + e.begin;
  t.bytes = static_cast<size_t>(e.end - e.begin);
  return t;
}

bool SafetensorsFile::Contains(std::string_view name) const { return entries_.contains(name); }

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

// ---- OwnedTensor / ModelWeights ---------------------------------------------------------------

TensorRef OwnedTensor::ref() const {
  return TensorRef{name, dtype, shape, data.data(), data.size()};
}

ModelWeights::ModelWeights(ModelWeights&&) noexcept = default;
ModelWeights& ModelWeights::operator=(ModelWeights&&) noexcept = default;
ModelWeights::~ModelWeights() = default;

Result<ModelWeights> ModelWeights::OpenFile(const std::string& path) {
  ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
  ModelWeights w;
  w.source_ = path;
  for (const std::string& name : file.Names()) w.where_.emplace(name, 0);
  w.files_.push_back(std::move(file));
  return w;
}

Result<ModelWeights> ModelWeights::OpenIndex(const std::string& index_path) {
  ASSIGN_OR_RETURN(std::string text, internal::ReadSmallFile(index_path, kMaxIndexBytes));
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    return InvalidArgument("{}: not valid JSON: {}", index_path, JsonErrorText(e));
  }
  if (!root.is_object()) {
    return InvalidArgument("{}: top level is {}, expected a JSON object", index_path,
                           root.type_name());
  }
  const auto map_it = root.find("weight_map");
  if (map_it == root.end() || !map_it->is_object()) {
    return InvalidArgument("{}: missing \"weight_map\" object", index_path);
  }
  const size_t slash = index_path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : index_path.substr(0, slash);

  ModelWeights w;
  w.source_ = index_path;
  std::map<std::string, int, std::less<>> shard_index;
  for (const auto& [tensor, shard] : map_it->items()) {
    if (!shard.is_string()) {
      return InvalidArgument("{}: weight_map.{} = {} is not a file name", index_path, tensor,
                             Repr(shard));
    }
    const auto& file = shard.get_ref<const std::string&>();
    if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
        file.find('\0') != std::string::npos) {
      return InvalidArgument(
          "{}: weight_map.{} = \"{}\" is not a plain file name in the index's directory",
          index_path, tensor, file);
    }
    auto it = shard_index.find(file);
    if (it == shard_index.end()) {
      ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(dir + "/" + file));
      it = shard_index.emplace(file, static_cast<int>(w.files_.size())).first;
      w.files_.push_back(std::move(f));
    }
    if (!w.files_[static_cast<size_t>(it->second)].Contains(tensor)) {
      return InvalidArgument("{}: weight_map places tensor {} in {}, which does not contain it",
                             index_path, tensor, file);
    }
    w.where_.emplace(tensor, it->second);
  }
  return w;
}

Result<ModelWeights> ModelWeights::OpenDir(const std::string& dir) {
  const std::string index = dir + "/model.safetensors.index.json";
  const std::string single = dir + "/model.safetensors";
  if (::access(index.c_str(), F_OK) == 0) return OpenIndex(index);
  if (::access(single.c_str(), F_OK) == 0) return OpenFile(single);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, fmt::format("{}: model dir", dir));
  return NotFound("{}: neither model.safetensors nor model.safetensors.index.json is there", dir);
}

Result<ModelWeights> ModelWeights::FromTensors(std::vector<OwnedTensor> tensors,
                                               std::string source) {
  ModelWeights w;
  w.source_ = std::move(source);
  for (OwnedTensor& t : tensors) {
    if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16) {
      return InvalidArgument("{}: tensor {} has dtype {}; longctx reads F32, F16 and BF16",
                             w.source_, t.name, SafetensorsDTypeName(t.dtype));
    }
    uint64_t need = 0;
    if (!ShapeBytes(t.shape, DTypeSize(t.dtype), &need) || need != t.data.size()) {
      return InvalidArgument("{}: tensor {}: {} bytes of data for shape {} of {}", w.source_,
                             t.name, t.data.size(), ShapeText(t.shape),
                             SafetensorsDTypeName(t.dtype));
    }
    // try_emplace moves nothing when the name is taken, so t.name is intact for the error.
    if (!w.owned_.try_emplace(t.name, std::move(t)).second) {
      return InvalidArgument("{}: tensor {} given twice", w.source_, t.name);
    }
  }
  return w;
}

Result<TensorRef> ModelWeights::Get(std::string_view name) const {
  if (const auto it = where_.find(name); it != where_.end()) {
    return files_[static_cast<size_t>(it->second)].Get(name);
  }
  if (const auto it = owned_.find(name); it != owned_.end()) return it->second.ref();
  return NotFound("{}: missing tensor {}", source_, name);
}

bool ModelWeights::Contains(std::string_view name) const {
  return where_.contains(name) || owned_.contains(name);
}

std::vector<std::string> ModelWeights::Names() const {
  std::vector<std::string> out;
  for (const auto& [name, i] : where_) out.push_back(name);
  for (const auto& [name, t] : owned_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

Status ModelWeights::Require(std::span<const std::string> names) const {
  for (const std::string& name : names) {
    if (!Contains(name)) return NotFound("{}: missing tensor {}", source_, name);
  }
  return Status::Ok();
}

// ---- writer -----------------------------------------------------------------------------------

Status WriteSafetensors(const std::string& path, std::span<const TensorRef> tensors,
                        const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorRef*> order;
  std::set<std::string_view> names;
  for (const TensorRef& t : tensors) {
    if (t.name.empty() || t.name == kMetadataKey) {
      return InvalidArgument("{}: \"{}\" cannot name a tensor", path, t.name);
    }
    if (!names.insert(t.name).second) {
      return InvalidArgument("{}: tensor {} given twice", path, t.name);
    }
    uint64_t need = 0;
    if (!ShapeBytes(t.shape, DTypeSize(t.dtype), &need)) {
      return InvalidArgument("{}: tensor {}: shape {} is negative or overflows", path, t.name,
                             ShapeText(t.shape));
    }
    if (need != t.bytes || (t.bytes > 0 && t.data == nullptr)) {
      return InvalidArgument("{}: tensor {}: {} bytes of data but shape {} of {} needs {}", path,
                             t.name, t.bytes, ShapeText(t.shape), SafetensorsDTypeName(t.dtype),
                             need);
    }
    order.push_back(&t);
  }
  // The order the Rust/Python library writes: dtype descending in its enum order (F16 < BF16 <
  // I32 < F32 < I64, so larger elements come first and every tensor starts at a multiple of its
  // element size), then name.
  auto rank = [](DType t) {
    switch (t) {
      case DType::kF16: return 0;
      case DType::kBF16: return 1;
      case DType::kI32: return 2;
      case DType::kF32: return 3;
      case DType::kI64: return 4;
    }
    return 5;
  };
  std::sort(order.begin(), order.end(), [&](const TensorRef* a, const TensorRef* b) {
    const int ra = rank(a->dtype), rb = rank(b->dtype);
    return ra != rb ? ra > rb : a->name < b->name;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  uint64_t offset = 0;
  for (const TensorRef* t : order) {
    nlohmann::ordered_json entry;
    entry["dtype"] = SafetensorsDTypeName(t->dtype);
    entry["shape"] = t->shape;
    entry["data_offsets"] = {offset, offset + t->bytes};
    header[t->name] = std::move(entry);
    offset += t->bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    return InvalidArgument("{}: cannot encode the header: {}", path, JsonErrorText(e));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data section starts 8-byte aligned
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(uint64_t(text.size()) >> (8 * i));

  ASSIGN_OR_RETURN(internal::AtomicFile file, internal::AtomicFile::Create(path));
  RETURN_IF_ERROR(file.Write(len, 8));
  RETURN_IF_ERROR(file.Write(text.data(), text.size()));
  for (const TensorRef* t : order) RETURN_IF_ERROR(file.Write(t->data, t->bytes));
  return file.Commit();
}

}  // namespace longctx::model
