// The byte tokenizer of the built-in models: token id = byte value (DESIGN.md §5).
#include "longctx/model/tokenizer.h"

namespace longctx::model {

Result<std::vector<int32_t>> ByteTokenizer::Encode(std::string_view text, bool) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = int32_t(uint8_t(text[i]));
  return ids;
}

Result<std::string> ByteTokenizer::Decode(std::span<const int32_t> ids, bool) const {
  std::string out(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] > 255) {
      return OutOfRange("token id {} at position {} is not a byte (the byte tokenizer decodes "
                        "ids 0..255)", ids[i], i);
    }
    out[i] = char(ids[i]);
  }
  return out;
}

std::string ByteTokenizer::TokenText(int32_t id) const {
  return id >= 0 && id < 256 ? std::string(1, char(id)) : std::string();
}

}  // namespace longctx::model
