// The safetensors reader and writer: round trips in F32/F16/BF16, sharded directories, a file
// laid out by hand from the format spec, and every kind of malformed or lying file giving one
// line that names the file and the tensor (never a crash or a huge allocation).
#include "longctx/model/safetensors.h"

#include <stdlib.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "longctx/test/temp_dir.h"
#include "longctx/test/status_matchers.h"

namespace longctx::model {
namespace {

namespace fs = std::filesystem;

std::string LE64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

// A file following the spec: 8-byte little-endian header length, the JSON header (padded with
// spaces to a multiple of 8 when `pad`), then the data section.
std::string Layout(std::string header, std::string_view data, bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  return LE64(header.size()) + header + std::string(data);
}

std::string Floats(std::initializer_list<float> v) {
  std::string out(v.size() * 4, '\0');
  std::memcpy(out.data(), std::data(v), out.size());
  return out;
}

class Safetensors : public ::testing::Test {
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

  std::string ReadFile(std::string_view name) const {
    std::ifstream f(Path(name), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

  // Opens bytes written as "bad.safetensors" and expects the error `message` (after the path).
  void ExpectOpenError(std::string_view bytes, StatusCode code, std::string_view message) {
    const std::string path = WriteFile("bad.safetensors", bytes);
    auto r = SafetensorsFile::Open(path);
    ASSERT_FALSE(r.ok()) << "accepted a bad file, expected: " << message;
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    EXPECT_EQ(r.status().message(), path + ": " + std::string(message));
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
  }

  int FileCount() const {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++n;
    return n;
  }

  test::TempDir tmp_{"safetensors_test"};
  const fs::path dir_ = tmp_.path();
};

OwnedTensor MakeTensor(std::string name, DType dtype, std::vector<int64_t> shape,
                       const std::vector<float>& values) {
  OwnedTensor t{std::move(name), dtype, std::move(shape), {}};
  t.data.resize(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(t.data.data() + 4 * i, &values[i], 4);
    } else {
      const uint16_t h = dtype == DType::kF16 ? FloatToHalf(values[i]) : FloatToBF16(values[i]);
      std::memcpy(t.data.data() + 2 * i, &h, 2);
    }
  }
  return t;
}

TEST_F(Safetensors, RoundTripsEveryDType) {
  const std::vector<float> values = {1.0f, -2.5f, 0.0f, 0.375f, 65504.0f, -0.0625f};
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(std::string(SafetensorsDTypeName(dtype)));
    const std::vector<OwnedTensor> tensors = {
        MakeTensor("model.layers.0.mlp.up_proj.weight", dtype, {2, 3}, values),
        MakeTensor("model.norm.weight", dtype, {3}, {1.0f, 1.0f, 1.0f}),
        MakeTensor("scalar", dtype, {}, {7.0f}),
        MakeTensor("empty", dtype, {0, 4}, {}),
    };
    std::vector<TensorRef> refs;
    for (const auto& t : tensors) refs.push_back(t.ref());
    const std::string path = Path("rt.safetensors");
    ASSERT_OK(WriteSafetensors(path, refs, {{"format", "pt"}}));
    EXPECT_EQ(FileCount(), 1);  // no .tmp left behind

    auto file = SafetensorsFile::Open(path);
    ASSERT_OK(file);
    EXPECT_EQ(file->metadata().at("format"), "pt");
    EXPECT_EQ(file->Names(), (std::vector<std::string>{"empty", "model.layers.0.mlp.up_proj.weight",
                                                       "model.norm.weight", "scalar"}));
    for (const OwnedTensor& want : tensors) {
      auto got = file->Get(want.name);
      ASSERT_OK(got);
      EXPECT_EQ(got->name, want.name);
      EXPECT_EQ(got->dtype, dtype);
      EXPECT_EQ(got->shape, want.shape);
      ASSERT_EQ(got->bytes, want.data.size());
      if (got->bytes > 0) {
        EXPECT_EQ(std::memcmp(got->data, want.data.data(), got->bytes), 0);
      }
      // Every tensor starts aligned to its element size within the file.
      const auto offset = static_cast<size_t>(got->data - file->Get("scalar")->data);
      EXPECT_EQ(offset % DTypeSize(dtype), 0u);
    }
    const std::vector<float> back = ToFloat32(*file->Get("model.layers.0.mlp.up_proj.weight"));
    ASSERT_EQ(back.size(), values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      // Every value above is exact in all three dtypes except 65504 in BF16 (-> 65536).
      const float want = dtype == DType::kBF16 && values[i] == 65504.0f ? 65536.0f : values[i];
      EXPECT_EQ(back[i], want) << i;
    }

    // The same through ModelWeights::OpenDir on a single-file directory.
    fs::rename(path, Path("model.safetensors"));
    auto weights = ModelWeights::OpenDir(dir_.string());
    ASSERT_OK(weights);
    EXPECT_EQ(weights->source(), Path("model.safetensors"));
    EXPECT_TRUE(weights->Contains("scalar"));
    EXPECT_EQ(ToFloat32(*weights->Get("scalar")), std::vector<float>{7.0f});
    fs::remove(Path("model.safetensors"));
  }
}

// A file written by hand from the spec, as Python's safetensors.torch.save_file lays it out:
// {"a": torch.tensor([1., 2.]), "b": torch.tensor([[0.5, -1.]], dtype=torch.bfloat16)}
// with metadata {"format": "pt"}.
TEST_F(Safetensors, ReadsSpecLayoutAndWritesTheSameBytes) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]}})";
  std::string data = Floats({1.0f, 2.0f});
  data += std::string("\x00\x3f\x80\xbf", 4);  // bf16 0.5 = 0x3f00, -1 = 0xbf80, little-endian
  const std::string bytes = Layout(header, data);
  ASSERT_EQ(bytes.size() % 8, 4u);  // 8 + padded header (multiple of 8) + 12 data bytes
  const std::string path = WriteFile("spec.safetensors", bytes);

  auto file = SafetensorsFile::Open(path);
  ASSERT_OK(file);
  EXPECT_EQ(file->file_bytes(), bytes.size());
  auto a = file->Get("a");
  ASSERT_OK(a);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, std::vector<int64_t>{2});
  EXPECT_EQ(ToFloat32(*a), (std::vector<float>{1.0f, 2.0f}));
  auto b = file->Get("b");
  ASSERT_OK(b);
  EXPECT_EQ(b->dtype, DType::kBF16);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(ToFloat32(*b), (std::vector<float>{0.5f, -1.0f}));

  // Unpadded headers and no metadata are valid too.
  const std::string unpadded = Layout(
      R"({"x":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}})", std::string("\x00\x3c", 2),
      false);
  auto x = SafetensorsFile::Open(WriteFile("unpadded.safetensors", unpadded));
  ASSERT_OK(x);
  EXPECT_EQ(ToFloat32(*x->Get("x")), std::vector<float>{1.0f});

  // Our writer produces exactly the same bytes (key order, compact JSON, space padding, the
  // library's tensor order: F32 before BF16).
  const std::vector<OwnedTensor> tensors = {
      MakeTensor("b", DType::kBF16, {1, 2}, {0.5f, -1.0f}),
      MakeTensor("a", DType::kF32, {2}, {1.0f, 2.0f}),
  };
  std::vector<TensorRef> refs = {tensors[0].ref(), tensors[1].ref()};
  ASSERT_OK(WriteSafetensors(Path("ours.safetensors"), refs, {{"format", "pt"}}));
  EXPECT_EQ(ReadFile("ours.safetensors"), bytes);
}

