// UTF-8 encoding of one code point, shared by the tokenizers (model/) and the task data's HTML
// entity decoding (train/): the one place that writes the byte patterns.
#pragma once

#include <string>

namespace longctx {

// Appends the UTF-8 bytes of code point `cp` (1-4 bytes; cp <= 0x10FFFF, the caller's invariant).
void AppendUtf8(char32_t cp, std::string* out);

}  // namespace longctx
