// Tests for the .npy reader/writer: round trips, byte-exact numpy compatibility, row slices,
// and that every malformed file yields the right code with a one-line message naming the path.
#include "longctx/core/npy.h"

#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "longctx/test/temp_dir.h"
#include "longctx/test/status_matchers.h"

namespace longctx {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

// np.save(f, (np.arange(6, dtype='<f4').reshape(2, 3) * 0.5 - 1)) with numpy 1.24: 128-byte
// header, then [-1, -0.5, 0, 0.5, 1, 1.5].
constexpr std::string_view kNumpyF32x2x3Hex =
    "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a20"
    "46616c73652c20277368617065273a2028322c2033292c207d20202020202020202020202020202020202020"
    "2020202020202020202020202020202020202020202020202020202020202020202020202020200a000080bf"
    "000000bf000000000000003f0000803f0000c03f";
// np.save(f, np.array([1, -2, 3], dtype='<i8')).
constexpr std::string_view kNumpyI64x3Hex =
    "934e554d5059010076007b276465736372273a20273c6938272c2027666f727472616e5f6f72646572273a20"
    "46616c73652c20277368617065273a2028332c292c207d202020202020202020202020202020202020202020"
    "2020202020202020202020202020202020202020202020202020202020202020202020202020200a01000000"
    "00000000feffffffffffffff0300000000000000";
// np.save(f, np.float16(1.5)): a 0-d array.
constexpr std::string_view kNumpyF16ScalarHex =
    "934e554d5059010076007b276465736372273a20273c6632272c2027666f727472616e5f6f72646572273a20"
    "46616c73652c20277368617065273a2028292c207d2020202020202020202020202020202020202020202020"
    "2020202020202020202020202020202020202020202020202020202020202020202020202020200a003e";
// np.save(f, np.zeros((0, 4), dtype='<i4')): header only.
constexpr std::string_view kNumpyI32x0x4Hex =
    "934e554d5059010076007b276465736372273a20273c6934272c2027666f727472616e5f6f72646572273a20"
    "46616c73652c20277368617065273a2028302c2034292c207d20202020202020202020202020202020202020"
    "2020202020202020202020202020202020202020202020202020202020202020202020202020200a";

std::string FromHex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  }
  return out;
}

// A .npy file with an arbitrary dict text (not padded), for header-parsing cases.
std::string MakeNpy(std::string_view dict, std::string_view data, int major = 1) {
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  const size_t n = dict.size();
  const int len_bytes = major == 1 ? 2 : 4;
  for (int i = 0; i < len_bytes; ++i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  out += dict;
  out += data;
  return out;
}

std::string F32Dict(std::string_view shape) {
  return fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}\n", shape);
}

template <typename T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.empty()) << "no temporary directory"; }

  std::string Path(std::string_view name) const { return (dir_ / name).string(); }

  std::string WriteFile(std::string_view name, std::string_view bytes) const {
    const std::string path = Path(name);
    std::ofstream f(path, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(f.good());
    return path;
  }

  static std::string ReadFile(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }

  std::vector<std::string> DirEntries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

  // Every reader must reject `path` with `code`, a one-line message that starts with the path
  // and contains `substr`.
  static void ExpectReadError(const std::string& path, StatusCode code, std::string_view substr) {
    const Status statuses[] = {ReadNpyHeader(path).status(), ReadNpy(path).status(),
                               ReadNpyRows(path, 0, 0).status()};
    for (const Status& st : statuses) {
      EXPECT_EQ(st.code(), code) << st.ToString();
      EXPECT_TRUE(st.message().starts_with(path + ": ")) << st.message();
      EXPECT_NE(st.message().find(substr), std::string::npos)
          << "'" << substr << "' not in: " << st.message();
      EXPECT_EQ(st.message().find('\n'), std::string::npos) << st.message();
    }
  }

  test::TempDir tmp_{"npy_test"};
  const fs::path dir_ = tmp_.path();
};

// ---- round trips --------------------------------------------------------------------------------