// The byte vectors of the reference Rust library's own serialization tests
// (safetensors/src/tensor.rs: test_serialization, test_serialization_forced_alignement,
// test_empty): our writer must produce them exactly, and our reader must read them.
TEST_F(Safetensors, MatchesTheReferenceLibraryTestVectors) {
  const std::string six_floats = Floats({0, 1, 2, 3, 4, 5});
  struct Case {
    std::string name;
    std::vector<int64_t> shape;
    std::string expected;
  };
  const Case cases[] = {
      {"attn.0", {1, 2, 3},
       LE64(64) + R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})" +
           six_floats},
      {"attn0", {1, 1, 2, 3},
       LE64(72) + R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" +
           std::string(7, ' ') + six_floats},
  };
  for (const Case& c : cases) {
    TensorRef t{c.name, DType::kF32, c.shape,
                reinterpret_cast<const std::byte*>(six_floats.data()), six_floats.size()};
    ASSERT_OK(WriteSafetensors(Path("v.safetensors"), std::span<const TensorRef>(&t, 1)));
    EXPECT_EQ(ReadFile("v.safetensors"), c.expected) << c.name;
    auto file = SafetensorsFile::Open(Path("v.safetensors"));
    ASSERT_OK(file);
    EXPECT_EQ(ToFloat32(*file->Get(c.name)), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  }
  ASSERT_OK(WriteSafetensors(Path("empty.safetensors"), {}));
  EXPECT_EQ(ReadFile("empty.safetensors"), LE64(8) + "{}      ");
  ASSERT_OK(WriteSafetensors(Path("empty.safetensors"), {}, {{"framework", "pt"}}));
  EXPECT_EQ(ReadFile("empty.safetensors"),
            LE64(40) + R"({"__metadata__":{"framework":"pt"}})" + std::string(5, ' '));
  auto empty = SafetensorsFile::Open(Path("empty.safetensors"));
  ASSERT_OK(empty);
  EXPECT_TRUE(empty->Names().empty());
  EXPECT_EQ(empty->metadata().at("framework"), "pt");
}

