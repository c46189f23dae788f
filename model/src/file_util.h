// File helpers private to longctx_model: an owned descriptor, errno -> Status, whole-file reads
// of small text files, and atomic writes (temporary file, fsync, rename).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "longctx/core/file.h"
#include "longctx/core/status.h"

namespace longctx::model::internal {

// The descriptor RAII and errno mapping are core's (longctx/core/file.h).
using Fd = ::longctx::UniqueFd;
using ::longctx::ErrnoStatus;

// Reads a whole regular file of at most `max_bytes` bytes (kInvalidArgument when larger).
Result<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes);

// Atomic writes are core's too (longctx/core/file.h).
using ::longctx::AtomicFile;
using ::longctx::WriteFileAtomically;

}  // namespace longctx::model::internal
