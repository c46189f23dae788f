#include "longctx/core/npy.h"

#include "longctx/core/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <optional>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace longctx {
namespace {

// .npy stores little-endian data and we copy it verbatim.
static_assert(std::endian::native == std::endian::little, "npy I/O assumes a little-endian host");

constexpr std::string_view kMagic("\x93NUMPY", 6);
constexpr int64_t kMaxHeaderBytes = int64_t{1} << 20;  // refuse dict text longer than 1 MiB
constexpr int64_t kArrayAlign = 64;  // numpy pads magic + length + dict to a multiple (bytes)
constexpr int64_t kGrowthAxisMaxDigits = 21;  // numpy's spare spaces for growing shape[0]

// Bytes as a one-line, bounded excerpt for error messages ("\x93NUMPZ", "{'descr'...").
std::string Excerpt(std::string_view s, size_t max_chars = 40) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_chars; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\\' || c == '"') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (s.size() > max_chars) out += "...";
  return out;
}

std::string ShapeRepr(const std::vector<int64_t>& shape) {  // Python's repr of the tuple
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);
  return fmt::format("({})", fmt::join(shape, ", "));
}

// Reads exactly n bytes at byte offset `offset`. The size was checked against fstat, so a
// short read means the file shrank underneath us.
Status PreadFull(int fd, void* buf, int64_t n, int64_t offset, const std::string& path) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const size_t chunk = static_cast<size_t>(std::min<int64_t>(n, int64_t{1} << 30));
    const ssize_t got = ::pread(fd, p, chunk, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(
          errno, fmt::format("{}: read of {} bytes at offset {} failed", path, chunk, offset));
    }
    if (got == 0) {
      return DataLoss(
          "{}: file ended at offset {} while {} more bytes were expected (did it "
          "change while being read?)",
          path, offset, n);
    }
    p += got;
    n -= got;
    offset += got;
  }
  return Status::Ok();
}

// ---- header dict parsing ----------------------------------------------------------------------

struct HeaderDict {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

// Parses the Python literal numpy writes, e.g. "{'descr': '<f4', 'fortran_order': False,
// 'shape': (3, 4), }" followed by padding; any key order, any spacing, single or double quotes,
// optional trailing commas, Python 2 "3L" integers. Messages carry no path; the caller adds it.
class HeaderDictParser {
 public:
  explicit HeaderDictParser(std::string_view text) : s_(text) {}

  Result<HeaderDict> Parse() {
    HeaderDict dict;
    bool have_descr = false, have_fortran = false, have_shape = false;
    SkipSpace();
    if (!Consume('{')) return Error("expected '{' opening the header dict");
    SkipSpace();
    while (!Consume('}')) {
      std::string key;
      RETURN_IF_ERROR(ParseString(&key, "a quoted key"));
      SkipSpace();
      if (!Consume(':')) return Error(fmt::format("expected ':' after key '{}'", Excerpt(key)));
      SkipSpace();
      if (key == "descr") {
        if (have_descr) return Error("duplicate key 'descr'");
        have_descr = true;
        if (Peek() == '[') return Error("descr is a structured dtype (not supported)");
        RETURN_IF_ERROR(ParseString(&dict.descr, "a quoted descr string"));
      } else if (key == "fortran_order") {
        if (have_fortran) return Error("duplicate key 'fortran_order'");
        have_fortran = true;
        RETURN_IF_ERROR(ParseBool(&dict.fortran_order));
      } else if (key == "shape") {
        if (have_shape) return Error("duplicate key 'shape'");
        have_shape = true;
        RETURN_IF_ERROR(ParseShape(&dict.shape));
      } else {
        return Error(fmt::format("unexpected key '{}'", Excerpt(key)));
      }
      SkipSpace();
      if (Consume(',')) {
        SkipSpace();
      } else if (Peek() != '}') {
        return Error("expected ',' or '}' after a value");
      }
    }
    SkipSpace();
    if (pos_ != s_.size()) return Error("unexpected text after the closing '}'");
    if (!have_descr) return Error("missing key 'descr'");
    if (!have_fortran) return Error("missing key 'fortran_order'");
    if (!have_shape) return Error("missing key 'shape'");
    return dict;
  }

