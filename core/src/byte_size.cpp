#include "longctx/core/byte_size.h"

#include <cctype>

#include <fmt/format.h>

namespace longctx {

Result<uint64_t> ParseByteSize(std::string_view text, std::string_view what) {
  auto bad = [&] {
    return InvalidArgument("{} '{}': expected a size such as 4096, 64K, 512M or 4G", what, text);
  };
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    const uint64_t digit = uint64_t(text[i] - '0');
    if (value > (~uint64_t{0} - digit) / 10) return bad();
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0) return bad();
  std::string_view unit = text.substr(i);
  int shift = 0;
  if (!unit.empty()) {
    switch (std::toupper(static_cast<unsigned char>(unit[0]))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      case 'B': shift = 0; break;
      default: return bad();
    }
    if (std::toupper(static_cast<unsigned char>(unit[0])) != 'B') unit.remove_prefix(1);
    if (unit == "iB" || unit == "B" || unit == "ib" || unit == "b") unit = {};
    if (!unit.empty()) return bad();
  }
  if (shift > 0 && value > (~uint64_t{0} >> shift)) return bad();
  return value << shift;
}

std::string FormatByteSize(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, kUnits[u]);
}

}  // namespace longctx
