// KvBlock: K and V of `block_tokens` consecutive tokens of one layer of one sequence, encoded
// for a KV tier (DESIGN.md §3). Codecs: the compute dtype (f32), f16, bf16, and int8 as in KIVI
// (keys quantized per channel — one scale per (kv head, dim) over the block's tokens — values
// per token — one scale per (token, kv head)); scales travel with the block. Every encoded block
// carries an xxHash64 of its header and payload, verified on decode: a corrupt or truncated block
// is a kDataLoss error that names the block, never silent garbage.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::cache {

enum class Codec : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kInt8 = 3 };
std::string_view CodecName(Codec c);           // "f32", "f16", "bf16", "int8"
Result<Codec> ParseCodec(std::string_view name);

struct BlockKey {
  uint64_t sequence = 0;
  uint32_t layer = 0;
  uint64_t block = 0;  // block index within the sequence: tokens [block*block_tokens, ...)
  bool operator==(const BlockKey&) const = default;
  std::string ToString() const;  // "seq 3 layer 1 block 17"
};

struct BlockShape {
  int32_t tokens = 0;    // tokens in this block (the last block of a sequence may be short)
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  int64_t row() const { return int64_t(kv_heads) * head_dim; }  // floats per token of K (or V)
};

// Encodes k and v ([tokens][kv_heads*head_dim] floats each) into one self-describing buffer:
// a fixed header (magic, format version, codec, key, shape), the scales (int8), the payload,
// and the checksum. Refuses non-finite inputs (they cannot be quantized faithfully).
Result<std::vector<std::byte>> EncodeBlock(const BlockKey& key, const BlockShape& shape, Codec codec,
                                           std::span<const float> k, std::span<const float> v);

// Decodes into k and v (resized to tokens*row floats). Verifies the checksum, the magic, the
// version and that the block is the one expected (`key`); any mismatch names the block.
Status DecodeBlock(std::span<const std::byte> encoded, const BlockKey& key, BlockShape* shape,
                   std::vector<float>* k, std::vector<float>* v);

// The checks of DecodeBlock without decoding: checksum, magic, version, key and size. What a
// store runs on a block it reads before handing it on (or falling back to another replica).
Status VerifyBlock(std::span<const std::byte> encoded, const BlockKey& key);

// Bytes of an encoded block with this shape and codec (header, scales, payload, checksum).
size_t EncodedBytes(const BlockShape& shape, Codec codec);

}  // namespace longctx::cache