 private:
  static bool IsSpace(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  }
  static bool IsDigit(char c) { return c >= '0' && c <= '9'; }
  static bool IsIdentChar(char c) {
    return IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }

  char Peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool AtEnd() const { return pos_ >= s_.size(); }
  void SkipSpace() {
    while (!AtEnd() && IsSpace(s_[pos_])) ++pos_;
  }
  bool Consume(char c) {
    if (AtEnd() || s_[pos_] != c) return false;
    ++pos_;
    return true;
  }

  Status Error(std::string_view what) const {
    const std::string_view rest = s_.substr(std::min(pos_, s_.size()));
    return InvalidArgument("malformed header dict: {} at offset {} (near \"{}\")", what, pos_,
                           rest.empty() ? std::string("<end>") : Excerpt(rest, 24));
  }

  Status ParseString(std::string* out, std::string_view what) {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Error(fmt::format("expected {}", what));
    const size_t start = ++pos_;
    while (!AtEnd() && s_[pos_] != quote) {
      if (s_[pos_] == '\\') return Error("escape sequences in strings are not supported");
      if (s_[pos_] == '\n') return Error("unterminated string");
      ++pos_;
    }
    if (AtEnd()) return Error("unterminated string");
    *out = std::string(s_.substr(start, pos_ - start));
    ++pos_;  // closing quote
    return Status::Ok();
  }

  bool ConsumeWord(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    const size_t end = pos_ + word.size();
    if (end < s_.size() && IsIdentChar(s_[end])) return false;
    pos_ = end;
    return true;
  }

  Status ParseBool(bool* out) {
    if (ConsumeWord("True")) {
      *out = true;
    } else if (ConsumeWord("False")) {
      *out = false;
    } else {
      return Error("fortran_order must be True or False");
    }
    return Status::Ok();
  }

  // A Python int literal, optionally signed; negative values are returned for the caller to
  // reject with a clearer message.
  Status ParseInt(int64_t* out) {
    bool negative = false;
    if (Consume('-')) {
      negative = true;
      SkipSpace();
    } else if (Consume('+')) {
      SkipSpace();
    }
    if (!IsDigit(Peek())) return Error("expected an integer dimension");
    // Accumulate as a negative number so INT64_MIN (never valid, but well-formed) fits.
    int64_t value = 0;
    while (IsDigit(Peek())) {
      const int digit = s_[pos_] - '0';
      if (__builtin_mul_overflow(value, 10, &value) || __builtin_sub_overflow(value, digit, &value))
        return Error("dimension does not fit in 64 bits");
      ++pos_;
    }
    if (Peek() == 'L' || Peek() == 'l') ++pos_;  // Python 2 long suffix (format 1.0/2.0 files)
    if (IsIdentChar(Peek()) || Peek() == '.') return Error("dimension is not an integer");
    if (!negative) {
      if (value == INT64_MIN) return Error("dimension does not fit in 64 bits");
      value = -value;
    }
    *out = value;
    return Status::Ok();
  }

  Status ParseShape(std::vector<int64_t>* shape) {
    if (!Consume('(')) return Error("shape must be a tuple like (3, 4), (5,) or ()");
    SkipSpace();
    bool trailing_comma = false;
    while (!Consume(')')) {
      int64_t dim = 0;
      RETURN_IF_ERROR(ParseInt(&dim));
      shape->push_back(dim);
      SkipSpace();
      trailing_comma = Consume(',');
      SkipSpace();
      if (!trailing_comma && Peek() != ')') return Error("expected ',' or ')' in shape");
    }
    // "(5)" is the int 5 in Python, not a tuple.
    if (shape->size() == 1 && !trailing_comma) {
      return Error("shape (n) is not a tuple; a 1-d shape is written (n,)");
    }
    return Status::Ok();
  }