TEST_F(NpyTest, RoundTripEveryDtypeAndShape) {
  const DType dtypes[] = {DType::kF32, DType::kF16, DType::kI32, DType::kI64};
  const std::vector<std::vector<int64_t>> shapes = {{}, {1}, {7}, {2, 3, 4}, {0}, {3, 0, 2}};
  int file_index = 0;
  for (DType dtype : dtypes) {
    for (const auto& shape : shapes) {
      SCOPED_TRACE(fmt::format("{} shape ({})", DTypeName(dtype), fmt::join(shape, ", ")));
      NpyArray in;
      in.dtype = dtype;
      in.shape = shape;
      in.data.resize(static_cast<size_t>(in.numel()) * DTypeSize(dtype));
      for (size_t i = 0; i < in.data.size(); ++i) in.data[i] = std::byte((i * 37 + 11) & 0xff);

      const std::string path = Path(fmt::format("a{}.npy", file_index++));
      ASSERT_OK(WriteNpy(path, in));

      Result<NpyHeader> header = ReadNpyHeader(path);
      ASSERT_OK(header);
      EXPECT_EQ(header->dtype, dtype);
      EXPECT_EQ(header->shape, shape);
      EXPECT_EQ(header->numel(), in.numel());
      EXPECT_EQ(header->data_offset, 128);  // numpy's layout for small headers
      EXPECT_EQ(static_cast<int64_t>(fs::file_size(path)),
                128 + in.numel() * static_cast<int64_t>(DTypeSize(dtype)));

      Result<NpyArray> out = ReadNpy(path);
      ASSERT_OK(out);
      EXPECT_EQ(out->dtype, dtype);
      EXPECT_EQ(out->shape, shape);
      EXPECT_EQ(out->data, in.data);
    }
  }
}

TEST_F(NpyTest, TypedRoundTripThroughPointerOverload) {
  const std::vector<float> f32 = {1.f, -2.5f, 3.25f, 0.f, -0.f, 1e30f};
  const std::string path = Path("f.npy");
  ASSERT_OK(WriteNpy(path, DType::kF32, {3, 2}, f32.data()));
  Result<NpyArray> a = ReadNpy(path);
  ASSERT_OK(a);
  EXPECT_EQ(a->numel(), 6);
  EXPECT_EQ(std::vector<float>(a->as<float>(), a->as<float>() + 6), f32);

  const std::vector<uint16_t> f16 = {FloatToHalf(1.5f), FloatToHalf(-65504.f)};
  ASSERT_OK(WriteNpy(path, DType::kF16, {2}, f16.data()));
  a = ReadNpy(path);
  ASSERT_OK(a);
  EXPECT_EQ(HalfToFloat(a->as<uint16_t>()[0]), 1.5f);
  EXPECT_EQ(HalfToFloat(a->as<uint16_t>()[1]), -65504.f);

  // A zero-element array may be written from a null pointer.
  ASSERT_OK(WriteNpy(path, DType::kI64, {4, 0}, nullptr));
  a = ReadNpy(path);
  ASSERT_OK(a);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{4, 0}));
  EXPECT_TRUE(a->data.empty());
}

// ---- numpy compatibility ------------------------------------------------------------------------

