#include "longctx/core/byte_size.h"

#include <gtest/gtest.h>

namespace longctx {
namespace {

TEST(ByteSize, ParsesPlainAndBinaryMultiples) {
  EXPECT_EQ(ParseByteSize("0", "--x").value(), 0u);
  EXPECT_EQ(ParseByteSize("4096", "--x").value(), 4096u);
  EXPECT_EQ(ParseByteSize("64K", "--x").value(), 64u << 10);
  EXPECT_EQ(ParseByteSize("512M", "--x").value(), 512ull << 20);
  EXPECT_EQ(ParseByteSize("4G", "--x").value(), 4ull << 30);
  EXPECT_EQ(ParseByteSize("2t", "--x").value(), 2ull << 40);
  EXPECT_EQ(ParseByteSize("512MiB", "--x").value(), 512ull << 20);
  EXPECT_EQ(ParseByteSize("64KB", "--x").value(), 64u << 10);
  EXPECT_EQ(ParseByteSize("300B", "--x").value(), 300u);
}

TEST(ByteSize, RejectsMalformedAndOverflow) {
  for (const char* bad : {"", "-1", "M", "1.5G", "12Q", "4GG", "4 G", "18446744073709551616",
                          "17179869184G"}) {
    auto r = ParseByteSize(bad, "--pool");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("--pool"), std::string::npos);
  }
}

TEST(ByteSize, Formats) {
  EXPECT_EQ(FormatByteSize(300), "300 B");
  EXPECT_EQ(FormatByteSize(512ull << 20), "512.0 MiB");
  EXPECT_EQ(FormatByteSize(3ull << 29), "1.5 GiB");
}

}  // namespace
}  // namespace longctx