  std::string_view s_;
  size_t pos_ = 0;
};

struct DescrInfo {
  std::string_view descr;
  DType dtype;
};
constexpr DescrInfo kDescrs[] = {
    {"<f4", DType::kF32}, {"<f2", DType::kF16}, {"<i4", DType::kI32}, {"<i8", DType::kI64}};

std::optional<std::string_view> DescrOf(DType dtype) {
  for (const DescrInfo& d : kDescrs) {
    if (d.dtype == dtype) return d.descr;
  }
  return std::nullopt;
}

// Bytes of `shape` elements of `elem_size` bytes, or nullopt when the product of the non-zero
// dims times elem_size overflows int64 (numpy refuses such shapes even with a zero dim, and so
// do we: the file is nonsense). Dims must be non-negative.
std::optional<int64_t> ShapeBytes(const std::vector<int64_t>& shape, int64_t elem_size) {
  int64_t nonzero_bytes = elem_size;
  bool has_zero = false;
  for (int64_t dim : shape) {
    if (dim == 0) {
      has_zero = true;
      continue;
    }
    if (__builtin_mul_overflow(nonzero_bytes, dim, &nonzero_bytes)) return std::nullopt;
  }
  return has_zero ? 0 : nonzero_bytes;
}

// Checks dims are non-negative and the byte size fits; returns the data size in bytes.
Result<int64_t> ValidateShape(const std::string& path, DType dtype,
                              const std::vector<int64_t>& shape) {
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      return InvalidArgument("{}: negative dimension {} at axis {} of shape {}", path, shape[i], i,
                             ShapeRepr(shape));
    }
  }
  const std::optional<int64_t> bytes = ShapeBytes(shape, static_cast<int64_t>(DTypeSize(dtype)));
  if (!bytes) {
    return InvalidArgument("{}: shape {} of {}-byte elements overflows a 64-bit byte size", path,
                           ShapeRepr(shape), DTypeSize(dtype));
  }
  return *bytes;
}

// An open .npy file with its validated header.
struct OpenNpy {
  UniqueFd fd{-1};
  NpyHeader header;
  int64_t data_bytes = 0;  // bytes of element data after header.data_offset
};