TEST_F(NpyTest, ReadsNumpyWrittenFilesAndWritesIdenticalBytes) {
  {
    const std::string bytes = FromHex(kNumpyF32x2x3Hex);
    ASSERT_EQ(bytes.size(), 152u);
    const std::string path = WriteFile("np_f32.npy", bytes);
    Result<NpyArray> a = ReadNpy(path);
    ASSERT_OK(a);
    EXPECT_EQ(a->dtype, DType::kF32);
    EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
    const std::vector<float> want = {-1.f, -0.5f, 0.f, 0.5f, 1.f, 1.5f};
    EXPECT_EQ(std::vector<float>(a->as<float>(), a->as<float>() + 6), want);
    const std::string mine = Path("mine_f32.npy");
    ASSERT_OK(WriteNpy(mine, DType::kF32, {2, 3}, want.data()));
    EXPECT_EQ(ReadFile(mine), bytes);
  }
  {
    const std::string bytes = FromHex(kNumpyI64x3Hex);
    const std::string path = WriteFile("np_i64.npy", bytes);
    Result<NpyArray> a = ReadNpy(path);
    ASSERT_OK(a);
    EXPECT_EQ(a->dtype, DType::kI64);
    EXPECT_EQ(a->shape, (std::vector<int64_t>{3}));
    const std::vector<int64_t> want = {1, -2, 3};
    EXPECT_EQ(std::vector<int64_t>(a->as<int64_t>(), a->as<int64_t>() + 3), want);
    const std::string mine = Path("mine_i64.npy");
    ASSERT_OK(WriteNpy(mine, DType::kI64, {3}, want.data()));
    EXPECT_EQ(ReadFile(mine), bytes);
  }
  {
    const std::string bytes = FromHex(kNumpyF16ScalarHex);
    const std::string path = WriteFile("np_f16.npy", bytes);
    Result<NpyArray> a = ReadNpy(path);
    ASSERT_OK(a);
    EXPECT_EQ(a->dtype, DType::kF16);
    EXPECT_TRUE(a->shape.empty());
    EXPECT_EQ(a->numel(), 1);
    EXPECT_EQ(HalfToFloat(a->as<uint16_t>()[0]), 1.5f);
    const std::string mine = Path("mine_f16.npy");
    const uint16_t h = FloatToHalf(1.5f);
    ASSERT_OK(WriteNpy(mine, DType::kF16, {}, &h));
    EXPECT_EQ(ReadFile(mine), bytes);
  }
  {
    const std::string bytes = FromHex(kNumpyI32x0x4Hex);
    const std::string path = WriteFile("np_i32.npy", bytes);
    Result<NpyArray> a = ReadNpy(path);
    ASSERT_OK(a);
    EXPECT_EQ(a->dtype, DType::kI32);
    EXPECT_EQ(a->shape, (std::vector<int64_t>{0, 4}));
    EXPECT_TRUE(a->data.empty());
    const std::string mine = Path("mine_i32.npy");
    ASSERT_OK(WriteNpy(mine, DType::kI32, {0, 4}, nullptr));
    EXPECT_EQ(ReadFile(mine), bytes);
  }
}

TEST_F(NpyTest, ReadsFormatVersions2And3) {
  const std::vector<float> data = {1, 2, 3, 4, 5, 6};
  for (int major : {2, 3}) {
    SCOPED_TRACE(major);
    const std::string path =
        WriteFile(fmt::format("v{}.npy", major), MakeNpy(F32Dict("(2, 3)"), Bytes(data), major));
    Result<NpyHeader> h = ReadNpyHeader(path);
    ASSERT_OK(h);
    EXPECT_EQ(h->data_offset, 12 + static_cast<int64_t>(F32Dict("(2, 3)").size()));
    Result<NpyArray> a = ReadNpy(path);
    ASSERT_OK(a);
    EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(std::vector<float>(a->as<float>(), a->as<float>() + 6), data);
  }
}

TEST_F(NpyTest, WritesVersion2WhenTheHeaderNeedsIt) {
  // 22000 dims of size 1: "1, " per dim makes the dict longer than format 1.0's 65535 bytes.
  const std::vector<int64_t> shape(22000, 1);
  const int32_t value = 42;
  const std::string path = Path("v2.npy");
  ASSERT_OK(WriteNpy(path, DType::kI32, shape, &value));
  const std::string bytes = ReadFile(path);
  ASSERT_GT(bytes.size(), 12u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x02\x00", 8));
  Result<NpyHeader> h = ReadNpyHeader(path);
  ASSERT_OK(h);
  EXPECT_GT(h->data_offset, 65535);
  EXPECT_EQ(h->data_offset % 64, 0);
  EXPECT_EQ(h->shape, shape);
  Result<NpyArray> a = ReadNpy(path);
  ASSERT_OK(a);
  EXPECT_EQ(a->as<int32_t>()[0], 42);

  // Small headers stay at format 1.0.
  ASSERT_OK(WriteNpy(path, DType::kI32, {1}, &value));
  EXPECT_EQ(ReadFile(path).substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
}

TEST_F(NpyTest, ParsesHeaderDictVariants) {
  const std::vector<float> data = {1, 2, 3, 4, 5, 6};
  struct Case {
    std::string dict;
    std::vector<int64_t> shape;
  };
  const std::vector<Case> cases = {
      {"{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}", {2, 3}},
      {"{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3)}\n", {2, 3}},
      {"  {  'descr' :'<f4' ,\n\t'fortran_order':False,'shape':( 6 , ) , }   \n", {6}},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", {2, 3}},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3,), }", {1, 2, 3}},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (+6,), }", {6}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].dict);
    const std::string path =
        WriteFile(fmt::format("d{}.npy", i), MakeNpy(cases[i].dict, Bytes(data)));
    Result<NpyArray> a = ReadNpy(path);
    ASSERT_OK(a);
    EXPECT_EQ(a->shape, cases[i].shape);
    EXPECT_EQ(std::vector<float>(a->as<float>(), a->as<float>() + 6), data);
  }
  // Scalar: "()".
  const float one = 1.f;
  const std::string path =
      WriteFile("s.npy", MakeNpy(F32Dict("()"), Bytes(std::vector<float>{one})));
  Result<NpyArray> a = ReadNpy(path);
  ASSERT_OK(a);
  EXPECT_TRUE(a->shape.empty());
  EXPECT_EQ(a->as<float>()[0], 1.f);
}

