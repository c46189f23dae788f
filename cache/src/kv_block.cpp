#include "longctx/cache/kv_block.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "longctx/core/dtype.h"

namespace longctx::cache {
namespace {

constexpr uint32_t kMagic = 0x4B56424Cu;  // "LBVK" little-endian: longctx KV block
constexpr uint16_t kVersion = 1;

// The wire header, little-endian, fixed size (static_assert below): a boundary with a version.
struct Header {
  uint32_t magic;
  uint16_t version;
  uint8_t codec;
  uint8_t reserved;
  uint64_t sequence;
  uint64_t block;
  uint32_t layer;
  int32_t tokens;
  int32_t kv_heads;
  int32_t head_dim;
};
static_assert(sizeof(Header) == 40, "KV block header layout is part of the wire format");
constexpr size_t kChecksumBytes = sizeof(uint64_t);

size_t ElementBytes(Codec c) {
  switch (c) {
    case Codec::kF32: return 4;
    case Codec::kF16:
    case Codec::kBF16: return 2;
    case Codec::kInt8: return 1;
  }
  return 0;
}

// int8 scales: keys one per channel (row floats), values one per (token, kv head).
size_t ScaleFloats(const BlockShape& s, Codec c) {
  if (c != Codec::kInt8) return 0;
  return size_t(s.row()) + size_t(s.tokens) * size_t(s.kv_heads);
}

int8_t Quantize(float x, float inv_scale) {
  const float q = std::nearbyint(x * inv_scale);
  return int8_t(std::clamp(q, -127.0f, 127.0f));
}

}  // namespace

std::string_view CodecName(Codec c) {
  switch (c) {
    case Codec::kF32: return "f32";
    case Codec::kF16: return "f16";
    case Codec::kBF16: return "bf16";
    case Codec::kInt8: return "int8";
  }
  return "?";
}

Result<Codec> ParseCodec(std::string_view name) {
  for (Codec c : {Codec::kF32, Codec::kF16, Codec::kBF16, Codec::kInt8}) {
    if (name == CodecName(c)) return c;
  }
  return InvalidArgument("unknown KV codec '{}': expected f32, f16, bf16 or int8", name);
}

std::string BlockKey::ToString() const {
  return fmt::format("seq {} layer {} block {}", sequence, layer, block);
}

size_t EncodedBytes(const BlockShape& s, Codec c) {
  return sizeof(Header) + ScaleFloats(s, c) * sizeof(float) +
         2 * size_t(s.tokens) * size_t(s.row()) * ElementBytes(c) + kChecksumBytes;
}

Result<std::vector<std::byte>> EncodeBlock(const BlockKey& key, const BlockShape& s, Codec codec,
                                           std::span<const float> k, std::span<const float> v) {
  if (s.tokens < 0 || s.kv_heads < 1 || s.head_dim < 1) {
    return InvalidArgument("KV block {}: bad shape {} tokens x {} heads x {}", key.ToString(),
                           s.tokens, s.kv_heads, s.head_dim);
  }
  const size_t n = size_t(s.tokens) * size_t(s.row());
  if (k.size() != n || v.size() != n) {
    return InvalidArgument("KV block {}: expected {} floats of K and of V, got {} and {}",
                           key.ToString(), n, k.size(), v.size());
  }
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(k[i]) || !std::isfinite(v[i])) {
      return InvalidArgument("KV block {}: non-finite value at element {}", key.ToString(), i);
    }
  }
  std::vector<std::byte> out(EncodedBytes(s, codec));
  Header h{kMagic, kVersion, uint8_t(codec), 0, key.sequence, key.block, key.layer,
           s.tokens, s.kv_heads, s.head_dim};
  std::memcpy(out.data(), &h, sizeof h);
  std::byte* p = out.data() + sizeof h;
  const int64_t row = s.row(), hd = s.head_dim;
  switch (codec) {
    case Codec::kF32:
      std::memcpy(p, k.data(), n * 4);
      std::memcpy(p + n * 4, v.data(), n * 4);
      break;
    case Codec::kF16:
    case Codec::kBF16: {
      auto* o = reinterpret_cast<uint16_t*>(p);
      for (size_t i = 0; i < n; ++i) {
        o[i] = codec == Codec::kF16 ? FloatToHalf(k[i]) : FloatToBF16(k[i]);
        o[n + i] = codec == Codec::kF16 ? FloatToHalf(v[i]) : FloatToBF16(v[i]);
      }
      break;
    }
    case Codec::kInt8: {
      // Scales: |x|max / 127 per key channel and per value (token, head); 0 -> scale 0.
      std::vector<float> kscale(size_t(row), 0.0f), vscale(size_t(s.tokens) * size_t(s.kv_heads), 0.0f);
      for (int64_t t = 0; t < s.tokens; ++t) {
        for (int64_t c = 0; c < row; ++c) {
          kscale[size_t(c)] = std::max(kscale[size_t(c)], std::fabs(k[size_t(t * row + c)]));
          float& vs = vscale[size_t(t * s.kv_heads + c / hd)];
          vs = std::max(vs, std::fabs(v[size_t(t * row + c)]));
        }
      }
      for (float& x : kscale) x /= 127.0f;
      for (float& x : vscale) x /= 127.0f;
      std::memcpy(p, kscale.data(), kscale.size() * 4);
      std::memcpy(p + kscale.size() * 4, vscale.data(), vscale.size() * 4);
      auto* q = reinterpret_cast<int8_t*>(p + (kscale.size() + vscale.size()) * 4);
      for (int64_t t = 0; t < s.tokens; ++t) {
        for (int64_t c = 0; c < row; ++c) {
          const float ks = kscale[size_t(c)], vs = vscale[size_t(t * s.kv_heads + c / hd)];
          q[t * row + c] = ks > 0 ? Quantize(k[size_t(t * row + c)], 1.0f / ks) : 0;
          q[int64_t(n) + t * row + c] = vs > 0 ? Quantize(v[size_t(t * row + c)], 1.0f / vs) : 0;
        }
      }
      break;
    }
  }
  const uint64_t sum = XXH64(out.data(), out.size() - kChecksumBytes, 0);
  std::memcpy(out.data() + out.size() - kChecksumBytes, &sum, kChecksumBytes);
  return out;
}