Result<OpenNpy> OpenAndReadHeader(const std::string& path) {
  // O_NONBLOCK so that opening a FIFO by mistake cannot hang; no effect on regular files.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound("{}: no such file", path);
    return ErrnoStatus(err, fmt::format("{}: cannot open", path));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return ErrnoStatus(errno, fmt::format("{}: cannot stat", path));
  }
  if (S_ISDIR(st.st_mode)) return InvalidArgument("{}: is a directory, not a .npy file", path);
  if (!S_ISREG(st.st_mode)) return InvalidArgument("{}: not a regular file", path);
  const int64_t file_size = st.st_size;
  if (file_size == 0) return InvalidArgument("{}: empty file (0 bytes), not a .npy file", path);

  // Prefix: 6-byte magic, major, minor, then a 2-byte (v1) or 4-byte (v2, v3) LE dict length.
  char prefix[12] = {};
  const int64_t prefix_got = std::min<int64_t>(file_size, sizeof(prefix));
  RETURN_IF_ERROR(PreadFull(fd.get(), prefix, prefix_got, 0, path));
  const std::string_view got(prefix, static_cast<size_t>(prefix_got));
  if (got.substr(0, kMagic.size()) != kMagic) {
    return InvalidArgument("{}: not a .npy file: bad magic \"{}\" (expected \"\\x93NUMPY\")", path,
                           Excerpt(got.substr(0, kMagic.size())));
  }
  if (file_size < 8) {
    return InvalidArgument("{}: truncated header: file is {} bytes, ends inside the version", path,
                           file_size);
  }
  const int major = static_cast<unsigned char>(prefix[6]);
  const int minor = static_cast<unsigned char>(prefix[7]);
  if (major < 1 || major > 3 || minor != 0) {
    return InvalidArgument("{}: unsupported .npy format version {}.{} (supported: 1.0, 2.0, 3.0)",
                           path, major, minor);
  }
  const int64_t len_field_bytes = major == 1 ? 2 : 4;
  const int64_t prefix_bytes = 8 + len_field_bytes;
  if (file_size < prefix_bytes) {
    return InvalidArgument(
        "{}: truncated header: file is {} bytes, the header-length field of "
        "format {}.0 ends at byte {}",
        path, file_size, major, prefix_bytes);
  }
  const auto* u = reinterpret_cast<const unsigned char*>(prefix);
  int64_t dict_bytes = int64_t{u[8]} | int64_t{u[9]} << 8;
  if (major > 1) dict_bytes |= int64_t{u[10]} << 16 | int64_t{u[11]} << 24;
  if (dict_bytes > kMaxHeaderBytes) {
    return InvalidArgument("{}: header length {} bytes exceeds the {}-byte limit", path, dict_bytes,
                           kMaxHeaderBytes);
  }
  if (prefix_bytes + dict_bytes > file_size) {
    return InvalidArgument(
        "{}: truncated header: header length says {} bytes, file has {} "
        "after the {}-byte prefix",
        path, dict_bytes, file_size - prefix_bytes, prefix_bytes);
  }
  // dict_bytes <= 1 MiB and within the file: safe to allocate.
  std::string dict_text(static_cast<size_t>(dict_bytes), '\0');
  RETURN_IF_ERROR(PreadFull(fd.get(), dict_text.data(), dict_bytes, prefix_bytes, path));

  Result<HeaderDict> parsed = HeaderDictParser(dict_text).Parse();
  if (!parsed.ok()) return parsed.status().WithContext(path);
  const HeaderDict& dict = parsed.value();

  OpenNpy out{std::move(fd), NpyHeader{}, 0};
  bool known = false;
  for (const DescrInfo& d : kDescrs) {
    if (dict.descr == d.descr) {
      out.header.dtype = d.dtype;
      known = true;
    }
  }
  if (!known) {
    if (!dict.descr.empty() && dict.descr[0] == '>') {
      return InvalidArgument("{}: big-endian arrays are not supported (descr '{}')", path,
                             Excerpt(dict.descr));
    }
    return InvalidArgument(
        "{}: unsupported dtype descr '{}'; supported: '<f4' (f32), '<f2' "
        "(f16), '<i4' (i32), '<i8' (i64)",
        path, Excerpt(dict.descr));
  }
  if (dict.fortran_order) {
    return InvalidArgument(
        "{}: fortran_order arrays are not supported (save with C order, e.g. "
        "np.ascontiguousarray)",
        path);
  }
  out.header.shape = dict.shape;
  out.header.data_offset = prefix_bytes + dict_bytes;
  ASSIGN_OR_RETURN(out.data_bytes, ValidateShape(path, out.header.dtype, out.header.shape));

  const int64_t available = file_size - out.header.data_offset;
  if (available < out.data_bytes) {
    return DataLoss("{}: truncated data: expected {} bytes after the header, file has {}", path,
                    out.data_bytes, available);
  }
  if (available > out.data_bytes) {
    return InvalidArgument("{}: {} trailing bytes after the data (shape {} of {} needs {} bytes)",
                           path, available - out.data_bytes, ShapeRepr(out.header.shape),
                           DTypeName(out.header.dtype), out.data_bytes);
  }
  return out;
}

// Allocates `bytes` (already validated against the file size) without letting bad_alloc
// escape.
Status Allocate(std::vector<std::byte>* data, int64_t bytes, const std::string& path) {
  try {
    data->resize(static_cast<size_t>(bytes));
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("{}: cannot allocate {} bytes for the array", path, bytes));
  } catch (const std::length_error&) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("{}: cannot allocate {} bytes for the array", path, bytes));
  }
  return Status::Ok();
}

// The complete header numpy's np.save writes for this array: magic, version, length, the dict
// with 21 - len(repr(shape[0])) spare spaces, padding to 64 bytes, '\n'. Format 1.0 unless the
// header exceeds its 16-bit length field.
Result<std::string> BuildHeader(const std::string& path, std::string_view descr,
                                const std::vector<int64_t>& shape) {
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr,
                                 ShapeRepr(shape));
  if (!shape.empty()) {
    const int64_t digits = static_cast<int64_t>(fmt::formatted_size("{}", shape[0]));
    dict.append(static_cast<size_t>(std::max<int64_t>(0, kGrowthAxisMaxDigits - digits)), ' ');
  }
  for (int major = 1; major <= 2; ++major) {
    const int64_t prefix_bytes = major == 1 ? 10 : 12;
    const int64_t text_bytes = static_cast<int64_t>(dict.size()) + 1;  // + '\n'
    const int64_t pad = kArrayAlign - (prefix_bytes + text_bytes) % kArrayAlign;
    const int64_t dict_bytes = text_bytes + pad;
    if (major == 1 && dict_bytes > 0xffff) continue;
    if (dict_bytes > kMaxHeaderBytes) {
      return InvalidArgument(
          "{}: the header for shape of {} dims would be {} bytes, over the "
          "{}-byte limit readers accept",
          path, shape.size(), dict_bytes, kMaxHeaderBytes);
    }
    std::string header(kMagic);
    header += static_cast<char>(major);
    header += '\0';
    for (int64_t i = 0; i < prefix_bytes - 8; ++i) {
      header += static_cast<char>((dict_bytes >> (8 * i)) & 0xff);
    }
    header += dict;
    header.append(static_cast<size_t>(pad), ' ');
    header += '\n';
    return header;
  }
  return Internal("{}: unreachable header size", path);
}

}  // namespace

