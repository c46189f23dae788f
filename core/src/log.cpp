#include "longctx/core/log.h"

#include <cstdlib>
#include <mutex>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace longctx {

void InitLogging() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto logger = spdlog::stderr_color_mt("longctx");
    logger->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
    spdlog::set_default_logger(logger);
    spdlog::level::level_enum level = spdlog::level::warn;
    if (const char* env = std::getenv("LONGCTX_LOG")) level = spdlog::level::from_str(env);
    spdlog::set_level(level);
  });
}

}  // namespace longctx