// ---- row slices ---------------------------------------------------------------------------------

TEST_F(NpyTest, ReadNpyRowsSlicesAxis0) {
  std::vector<int32_t> data(5 * 2 * 3);
  std::iota(data.begin(), data.end(), 0);
  const std::string path = Path("rows.npy");
  ASSERT_OK(WriteNpy(path, DType::kI32, {5, 2, 3}, data.data()));
  struct Slice {
    int64_t begin, end;
  };
  for (const Slice s : {Slice{0, 5}, Slice{1, 3}, Slice{4, 5}, Slice{2, 2}, Slice{5, 5}}) {
    SCOPED_TRACE(fmt::format("[{}, {})", s.begin, s.end));
    Result<NpyArray> a = ReadNpyRows(path, s.begin, s.end);
    ASSERT_OK(a);
    EXPECT_EQ(a->dtype, DType::kI32);
    EXPECT_EQ(a->shape, (std::vector<int64_t>{s.end - s.begin, 2, 3}));
    const std::vector<int32_t> want(data.begin() + s.begin * 6, data.begin() + s.end * 6);
    EXPECT_EQ(std::vector<int32_t>(a->as<int32_t>(), a->as<int32_t>() + a->numel()), want);
  }
  for (const Slice s : {Slice{-1, 2}, Slice{3, 2}, Slice{0, 6}, Slice{6, 6}}) {
    SCOPED_TRACE(fmt::format("[{}, {})", s.begin, s.end));
    const Status st = ReadNpyRows(path, s.begin, s.end).status();
    EXPECT_EQ(st.code(), StatusCode::kOutOfRange) << st.ToString();
    EXPECT_TRUE(st.message().starts_with(path + ": ")) << st.message();
  }

  // 1-D, and rows of zero-sized elements.
  const std::string path1 = Path("rows1.npy");
  const std::vector<int64_t> v = {10, 20, 30, 40};
  ASSERT_OK(WriteNpy(path1, DType::kI64, {4}, v.data()));
  Result<NpyArray> b = ReadNpyRows(path1, 1, 3);
  ASSERT_OK(b);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(b->as<int64_t>()[0], 20);
  EXPECT_EQ(b->as<int64_t>()[1], 30);
  const std::string path0 = Path("rows0.npy");
  ASSERT_OK(WriteNpy(path0, DType::kF32, {3, 0}, nullptr));
  b = ReadNpyRows(path0, 1, 3);
  ASSERT_OK(b);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{2, 0}));
  EXPECT_TRUE(b->data.empty());

  // A scalar has no rows.
  const std::string scalar = Path("scalar.npy");
  const float f = 3.f;
  ASSERT_OK(WriteNpy(scalar, DType::kF32, {}, &f));
  const Status st = ReadNpyRows(scalar, 0, 0).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(st.message().starts_with(scalar + ": ")) << st.message();
}

// ---- malformed files ----------------------------------------------------------------------------

TEST_F(NpyTest, MissingFileIsNotFound) {
  ExpectReadError(Path("nope.npy"), StatusCode::kNotFound, "no such file");
}