int64_t NpyHeader::numel() const {
  // Unsigned so that a hand-built bogus shape wraps instead of being undefined behaviour;
  // shapes from ReadNpyHeader never overflow.
  uint64_t n = 1;
  for (int64_t dim : shape) n *= static_cast<uint64_t>(dim);
  return static_cast<int64_t>(n);
}

int64_t NpyArray::numel() const {
  uint64_t n = 1;
  for (int64_t dim : shape) n *= static_cast<uint64_t>(dim);
  return static_cast<int64_t>(n);
}

Result<NpyHeader> ReadNpyHeader(const std::string& path) {
  ASSIGN_OR_RETURN(OpenNpy file, OpenAndReadHeader(path));
  return file.header;
}

Result<NpyArray> ReadNpy(const std::string& path) {
  ASSIGN_OR_RETURN(OpenNpy file, OpenAndReadHeader(path));
  NpyArray array;
  array.dtype = file.header.dtype;
  array.shape = file.header.shape;
  RETURN_IF_ERROR(Allocate(&array.data, file.data_bytes, path));
  RETURN_IF_ERROR(
      PreadFull(file.fd.get(), array.data.data(), file.data_bytes, file.header.data_offset, path));
  return array;
}

Result<NpyArray> ReadNpyRows(const std::string& path, int64_t row_begin, int64_t row_end) {
  ASSIGN_OR_RETURN(OpenNpy file, OpenAndReadHeader(path));
  const NpyHeader& h = file.header;
  if (h.shape.empty()) {
    return InvalidArgument("{}: cannot read rows of a scalar (0-d) array", path);
  }
  if (row_begin < 0 || row_end < row_begin || row_end > h.shape[0]) {
    return OutOfRange("{}: rows [{}, {}) out of range for shape[0] = {}", path, row_begin, row_end,
                      h.shape[0]);
  }
  // Bytes per row: partial products never exceed the validated total, so no overflow.
  int64_t row_bytes = static_cast<int64_t>(DTypeSize(h.dtype));
  for (size_t i = 1; i < h.shape.size(); ++i) row_bytes *= h.shape[i];
  const int64_t rows = row_end - row_begin;

  NpyArray array;
  array.dtype = h.dtype;
  array.shape = h.shape;
  array.shape[0] = rows;
  RETURN_IF_ERROR(Allocate(&array.data, rows * row_bytes, path));
  RETURN_IF_ERROR(PreadFull(file.fd.get(), array.data.data(), rows * row_bytes,
                            h.data_offset + row_begin * row_bytes, path));
  return array;
}

Status WriteNpy(const std::string& path, DType dtype, const std::vector<int64_t>& shape,
                const void* data) {
  if (dtype == DType::kBF16) {
    return InvalidArgument("{}: npy has no bfloat16 dtype; convert to f32 or f16 first", path);
  }
  const std::optional<std::string_view> descr = DescrOf(dtype);
  if (!descr) {
    return InvalidArgument("{}: dtype {} cannot be written to .npy", path, DTypeName(dtype));
  }
  ASSIGN_OR_RETURN(const int64_t data_bytes, ValidateShape(path, dtype, shape));
  if (data == nullptr && data_bytes > 0) {
    return InvalidArgument("{}: null data for {} bytes of shape {}", path, data_bytes,
                           ShapeRepr(shape));
  }
  ASSIGN_OR_RETURN(const std::string header, BuildHeader(path, *descr, shape));

  ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path));
  RETURN_IF_ERROR(file.Write(header.data(), header.size()));
  RETURN_IF_ERROR(file.Write(data, static_cast<size_t>(data_bytes)));
  return file.Commit();
}

