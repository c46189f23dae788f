// Byte sizes as users write them on a command line: "4096", "64K", "512M", "4G", "1T" (binary
// multiples: K = 1024), optionally followed by "iB" or "B" ("512MiB", "64KB"). Used by every flag
// that takes a size (--pool, --kv-*-budget), so they all read sizes the same way.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "longctx/core/status.h"

namespace longctx {

// kInvalidArgument naming `what` (e.g. "--pool") for an empty, negative, malformed or
// overflowing size.
Result<uint64_t> ParseByteSize(std::string_view text, std::string_view what);

// "512 MiB", "1.5 GiB", "300 B": for messages and reports.
std::string FormatByteSize(uint64_t bytes);

}  // namespace longctx