TEST_F(NpyTest, EmptyFile) {
  ExpectReadError(WriteFile("empty.npy", ""), StatusCode::kInvalidArgument, "empty file");
}

TEST_F(NpyTest, DirectoryIsNotAFile) {
  fs::create_directory(dir_ / "sub.npy");
  ExpectReadError(Path("sub.npy"), StatusCode::kInvalidArgument, "directory");
}

TEST_F(NpyTest, BadMagic) {
  std::string bytes = FromHex(kNumpyF32x2x3Hex);
  bytes[5] = 'Z';
  ExpectReadError(WriteFile("magic.npy", bytes), StatusCode::kInvalidArgument, "bad magic");
  ExpectReadError(WriteFile("text.npy", "hello world, this is not numpy\n"),
                  StatusCode::kInvalidArgument, "bad magic");
  ExpectReadError(WriteFile("short.npy", "\x93NUM"), StatusCode::kInvalidArgument, "bad magic");
}

TEST_F(NpyTest, UnsupportedVersion) {
  std::string bytes = FromHex(kNumpyF32x2x3Hex);
  bytes[6] = 4;
  ExpectReadError(WriteFile("v4.npy", bytes), StatusCode::kInvalidArgument, "version 4.0");
  bytes[6] = 1;
  bytes[7] = 1;
  ExpectReadError(WriteFile("v11.npy", bytes), StatusCode::kInvalidArgument, "version 1.1");
}

TEST_F(NpyTest, TruncatedHeader) {
  const std::string bytes = FromHex(kNumpyF32x2x3Hex);
  for (size_t len : {7u, 9u, 10u, 60u, 127u}) {
    SCOPED_TRACE(len);
    ExpectReadError(WriteFile("th.npy", bytes.substr(0, len)), StatusCode::kInvalidArgument,
                    "truncated header");
  }
  // Format 2.0 whose 4-byte length field is cut short.
  ExpectReadError(WriteFile("th2.npy", std::string("\x93NUMPY\x02\x00\x10\x00", 10)),
                  StatusCode::kInvalidArgument, "truncated header");
}

TEST_F(NpyTest, AbsurdHeaderLength) {
  // Format 2.0 claiming a 2 GiB dict: refused before anything is allocated.
  std::string bytes("\x93NUMPY\x02\x00\x00\x00\x00\x80", 12);
  bytes += F32Dict("(1,)");
  ExpectReadError(WriteFile("huge_header.npy", bytes), StatusCode::kInvalidArgument,
                  "exceeds the 1048576-byte limit");
}

TEST_F(NpyTest, TruncatedDataIsDataLoss) {
  const std::string bytes = FromHex(kNumpyF32x2x3Hex);
  const std::string path = WriteFile("td.npy", bytes.substr(0, bytes.size() - 4));
  ExpectReadError(path, StatusCode::kDataLoss,
                  "truncated data: expected 24 bytes after the header, file has 20");
  ExpectReadError(WriteFile("td0.npy", bytes.substr(0, 128)), StatusCode::kDataLoss,
                  "truncated data: expected 24 bytes after the header, file has 0");
}

TEST_F(NpyTest, TrailingBytesAreRefused) {
  const std::string bytes = FromHex(kNumpyF32x2x3Hex) + "junk";
  ExpectReadError(WriteFile("tail.npy", bytes), StatusCode::kInvalidArgument,
                  "4 trailing bytes after the data");
}