Status WriteNpy(const std::string& path, const NpyArray& array) {
  if (array.dtype == DType::kBF16) {
    return InvalidArgument("{}: npy has no bfloat16 dtype; convert to f32 or f16 first", path);
  }
  ASSIGN_OR_RETURN(const int64_t data_bytes, ValidateShape(path, array.dtype, array.shape));
  if (static_cast<int64_t>(array.data.size()) != data_bytes) {
    return InvalidArgument("{}: array has {} data bytes but shape {} of {} needs {}", path,
                           array.data.size(), ShapeRepr(array.shape), DTypeName(array.dtype),
                           data_bytes);
  }
  return WriteNpy(path, array.dtype, array.shape, array.data.data());
}

// ---- MappedNpy ---------------------------------------------------------------------------

Result<MappedNpy> MappedNpy::Open(const std::string& path, bool populate) {
  ASSIGN_OR_RETURN(OpenNpy file, OpenAndReadHeader(path));
  MappedNpy m;
  m.header_ = file.header;
  m.data_bytes_ = file.data_bytes;
  m.length_ = static_cast<size_t>(file.header.data_offset + file.data_bytes);
  void* base = ::mmap(nullptr, m.length_, PROT_READ, MAP_PRIVATE | (populate ? MAP_POPULATE : 0),
                      file.fd.get(), 0);
  if (base == MAP_FAILED) return ErrnoStatus(errno, fmt::format("{}: cannot map", path));
  m.base_ = base;
  return m;
}

MappedNpy::MappedNpy(MappedNpy&& other) noexcept
    : header_(std::move(other.header_)),
      base_(std::exchange(other.base_, nullptr)),
      length_(std::exchange(other.length_, 0)),
      data_bytes_(std::exchange(other.data_bytes_, 0)) {}

MappedNpy& MappedNpy::operator=(MappedNpy&& other) noexcept {
  if (this != &other) {
    if (base_) ::munmap(base_, length_);
    header_ = std::move(other.header_);
    base_ = std::exchange(other.base_, nullptr);
    length_ = std::exchange(other.length_, 0);
    data_bytes_ = std::exchange(other.data_bytes_, 0);
  }
  return *this;
}

MappedNpy::~MappedNpy() {
  if (base_) ::munmap(base_, length_);
}

const std::byte* MappedNpy::data() const {
  return static_cast<const std::byte*>(base_) + header_.data_offset;
}

// ---- NpyRowStream ------------------------------------------------------------------------

Result<NpyRowStream> NpyRowStream::Create(const std::string& path, DType dtype,
                                          const std::vector<int64_t>& shape) {
  const std::optional<std::string_view> descr = DescrOf(dtype);
  if (dtype == DType::kBF16 || !descr) {
    return InvalidArgument("{}: dtype {} cannot be written to .npy", path, DTypeName(dtype));
  }
  if (shape.empty()) return InvalidArgument("{}: a row-written array needs >= 1 dimension", path);
  RETURN_IF_ERROR(ValidateShape(path, dtype, shape).status());
  ASSIGN_OR_RETURN(const std::string header, BuildHeader(path, *descr, shape));
  int64_t row_bytes = static_cast<int64_t>(DTypeSize(dtype));
  for (size_t i = 1; i < shape.size(); ++i) row_bytes *= shape[i];
  ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path));
  RETURN_IF_ERROR(file.Write(header.data(), header.size()));
  return NpyRowStream(path, std::move(file), shape[0], row_bytes);
}

Status NpyRowStream::Append(const void* data, int64_t rows) {
  if (rows < 0 || written_ + rows > rows_) {
    return OutOfRange("{}: appending {} rows after {} exceeds shape[0] = {}", path_, rows,
                      written_, rows_);
  }
  RETURN_IF_ERROR(file_.Write(data, static_cast<size_t>(rows * row_bytes_)));
  written_ += rows;
  return file_.StartWriteback();
}

Status NpyRowStream::Commit() {
  if (written_ != rows_) {
    return FailedPrecondition("{}: {} of {} rows written; not committing a partial array", path_,
                              written_, rows_);
  }
  return file_.Commit();
}