TEST_F(Safetensors, ShardedIndex) {
  const OwnedTensor a = MakeTensor("model.embed_tokens.weight", DType::kF32, {2, 2}, {1, 2, 3, 4});
  const OwnedTensor b = MakeTensor("model.norm.weight", DType::kBF16, {2}, {1, 1});
  const OwnedTensor c = MakeTensor("lm_head.weight", DType::kF16, {2, 2}, {5, 6, 7, 8});
  std::vector<TensorRef> shard1 = {a.ref(), b.ref()};
  std::vector<TensorRef> shard2 = {c.ref()};
  ASSERT_OK(WriteSafetensors(Path("model-00001-of-00002.safetensors"), shard1));
  ASSERT_OK(WriteSafetensors(Path("model-00002-of-00002.safetensors"), shard2));
  const std::string index_path = Path("model.safetensors.index.json");
  auto write_index = [&](std::string_view weight_map) {
    WriteFile("model.safetensors.index.json",
              R"({"metadata": {"total_size": 28}, "weight_map": )" + std::string(weight_map) +
                  "}");
  };
  write_index(R"({"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                  "model.norm.weight": "model-00001-of-00002.safetensors",
                  "lm_head.weight": "model-00002-of-00002.safetensors"})");

  auto w = ModelWeights::OpenDir(dir_.string());
  ASSERT_OK(w);
  EXPECT_EQ(w->source(), index_path);
  EXPECT_EQ(w->Names(), (std::vector<std::string>{"lm_head.weight", "model.embed_tokens.weight",
                                                  "model.norm.weight"}));
  EXPECT_EQ(ToFloat32(*w->Get("model.embed_tokens.weight")), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(ToFloat32(*w->Get("lm_head.weight")), (std::vector<float>{5, 6, 7, 8}));
  EXPECT_EQ(w->Get("model.norm.weight")->dtype, DType::kBF16);
  const std::vector<std::string> need = {"model.embed_tokens.weight", "lm_head.weight"};
  EXPECT_OK(w->Require(need));

  // A tensor the index does not list is not visible, even when a shard holds it.
  auto missing = w->Get("model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(),
            index_path + ": missing tensor model.layers.0.mlp.up_proj.weight");

  // The index lies about where a tensor is.
  write_index(R"({"lm_head.weight": "model-00001-of-00002.safetensors"})");
  auto lying = ModelWeights::OpenDir(dir_.string());
  ASSERT_FALSE(lying.ok());
  EXPECT_EQ(lying.status().message(),
            index_path + ": weight_map places tensor lm_head.weight in "
                         "model-00001-of-00002.safetensors, which does not contain it");
  // A shard that is not there.
  write_index(R"({"lm_head.weight": "model-00003-of-00003.safetensors"})");
  auto absent = ModelWeights::OpenDir(dir_.string());
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(absent.status().message().rfind(Path("model-00003-of-00003.safetensors"), 0), 0u)
      << absent.status().message();
  // A shard name that escapes the directory.
  write_index(R"({"lm_head.weight": "../model-00002-of-00002.safetensors"})");
  auto escape = ModelWeights::OpenDir(dir_.string());
  ASSERT_FALSE(escape.ok());
  EXPECT_EQ(escape.status().message(),
            index_path + ": weight_map.lm_head.weight = \"../model-00002-of-00002.safetensors\" "
                         "is not a plain file name in the index's directory");
  // No weight_map, bad JSON.
  WriteFile("model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_EQ(ModelWeights::OpenDir(dir_.string()).status().message(),
            index_path + ": missing \"weight_map\" object");
  WriteFile("model.safetensors.index.json", R"({"weight_map": {)");
  EXPECT_NE(ModelWeights::OpenDir(dir_.string()).status().message().find("not valid JSON"),
            std::string::npos);
  // A shard that is itself corrupt is reported with its own path.
  write_index(R"({"lm_head.weight": "model-00002-of-00002.safetensors"})");
  WriteFile("model-00002-of-00002.safetensors", "1234");
  EXPECT_EQ(ModelWeights::OpenDir(dir_.string()).status().message(),
            Path("model-00002-of-00002.safetensors") +
                ": file is 4 bytes, shorter than the 8-byte header length");
}