TEST_F(NpyTest, MalformedDicts) {
  const std::string four_floats(16, '\0');
  struct Case {
    std::string dict;
    std::string substr;
  };
  const std::vector<Case> cases = {
      {"", "expected '{'"},
      {"[1, 2]", "expected '{'"},
      {"{'descr': '<f4' 'fortran_order': False, 'shape': (4,)}", "expected ',' or '}'"},
      {"{'descr': '<f4', 'fortran_order': False}", "missing key 'shape'"},
      {"{'descr': '<f4', 'shape': (4,)}", "missing key 'fortran_order'"},
      {"{'fortran_order': False, 'shape': (4,)}", "missing key 'descr'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", "unexpected key 'x'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}", "duplicate"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4)}", "not a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': 4}", "shape must be a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [4]}", "shape must be a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4.0,)}", "not an integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,,)}", "integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4, 1}", "expected ',' or ')'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (", "integer"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (4,)}", "expected ',' or '}'"},
      {"{'descr' '<f4', 'fortran_order': False, 'shape': (4,)}", "expected ':'"},
      {"{'descr': '<f4", "unterminated string"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (4,)}", "True or False"},
      {"{'descr': '<f4', 'fortran_order': Falsehood, 'shape': (4,)}", "True or False"},
      {"{descr: '<f4', 'fortran_order': False, 'shape': (4,)}", "quoted key"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,)} x", "after the closing"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,)", "expected ',' or '}'"},
      {"{'descr': '<\\x66\\x34', 'fortran_order': False, 'shape': (4,)}", "escape"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,)}", "structured"},
      {"{'descr': '<f4',\0 'fortran_order': False, 'shape': (4,)}"s, "quoted key"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].dict);
    ExpectReadError(WriteFile(fmt::format("bad{}.npy", i), MakeNpy(cases[i].dict, four_floats)),
                    StatusCode::kInvalidArgument, cases[i].substr);
  }
}

TEST_F(NpyTest, UnsupportedDtypes) {
  for (std::string_view descr : {"<f8", "|b1", "<c8", "<u2", "=f4", "|u1", ""}) {
    SCOPED_TRACE(descr);
    const std::string dict =
        fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': (2,), }}", descr);
    ExpectReadError(WriteFile("dt.npy", MakeNpy(dict, std::string(16, '\0'))),
                    StatusCode::kInvalidArgument,
                    fmt::format("unsupported dtype descr '{}'; supported: '<f4'", descr));
  }
}

TEST_F(NpyTest, BigEndianIsRefused) {
  for (std::string_view descr : {">f4", ">i8", ">f2"}) {
    const std::string dict =
        fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': (2,), }}", descr);
    ExpectReadError(WriteFile("be.npy", MakeNpy(dict, std::string(16, '\0'))),
                    StatusCode::kInvalidArgument, "big-endian arrays are not supported");
  }
}

TEST_F(NpyTest, FortranOrderIsRefused) {
  const std::string dict = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }";
  ExpectReadError(WriteFile("fo.npy", MakeNpy(dict, std::string(16, '\0'))),
                  StatusCode::kInvalidArgument, "fortran_order");
}

TEST_F(NpyTest, NegativeDimension) {
  ExpectReadError(WriteFile("neg.npy", MakeNpy(F32Dict("(2, -2)"), std::string(16, '\0'))),
                  StatusCode::kInvalidArgument, "negative dimension -2 at axis 1");
  ExpectReadError(WriteFile("neg2.npy", MakeNpy(F32Dict("(- 1,)"), "")),
                  StatusCode::kInvalidArgument, "negative dimension -1");
}

TEST_F(NpyTest, HugeDimensionsOverflow) {
  // 2^62 * 4 elements * 4 bytes overflows int64 bytes.
  ExpectReadError(WriteFile("of.npy", MakeNpy(F32Dict("(4611686018427387904, 4)"), "")),
                  StatusCode::kInvalidArgument, "overflows a 64-bit byte size");
  // Also when a zero dim would make the product 0 (numpy refuses these too).
  ExpectReadError(
      WriteFile("of0.npy", MakeNpy(F32Dict("(4611686018427387904, 4611686018427387904, 0)"), "")),
      StatusCode::kInvalidArgument, "overflows");
  // A dimension that is not even an int64.
  ExpectReadError(WriteFile("of1.npy", MakeNpy(F32Dict("(99999999999999999999,)"), "")),
                  StatusCode::kInvalidArgument, "does not fit in 64 bits");
  // Large but representable: the data is then missing, which is DataLoss, and nothing of that
  // size is allocated.
  ExpectReadError(WriteFile("big.npy", MakeNpy(F32Dict("(1000000000000,)"), "")),
                  StatusCode::kDataLoss, "expected 4000000000000 bytes after the header");
}

