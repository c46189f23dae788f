// JSON helpers private to longctx_model (config.json, safetensors headers, shard indexes):
// short one-line excerpts of values and nlohmann's error text without its "[json.exception...]"
// prefix, for one-line error messages.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace longctx::model::internal {

// A JSON value as a short one-line excerpt for error messages.
inline std::string Repr(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// Strips nlohmann's "[json.exception.parse_error.101] " prefix and bounds the length.
inline std::string JsonErrorText(const nlohmann::json::exception& e) {
  std::string_view what = e.what();
  if (!what.empty() && what.front() == '[') {
    const size_t close = what.find("] ");
    if (close != std::string_view::npos) what.remove_prefix(close + 2);
  }
  std::string s(what);
  if (s.size() > 300) s = s.substr(0, 297) + "...";
  return s;
}

}  // namespace longctx::model::internal