TEST_F(Safetensors, EmptyDirectoryIsNotFound) {
  auto w = ModelWeights::OpenDir(dir_.string());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(w.status().message(),
            dir_.string() +
                ": neither model.safetensors nor model.safetensors.index.json is there");
  auto nodir = ModelWeights::OpenDir(Path("no-such-dir"));
  EXPECT_EQ(nodir.status().code(), StatusCode::kNotFound);
}

TEST_F(Safetensors, MalformedFiles) {
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string eight(8, '\0');
  // Truncated: shorter than the length field, empty, and data cut short.
  ExpectOpenError(std::string("\x10\x00\x00", 3), StatusCode::kDataLoss,
                  "file is 3 bytes, shorter than the 8-byte header length");
  ExpectOpenError("", StatusCode::kDataLoss,
                  "file is 0 bytes, shorter than the 8-byte header length");
  const std::string whole = Layout("{" + ok_entry + "}", eight);
  ExpectOpenError(whole.substr(0, whole.size() - 4), StatusCode::kDataLoss,
                  "tensor t: data_offsets [0, 8) end past the 4-byte data section (file "
                  "truncated?)");
  // Header length 2^63 and 2^64-1: a clean error, no allocation.
  ExpectOpenError(LE64(uint64_t{1} << 63) + "{}", StatusCode::kInvalidArgument,
                  "header length 9223372036854775808 bytes exceeds the 104857600 byte limit "
                  "(not a safetensors file?)");
  ExpectOpenError(LE64(~uint64_t{0}) + "{}", StatusCode::kInvalidArgument,
                  "header length 18446744073709551615 bytes exceeds the 104857600 byte limit "
                  "(not a safetensors file?)");
  // Header length beyond the file.
  ExpectOpenError(LE64(1000) + "{}      ", StatusCode::kDataLoss,
                  "header length 1000 bytes runs past the end of the 16-byte file");
  // Bad JSON, and JSON that is not an object.
  {
    const std::string path = WriteFile("bad.safetensors", Layout(R"({"t": {"dtype": )", ""));
    auto r = SafetensorsFile::Open(path);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message().rfind(path + ": header is not valid JSON: parse error at line 1,"
                                                " column ",
                                         0),
              0u)
        << r.status().message();
  }
  ExpectOpenError(Layout("[1,2]", ""), StatusCode::kInvalidArgument,
                  "header is a JSON array, expected an object");
  ExpectOpenError(LE64(0), StatusCode::kInvalidArgument,
                  "header is not valid JSON: parse error at line 1, column 1: syntax error while "
                  "parsing value - unexpected end of input; expected '[', '{', or a literal");
  // Overlapping tensors.
  ExpectOpenError(
      Layout(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
             std::string(12, '\0')),
      StatusCode::kInvalidArgument, "tensors a [0, 8) and b [4, 12) overlap");
  // The same range twice.
  ExpectOpenError(
      Layout(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})",
             eight),
      StatusCode::kInvalidArgument, "tensors a [0, 8) and b [0, 8) overlap");
  // Offsets outside the data section, begin > end.
  ExpectOpenError(Layout(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", eight),
                  StatusCode::kDataLoss,
                  "tensor t: data_offsets [8, 16) end past the 8-byte data section (file "
                  "truncated?)");
  ExpectOpenError(Layout(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", eight),
                  StatusCode::kInvalidArgument, "tensor t: data_offsets [8, 0] has begin > end");
  ExpectOpenError(Layout(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", eight),
                  StatusCode::kInvalidArgument,
                  "tensor t: data_offsets [0] is not two non-negative integers");
  ExpectOpenError(Layout(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", eight),
                  StatusCode::kInvalidArgument,
                  "tensor t: data_offsets [-8,0] is not two non-negative integers");
  // Shape x dtype != bytes (the example of the issue), and an overflowing shape.
  ExpectOpenError(
      Layout(R"({"model.layers.0.mlp.up_proj.weight":{"dtype":"F32","shape":[4,8],)"
             R"("data_offsets":[0,100]}})",
             std::string(100, '\0')),
      StatusCode::kInvalidArgument,
      "tensor model.layers.0.mlp.up_proj.weight: data_offsets [0, 100) but shape [4, 8] of F32 "
      "needs 128 bytes");
  ExpectOpenError(
      Layout(R"({"t":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})",
             eight),
      StatusCode::kInvalidArgument,
      "tensor t: shape [4611686018427387904, 4] of F32 overflows 64-bit byte counts");
  ExpectOpenError(Layout(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight),
                  StatusCode::kInvalidArgument,
                  "tensor t: shape [-2] has a dimension that is not a non-negative integer");
  ExpectOpenError(Layout(R"({"t":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", eight),
                  StatusCode::kInvalidArgument,
                  "tensor t: shape [2.0] has a dimension that is not a non-negative integer");
  // Unknown dtype, missing fields, bad entries, bad metadata, duplicate names.
  ExpectOpenError(Layout(R"({"t":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", eight),
                  StatusCode::kInvalidArgument, "tensor t: unknown dtype \"F7\"");
  ExpectOpenError(Layout(R"({"t":{"shape":[2],"data_offsets":[0,8]}})", eight),
                  StatusCode::kInvalidArgument, "tensor t: missing or non-string \"dtype\"");
  ExpectOpenError(Layout(R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", eight),
                  StatusCode::kInvalidArgument, "tensor t: missing or non-array \"shape\"");
  ExpectOpenError(Layout(R"({"t":{"dtype":"F32","shape":[2]}})", eight),
                  StatusCode::kInvalidArgument, "tensor t: missing or non-array \"data_offsets\"");
  ExpectOpenError(Layout(R"({"t":7})", eight), StatusCode::kInvalidArgument,
                  "tensor t: entry 7 is not an object");
  ExpectOpenError(Layout(R"({"__metadata__":{"format":1}})", ""), StatusCode::kInvalidArgument,
                  "__metadata__.format = 1 is not a string");
  ExpectOpenError(Layout("{" + ok_entry + "," + ok_entry + "}", eight),
                  StatusCode::kInvalidArgument, "header names tensor t twice");
}

TEST_F(Safetensors, UnsupportedDTypeOpensButGetNamesTheTensor) {
  const std::string bytes = Layout(
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("model.rotary_emb.inv_freq":{"dtype":"I64","shape":[1],"data_offsets":[4,12]},)"
      R"("q":{"dtype":"U8","shape":[3],"data_offsets":[12,15]}})",
      std::string(15, '\0'));
  const std::string path = WriteFile("mixed.safetensors", bytes);
  auto file = SafetensorsFile::Open(path);
  ASSERT_OK(file);
  EXPECT_OK(file->Get("a"));
  auto i64 = file->Get("model.rotary_emb.inv_freq");
  ASSERT_FALSE(i64.ok());
  EXPECT_EQ(i64.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(i64.status().message(),
            path + ": tensor model.rotary_emb.inv_freq has dtype I64; longctx reads F32, F16 and "
                   "BF16");
  EXPECT_EQ(file->Get("q").status().message(),
            path + ": tensor q has dtype U8; longctx reads F32, F16 and BF16");
  EXPECT_EQ(file->Get("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(file->Get("nope").status().message(), path + ": no tensor named nope");
}

TEST_F(Safetensors, RequireNamesTheFirstMissingTensor) {
  const OwnedTensor a = MakeTensor("model.embed_tokens.weight", DType::kF32, {1}, {1});
  std::vector<TensorRef> refs = {a.ref()};
  ASSERT_OK(WriteSafetensors(Path("model.safetensors"), refs));
  auto w = ModelWeights::OpenFile(Path("model.safetensors"));
  ASSERT_OK(w);
  const std::vector<std::string> names = {"model.embed_tokens.weight", "model.norm.weight",
                                          "lm_head.weight"};
  const Status st = w->Require(names);
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_EQ(st.message(), Path("model.safetensors") + ": missing tensor model.norm.weight");
  EXPECT_OK(w->Require(std::vector<std::string>{"model.embed_tokens.weight"}));
}

TEST_F(Safetensors, WriterRefusesBadInputAndLeavesNothing) {
  const OwnedTensor a = MakeTensor("a", DType::kF32, {2}, {1, 2});
  TensorRef short_data = a.ref();
  short_data.bytes = 4;
  std::vector<TensorRef> refs = {short_data};
  Status st = WriteSafetensors(Path("w.safetensors"), refs);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            Path("w.safetensors") + ": tensor a: 4 bytes of data but shape [2] of F32 needs 8");
  refs = {a.ref(), a.ref()};
  st = WriteSafetensors(Path("w.safetensors"), refs);
  EXPECT_EQ(st.message(), Path("w.safetensors") + ": tensor a given twice");
  TensorRef meta = a.ref();
  meta.name = "__metadata__";
  refs = {meta};
  EXPECT_FALSE(WriteSafetensors(Path("w.safetensors"), refs).ok());
  TensorRef bad_utf8 = a.ref();
  bad_utf8.name = "\xff\xfe";
  refs = {bad_utf8};
  st = WriteSafetensors(Path("w.safetensors"), refs);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("cannot encode the header"), std::string::npos) << st.message();
  // Into a directory that does not exist.
  refs = {a.ref()};
  st = WriteSafetensors(Path("no/such/dir.safetensors"), refs);
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_EQ(FileCount(), 0);
}

TEST_F(Safetensors, FromTensorsValidates) {
  std::vector<OwnedTensor> v;
  v.push_back(MakeTensor("a", DType::kF32, {2}, {1, 2}));
  v.push_back(MakeTensor("a", DType::kF32, {1}, {3}));
  auto dup = ModelWeights::FromTensors(std::move(v));
  EXPECT_EQ(dup.status().message(), "<memory>: tensor a given twice");
  std::vector<OwnedTensor> w;
  w.push_back(MakeTensor("b", DType::kF32, {3}, {1, 2}));
  EXPECT_EQ(ModelWeights::FromTensors(std::move(w)).status().message(),
            "<memory>: tensor b: 8 bytes of data for shape [3] of F32");
}

}  // namespace
}  // namespace longctx::model