// Every prefix and every single-byte corruption of a valid file: never a crash, and any error
// is a one-line message that starts with the path.
TEST_F(NpyTest, CorruptionNeverCrashes) {
  const std::string good = FromHex(kNumpyF32x2x3Hex);
  const std::string path = Path("fuzz.npy");
  auto check = [&](const std::string& bytes) {
    WriteFile("fuzz.npy", bytes);
    for (const Status& st : {ReadNpy(path).status(), ReadNpyRows(path, 0, 1).status()}) {
      if (st.ok()) continue;
      EXPECT_TRUE(st.message().starts_with(path + ": ")) << st.message();
      EXPECT_EQ(st.message().find('\n'), std::string::npos) << st.message();
    }
  };
  for (size_t len = 0; len < good.size(); ++len) {
    WriteFile("fuzz.npy", good.substr(0, len));
    EXPECT_FALSE(ReadNpy(path).ok()) << len;
    check(good.substr(0, len));
  }
  const unsigned char replacements[] = {0x00, 0xff, '(', ')', '\'', ',', '-', '9', '}', '{'};
  for (size_t i = 0; i < 128; ++i) {
    for (unsigned char r : replacements) {
      std::string bytes = good;
      bytes[i] = static_cast<char>(r);
      check(bytes);
    }
  }
}

// ---- writing ------------------------------------------------------------------------------------

TEST_F(NpyTest, AtomicWriteLeavesNoTmpFile) {
  const std::string path = Path("out.npy");
  const std::vector<float> a = {1, 2, 3};
  const std::vector<float> b = {4, 5};
  ASSERT_OK(WriteNpy(path, DType::kF32, {3}, a.data()));
  EXPECT_EQ(DirEntries(), (std::vector<std::string>{"out.npy"}));
  // Overwrite in place.
  ASSERT_OK(WriteNpy(path, DType::kF32, {2}, b.data()));
  EXPECT_EQ(DirEntries(), (std::vector<std::string>{"out.npy"}));
  Result<NpyArray> r = ReadNpy(path);
  ASSERT_OK(r);
  EXPECT_EQ(r->shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(r->as<float>()[1], 5.f);
}

TEST_F(NpyTest, RefusedWriteLeavesExistingFileUntouched) {
  const std::string path = Path("keep.npy");
  const std::vector<float> a = {1, 2, 3};
  ASSERT_OK(WriteNpy(path, DType::kF32, {3}, a.data()));
  const std::string before = ReadFile(path);

  const uint16_t bf16[2] = {0x3f80, 0x4000};
  Status st = WriteNpy(path, DType::kBF16, {2}, bf16);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(st.message().starts_with(path + ": ")) << st.message();
  EXPECT_NE(st.message().find("npy has no bfloat16 dtype"), std::string::npos) << st.message();

  NpyArray arr;
  arr.dtype = DType::kBF16;
  arr.shape = {2};
  arr.data.resize(4);
  st = WriteNpy(path, arr);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("npy has no bfloat16 dtype"), std::string::npos) << st.message();

  EXPECT_EQ(ReadFile(path), before);
  EXPECT_EQ(DirEntries(), (std::vector<std::string>{"keep.npy"}));
}

TEST_F(NpyTest, WriteRejectsBadArguments) {
  const std::string path = Path("w.npy");
  const std::vector<float> a(4);
  auto expect = [&](const Status& st, StatusCode code, std::string_view substr) {
    EXPECT_EQ(st.code(), code) << st.ToString();
    EXPECT_TRUE(st.message().starts_with(path + ": ")) << st.message();
    EXPECT_NE(st.message().find(substr), std::string::npos) << st.message();
  };
  expect(WriteNpy(path, DType::kF32, {2, -2}, a.data()), StatusCode::kInvalidArgument,
         "negative dimension");
  expect(WriteNpy(path, DType::kF32, {int64_t{1} << 62, 4}, a.data()), StatusCode::kInvalidArgument,
         "overflows");
  expect(WriteNpy(path, DType::kF32, {4}, nullptr), StatusCode::kInvalidArgument, "null data");
  NpyArray arr;
  arr.shape = {5};
  arr.data.resize(16);
  expect(WriteNpy(path, arr), StatusCode::kInvalidArgument, "needs 20");
  EXPECT_TRUE(DirEntries().empty());

  // A missing directory: NotFound, and no .tmp file anywhere.
  const std::string missing = Path("no/such/dir/x.npy");
  const Status st = WriteNpy(missing, DType::kF32, {4}, a.data());
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.ToString();
  EXPECT_NE(st.message().find(missing), std::string::npos) << st.message();
  EXPECT_TRUE(DirEntries().empty());
}

