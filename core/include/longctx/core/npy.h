// NumPy .npy reader/writer: the format longctx takes arrays in and gives them out in
// (DESIGN.md §5: little-endian, C order). Reads format versions 1.0, 2.0 and 3.0, writes 1.0
// (2.0 when the header needs it) byte-identical to numpy's np.save for the same array.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "longctx/core/dtype.h"
#include "longctx/core/file.h"
#include "longctx/core/status.h"

namespace longctx {

// What a .npy header says. Supported descrs: '<f4' (kF32), '<f2' (kF16), '<i4' (kI32),
// '<i8' (kI64). NumPy has no bfloat16, so kBF16 never appears in a file.
struct NpyHeader {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // empty = scalar
  int64_t data_offset = 0;     // bytes from file start to the first element
  int64_t numel() const;       // product of shape in elements (1 for scalar)
};

struct NpyArray {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;   // empty = scalar
  std::vector<std::byte> data;  // numel * DTypeSize(dtype) bytes, C order, little-endian
  int64_t numel() const;        // elements (1 for scalar)
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(data.data());
  }
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data.data());
  }
};

// Every error is one line starting with the path. Codes: a missing file is kNotFound; a file
// that is not a valid supported .npy (bad magic, malformed or oversized header (> 1 MiB),
// unsupported dtype, big-endian, fortran order, negative dims, size overflow, trailing bytes
// after the data) is kInvalidArgument; a file whose data is shorter than its header says is
// kDataLoss.

// Parses and validates the header only (no element is read). The header is also checked
// against the file size, so a truncated or over-long file fails here already.
Result<NpyHeader> ReadNpyHeader(const std::string& path);

// Reads a whole array.
Result<NpyArray> ReadNpy(const std::string& path);

// Reads rows [row_begin, row_end) of axis 0 with a positioned read (pread), not the whole
// file; shape[0] of the result is row_end - row_begin, the other dims are the file's. For
// distributed ranks each reading its own slice. A scalar array is kInvalidArgument; rows
// outside [0, shape[0]] or row_end < row_begin are kOutOfRange. An empty range is allowed.
Result<NpyArray> ReadNpyRows(const std::string& path, int64_t row_begin, int64_t row_end);

// A whole .npy file mapped read-only (mmap, MAP_PRIVATE): the elements are used in place, with
// no copy into a buffer and no zero-filled allocation. The header is validated exactly as
// ReadNpyHeader does (same errors). `populate` pre-faults the page tables in one call
// (MAP_POPULATE) instead of one page fault per 4 KiB touched. The file must not shrink while
// mapped (SIGBUS); longctx only maps inputs it does not write.
class MappedNpy {
 public:
  static Result<MappedNpy> Open(const std::string& path, bool populate = true);
  MappedNpy(MappedNpy&& other) noexcept;
  MappedNpy& operator=(MappedNpy&& other) noexcept;
  MappedNpy(const MappedNpy&) = delete;
  MappedNpy& operator=(const MappedNpy&) = delete;
  ~MappedNpy();

  const NpyHeader& header() const { return header_; }
  const std::byte* data() const;  // the first element (64-byte aligned in numpy's files)
  int64_t data_bytes() const { return data_bytes_; }

 private:
  MappedNpy() = default;
  NpyHeader header_;
  void* base_ = nullptr;  // the mapping of the whole file
  size_t length_ = 0;     // bytes mapped
  int64_t data_bytes_ = 0;
};

// Writes an array in row order as it is produced, atomically: the header, then Append()ed
// rows, into a temporary file that Commit() renames onto `path` (AtomicFile: fsync, rename).
// Each Append starts the write-back of what it wrote (AtomicFile::StartWriteback), so the
// disk works while the caller computes the next rows and Commit's fsync waits only for the
// tail. Commit refuses unless exactly shape[0] rows were appended; destroying an uncommitted
// stream removes the temporary file.
class NpyRowStream {
 public:
  static Result<NpyRowStream> Create(const std::string& path, DType dtype,
                                     const std::vector<int64_t>& shape);
  // `data` holds rows * row_bytes() bytes.
  Status Append(const void* data, int64_t rows);
  Status Commit();
  int64_t row_bytes() const { return row_bytes_; }

 private:
  NpyRowStream(std::string path, AtomicFile file, int64_t rows, int64_t row_bytes)
      : path_(std::move(path)), file_(std::move(file)), rows_(rows), row_bytes_(row_bytes) {}
  std::string path_;
  AtomicFile file_;
  int64_t rows_ = 0;       // shape[0]
  int64_t row_bytes_ = 0;  // bytes per row (product of the other dims x element size)
  int64_t written_ = 0;    // rows appended so far
};

// Writes atomically through AtomicFile (core/file.h: a random temporary name beside `path`,
// fsync, rename, fsync of the directory), so an existing file is never left half-written and
// the temporary file is removed on failure.
// `data` holds numel * DTypeSize(dtype) bytes, C order, little-endian. dtype kF32, kF16
// ('<f2'), kI32, kI64; kBF16 is refused with kInvalidArgument ("npy has no bfloat16 dtype")
// because numpy would read its bits back as a different type.
Status WriteNpy(const std::string& path, DType dtype, const std::vector<int64_t>& shape,
                const void* data);
// As above; array.data must be exactly numel * DTypeSize(dtype) bytes.
Status WriteNpy(const std::string& path, const NpyArray& array);

// Writing one array from several processes, each its own rows (sharded ranks), still
// atomically: the array appears at `path` only once every row is written.
//   1. one process:  CreateNpyForRows(path, dtype, shape) -> writes the header to the staging
//      file NpyStagingPath(path) and sizes it (data zero until written);
//   2. every process: WriteNpyRows(path, row_begin, rows, data) -> pwrite at the row offset;
//   3. one process, after all have written: CommitNpyRows(path) -> rename into place and fsync
//      the directory (each WriteNpyRows fsynced its rows).
// On failure, AbortNpyRows(path) removes the staging file. The staging name does not depend
// on the process, so every rank of a job finds it; CreateNpyForRows therefore removes
// whatever is at that name and creates it anew with O_EXCL|O_NOFOLLOW, and WriteNpyRows
// opens it with O_NOFOLLOW, so a planted symlink cannot redirect the rows.
std::string NpyStagingPath(const std::string& path);
Status CreateNpyForRows(const std::string& path, DType dtype, const std::vector<int64_t>& shape);
Status WriteNpyRows(const std::string& path, int64_t row_begin, int64_t rows, const void* data);
Status CommitNpyRows(const std::string& path);
void AbortNpyRows(const std::string& path);

}  // namespace longctx