Status VerifyBlock(std::span<const std::byte> in, const BlockKey& key) {
  return DecodeBlock(in, key, nullptr, nullptr, nullptr);
}

Status DecodeBlock(std::span<const std::byte> in, const BlockKey& key, BlockShape* shape,
                   std::vector<float>* k, std::vector<float>* v) {
  const std::string name = key.ToString();
  if (in.size() < sizeof(Header) + kChecksumBytes) {
    return DataLoss("KV block {}: {} bytes, shorter than a block header", name, in.size());
  }
  uint64_t stored;
  std::memcpy(&stored, in.data() + in.size() - kChecksumBytes, kChecksumBytes);
  if (XXH64(in.data(), in.size() - kChecksumBytes, 0) != stored) {
    return DataLoss("KV block {}: checksum mismatch (corrupt or truncated)", name);
  }
  Header h;
  std::memcpy(&h, in.data(), sizeof h);
  if (h.magic != kMagic) return DataLoss("KV block {}: not a KV block (bad magic)", name);
  if (h.version != kVersion) {
    return DataLoss("KV block {}: format version {} (this build reads {})", name, h.version, kVersion);
  }
  if (h.codec > uint8_t(Codec::kInt8)) return DataLoss("KV block {}: unknown codec {}", name, h.codec);
  if (h.sequence != key.sequence || h.layer != key.layer || h.block != key.block) {
    return DataLoss("KV block {}: holds seq {} layer {} block {} instead", name, h.sequence,
                    h.layer, h.block);
  }
  const BlockShape s{h.tokens, h.kv_heads, h.head_dim};
  const Codec codec = Codec(h.codec);
  if (s.tokens < 0 || s.kv_heads < 1 || s.head_dim < 1 || EncodedBytes(s, codec) != in.size()) {
    return DataLoss("KV block {}: size {} does not match its header", name, in.size());
  }
  if (k == nullptr || v == nullptr) {  // VerifyBlock: header, size and checksum only
    if (shape) *shape = s;
    return Status::Ok();
  }
  const size_t n = size_t(s.tokens) * size_t(s.row());
  k->resize(n);
  v->resize(n);
  const std::byte* p = in.data() + sizeof h;
  switch (codec) {
    case Codec::kF32:
      std::memcpy(k->data(), p, n * 4);
      std::memcpy(v->data(), p + n * 4, n * 4);
      break;
    case Codec::kF16:
    case Codec::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t a, b;
        std::memcpy(&a, p + 2 * i, 2);
        std::memcpy(&b, p + 2 * (n + i), 2);
        (*k)[i] = codec == Codec::kF16 ? HalfToFloat(a) : BF16ToFloat(a);
        (*v)[i] = codec == Codec::kF16 ? HalfToFloat(b) : BF16ToFloat(b);
      }
      break;
    case Codec::kInt8: {
      const int64_t row = s.row(), hd = s.head_dim;
      std::vector<float> kscale(static_cast<size_t>(row)),
          vscale(static_cast<size_t>(s.tokens) * size_t(s.kv_heads));
      std::memcpy(kscale.data(), p, kscale.size() * 4);
      std::memcpy(vscale.data(), p + kscale.size() * 4, vscale.size() * 4);
      const auto* q = reinterpret_cast<const int8_t*>(p + (kscale.size() + vscale.size()) * 4);
      for (int64_t t = 0; t < s.tokens; ++t) {
        for (int64_t c = 0; c < row; ++c) {
          (*k)[size_t(t * row + c)] = float(q[t * row + c]) * kscale[size_t(c)];
          (*v)[size_t(t * row + c)] =
              float(q[int64_t(n) + t * row + c]) * vscale[size_t(t * s.kv_heads + c / hd)];
        }
      }
      break;
    }
  }
  if (shape) *shape = s;
  return Status::Ok();
}

}  // namespace longctx::cache