TEST_F(NpyTest, MappedNpyReadsInPlaceWithReadNpysErrors) {
  std::vector<float> x(6 * 5);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i) * 0.5f;
  ASSERT_OK(WriteNpy(Path("a.npy"), DType::kF32, {6, 5}, x.data()));
  for (bool populate : {true, false}) {
    Result<MappedNpy> m = MappedNpy::Open(Path("a.npy"), populate);
    ASSERT_OK(m);
    EXPECT_EQ(m->header().shape, (std::vector<int64_t>{6, 5}));
    EXPECT_EQ(m->data_bytes(), int64_t(x.size() * 4));
    EXPECT_EQ(0, std::memcmp(m->data(), x.data(), x.size() * 4));
    MappedNpy moved = std::move(m.value());  // the mapping moves with it
    EXPECT_EQ(0, std::memcmp(moved.data(), x.data(), x.size() * 4));
  }
  // The same validation as ReadNpy: codes and messages.
  EXPECT_EQ(MappedNpy::Open(Path("missing.npy")).status().code(), StatusCode::kNotFound);
  const std::string bad = WriteFile("bad.npy", "not an npy file at all");
  const Status st = MappedNpy::Open(bad).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), ReadNpy(bad).status().message());
}

TEST_F(NpyTest, RowStreamWritesWhatWriteNpyWrites) {
  std::vector<float> x(10 * 3 * 4);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i) - 7.25f;
  ASSERT_OK(WriteNpy(Path("whole.npy"), DType::kF32, {10, 3, 4}, x.data()));
  Result<NpyRowStream> s = NpyRowStream::Create(Path("rows.npy"), DType::kF32, {10, 3, 4});
  ASSERT_OK(s);
  EXPECT_EQ(s->row_bytes(), 3 * 4 * 4);
  ASSERT_OK(s->Append(x.data(), 4));
  ASSERT_OK(s->Append(x.data() + 4 * 12, 0));
  ASSERT_OK(s->Append(x.data() + 4 * 12, 6));
  EXPECT_FALSE(fs::exists(Path("rows.npy"))) << "nothing at the path before Commit";
  ASSERT_OK(s->Commit());
  std::ifstream a(Path("whole.npy"), std::ios::binary), b(Path("rows.npy"), std::ios::binary);
  const std::string wa((std::istreambuf_iterator<char>(a)), {}), wb((std::istreambuf_iterator<char>(b)), {});
  EXPECT_EQ(wa, wb) << "byte-identical to WriteNpy (and so to np.save)";
  EXPECT_EQ(DirEntries().size(), 2u) << "no temporary file left";
}

TEST_F(NpyTest, RowStreamRefusesTooManyOrTooFewRowsAndLeavesNothing) {
  std::vector<float> x(8 * 2);
  {
    Result<NpyRowStream> s = NpyRowStream::Create(Path("p.npy"), DType::kF32, {8, 2});
    ASSERT_OK(s);
    ASSERT_OK(s->Append(x.data(), 5));
    EXPECT_EQ(s->Append(x.data(), 4).code(), StatusCode::kOutOfRange);
    EXPECT_EQ(s->Commit().code(), StatusCode::kFailedPrecondition);
  }  // destroyed uncommitted: the temporary file goes
  EXPECT_TRUE(DirEntries().empty());
  EXPECT_EQ(NpyRowStream::Create(Path("b.npy"), DType::kBF16, {2}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(NpyRowStream::Create(Path("s.npy"), DType::kF32, {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(NpyRowStream::Create(Path("no/such/dir/x.npy"), DType::kF32, {2}).status().code(),
            StatusCode::kNotFound);
  EXPECT_TRUE(DirEntries().empty());
}

}  // namespace
}  // namespace longctx