std::string NpyStagingPath(const std::string& path) { return path + ".partial"; }

Status CreateNpyForRows(const std::string& path, DType dtype, const std::vector<int64_t>& shape) {
  const std::optional<std::string_view> descr = DescrOf(dtype);
  if (dtype == DType::kBF16 || !descr) {
    return InvalidArgument("{}: dtype {} cannot be written to .npy", path, DTypeName(dtype));
  }
  if (shape.empty()) return InvalidArgument("{}: a row-written array needs >= 1 dimension", path);
  ASSIGN_OR_RETURN(const int64_t data_bytes, ValidateShape(path, dtype, shape));
  ASSIGN_OR_RETURN(const std::string header, BuildHeader(path, *descr, shape));
  const std::string staging = NpyStagingPath(path);
  // The staging name is fixed (every rank must find it without a message), so it is made
  // exclusively: whatever a killed run or anyone else left there (a symlink included) is
  // unlinked, and O_EXCL|O_NOFOLLOW then creates a new inode of ours or fails.
  if (::unlink(staging.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, fmt::format("{}: cannot remove the stale staging file {}", path,
                                          staging));
  }
  UniqueFd fd(
      ::open(staging.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666));
  if (fd.get() < 0) {
    return ErrnoStatus(errno, fmt::format("{}: cannot create staging file {}", path, staging));
  }
  Status st = WriteAll(fd.get(), header.data(), header.size(),
                       fmt::format("{} (staging file {})", path, staging));
  if (st.ok() && ::ftruncate(fd.get(), static_cast<off_t>(header.size()) + data_bytes) != 0) {
    st = ErrnoStatus(errno, fmt::format("{}: cannot size staging file {}", path, staging));
  }
  if (fd.Close() != 0 && st.ok()) {
    st = ErrnoStatus(errno, fmt::format("{}: close of {} failed", path, staging));
  }
  if (!st.ok()) ::unlink(staging.c_str());
  return st;
}

Status WriteNpyRows(const std::string& path, int64_t row_begin, int64_t rows, const void* data) {
  const std::string staging = NpyStagingPath(path);
  ASSIGN_OR_RETURN(OpenNpy file, OpenAndReadHeader(staging));
  const NpyHeader& h = file.header;
  if (row_begin < 0 || rows < 0 || row_begin + rows > h.shape[0]) {
    return OutOfRange("{}: rows [{}, {}) out of range for shape[0] = {}", path, row_begin,
                      row_begin + rows, h.shape[0]);
  }
  if (rows == 0) return Status::Ok();
  int64_t row_bytes = static_cast<int64_t>(DTypeSize(h.dtype));
  for (size_t i = 1; i < h.shape.size(); ++i) row_bytes *= h.shape[i];
  UniqueFd fd(::open(staging.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, fmt::format("{}: cannot open {}", path, staging));
  const auto* p = static_cast<const std::byte*>(data);
  int64_t left = rows * row_bytes, off = h.data_offset + row_begin * row_bytes;
  while (left > 0) {
    const ssize_t w = ::pwrite(fd.get(), p, static_cast<size_t>(std::min<int64_t>(left, 1 << 30)),
                               static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return ErrnoStatus(errno, fmt::format("{}: write to {} failed", path, staging));
    p += w;
    off += w;
    left -= w;
  }
  if (::fsync(fd.get()) != 0) {
    return ErrnoStatus(errno, fmt::format("{}: fsync of {} failed", path, staging));
  }
  if (fd.Close() != 0) return ErrnoStatus(errno, fmt::format("{}: close of {} failed", path, staging));
  return Status::Ok();
}

Status CommitNpyRows(const std::string& path) {
  const std::string staging = NpyStagingPath(path);
  RETURN_IF_ERROR(OpenAndReadHeader(staging).status());  // still a whole, valid file
  if (::rename(staging.c_str(), path.c_str()) != 0) {
    return ErrnoStatus(errno, fmt::format("{}: cannot rename {} into place", path, staging));
  }
  return FsyncDirectory(ParentDirectory(path));  // the rows were fsynced by each writer
}

void AbortNpyRows(const std::string& path) { ::unlink(NpyStagingPath(path).c_str()); }

}  // namespace longctx
