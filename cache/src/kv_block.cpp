#include "longctx/cache/kv_block.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "codec_kernels.h"
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

// 1 / scale for the int8 codec; 0 when the scale is 0 (its elements are all 0) or so small
// (subnormal) that 1 / scale overflows: those elements then encode as 0.
float InverseScale(float scale) {
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  return std::isfinite(inv) ? inv : 0.0f;
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
  ASSIGN_OR_RETURN(const internal::CodecKernels* kernels, internal::BestCodecKernels());
  const internal::CodecKernels& K = *kernels;
  if (!K.all_finite(k.data(), n) || !K.all_finite(v.data(), n)) {
    for (size_t i = 0; i < n; ++i) {  // only to name the element
      if (!std::isfinite(k[i]) || !std::isfinite(v[i])) {
        return InvalidArgument("KV block {}: non-finite value at element {}", key.ToString(), i);
      }
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
      auto* to = codec == Codec::kF16 ? K.to_f16 : K.to_bf16;
      to(k.data(), o, n);
      to(v.data(), o + n, n);
      break;
    }
    case Codec::kInt8: {
      // Scales: |x|max / 127 per key channel and per value (token, head); 0 -> scale 0.
      const int64_t H = s.kv_heads;
      std::vector<float> kscale(size_t(row), 0.0f), vscale(size_t(s.tokens) * size_t(H));
      for (int64_t t = 0; t < s.tokens; ++t) {
        K.absmax_into(k.data() + t * row, kscale.data(), size_t(row));
        for (int64_t hh = 0; hh < H; ++hh) {
          vscale[size_t(t * H + hh)] = K.absmax(v.data() + t * row + hh * hd, size_t(hd));
        }
      }
      for (float& x : kscale) x /= 127.0f;
      for (float& x : vscale) x /= 127.0f;
      std::memcpy(p, kscale.data(), kscale.size() * 4);
      std::memcpy(p + kscale.size() * 4, vscale.data(), vscale.size() * 4);
      auto* q = reinterpret_cast<int8_t*>(p + (kscale.size() + vscale.size()) * 4);
      std::vector<float> kinv(kscale.size());
      for (size_t c = 0; c < kinv.size(); ++c) kinv[c] = InverseScale(kscale[c]);
      for (int64_t t = 0; t < s.tokens; ++t) {
        K.quantize(k.data() + t * row, kinv.data(), q + t * row, size_t(row));
        for (int64_t hh = 0; hh < H; ++hh) {
          const int64_t off = t * row + hh * hd;
          K.quantize_one(v.data() + off, InverseScale(vscale[size_t(t * H + hh)]),
                         q + int64_t(n) + off, size_t(hd));
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
  ASSIGN_OR_RETURN(const internal::CodecKernels* kernels, internal::BestCodecKernels());
  const internal::CodecKernels& K = *kernels;
  switch (codec) {
    case Codec::kF32:
      std::memcpy(k->data(), p, n * 4);
      std::memcpy(v->data(), p + n * 4, n * 4);
      break;
    case Codec::kF16:
    case Codec::kBF16: {
      // The payload follows the header inside whatever buffer the block arrived in: read it in
      // place when it is 2-byte aligned, else from an aligned copy.
      std::vector<uint16_t> copy;
      const uint16_t* half = reinterpret_cast<const uint16_t*>(p);
      if (reinterpret_cast<uintptr_t>(p) % alignof(uint16_t) != 0) {
        copy.resize(2 * n);
        std::memcpy(copy.data(), p, 4 * n);
        half = copy.data();
      }
      auto* from = codec == Codec::kF16 ? K.from_f16 : K.from_bf16;
      from(half, k->data(), n);
      from(half + n, v->data(), n);
      break;
    }
    case Codec::kInt8: {
      const int64_t row = s.row(), hd = s.head_dim, H = s.kv_heads;
      std::vector<float> kscale(static_cast<size_t>(row)),
          vscale(static_cast<size_t>(s.tokens) * size_t(H));
      std::memcpy(kscale.data(), p, kscale.size() * 4);
      std::memcpy(vscale.data(), p + kscale.size() * 4, vscale.size() * 4);
      const auto* q = reinterpret_cast<const int8_t*>(p + (kscale.size() + vscale.size()) * 4);
      for (int64_t t = 0; t < s.tokens; ++t) {
        K.dequantize(q + t * row, kscale.data(), k->data() + t * row, size_t(row));
        for (int64_t hh = 0; hh < H; ++hh) {
          const int64_t off = t * row + hh * hd;
          K.dequantize_one(q + int64_t(n) + off, vscale[size_t(t * H + hh)], v->data() + off,
                           size_t(hd));
        }
      }
      break;
    }
  }
  if (shape) *shape = s;
  return Status::Ok();
}

}  // namespace longctx::cache
