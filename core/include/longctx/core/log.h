// Logging: a thin layer over spdlog so every component logs the same way, to stderr.
// Level comes from LONGCTX_LOG (trace|debug|info|warn|error|off), default warn, so a
// CLI's stdout carries only its results.
#pragma once

#include <spdlog/spdlog.h>

namespace longctx {

// Idempotent; called by the CLI at start. Reads LONGCTX_LOG.
void InitLogging();

}  // namespace longctx

#define LONGCTX_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define LONGCTX_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define LONGCTX_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define LONGCTX_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
