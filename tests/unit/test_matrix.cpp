// The pure pieces of `longctx bench matrix`: token counts, the log-log power-law fit against
// exact power laws, the relative error against a plain double loop, and the sample document
// against launch/make_document.sh byte for byte.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "longctx/bench/matrix.h"

namespace longctx::bench {
namespace {

TEST(MatrixTokenCount, Suffixes) {
  EXPECT_EQ(ParseTokenCount("512").value(), 512);
  EXPECT_EQ(ParseTokenCount("2K").value(), 2048);
  EXPECT_EQ(ParseTokenCount("16k").value(), 16384);
  EXPECT_EQ(ParseTokenCount("1M").value(), 1048576);
  EXPECT_EQ(ParseTokenCount("256K").value(), 262144);
}

TEST(MatrixTokenCount, BadInput) {
  for (const char* bad : {"", "K", "0", "0K", "-5", "1.5K", "2X", "12a", "99999999999999",
                          "4096M"}) {
    Result<int64_t> r = ParseTokenCount(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
      EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
    }
  }
}

TEST(MatrixFit, ExactPowerLaws) {
  const std::vector<double> n = {2048, 16384, 131072, 1048576};
  std::vector<double> quad, lin, nlogn;
  for (double x : n) {
    quad.push_back(3e-9 * x * x);
    lin.push_back(7.0 * x);
    nlogn.push_back(x * std::log2(x));
  }
  PowerFit q = FitPowerLaw(n, quad).value();
  EXPECT_NEAR(q.exponent, 2.0, 1e-12);
  EXPECT_NEAR(q.coefficient, 3e-9, 1e-20);
  EXPECT_NEAR(q.r2, 1.0, 1e-12);
  EXPECT_EQ(q.points, 4);
  EXPECT_NEAR(FitPowerLaw(n, lin).value().exponent, 1.0, 1e-12);
  // n log n between 2K and 1M fits as n^~1.1: above 1, far below 2.
  const double e = FitPowerLaw(n, nlogn).value().exponent;
  EXPECT_GT(e, 1.05);
  EXPECT_LT(e, 1.15);
}

TEST(MatrixFit, NoisyLineAgainstClosedForm) {
  // Least squares of (log x, log y) computed independently in long double.
  const std::vector<double> x = {512, 2048, 8192, 32768};
  const std::vector<double> y = {0.011, 0.05, 0.19, 0.9};
  long double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const long double a = std::log((long double)x[i]), b = std::log((long double)y[i]);
    sx += a;
    sy += b;
    sxx += a * a;
    sxy += a * b;
  }
  const long double k = x.size();
  const long double slope = (k * sxy - sx * sy) / (k * sxx - sx * sx);
  EXPECT_NEAR(FitPowerLaw(x, y).value().exponent, double(slope), 1e-9);
}

TEST(MatrixFit, RefusesTooFewOrBadPoints) {
  EXPECT_FALSE(FitPowerLaw({1024}, {1.0}).ok());
  EXPECT_FALSE(FitPowerLaw({1024, 1024}, {1.0, 2.0}).ok());
  EXPECT_FALSE(FitPowerLaw({1024, 2048}, {1.0, 0.0}).ok());
  EXPECT_FALSE(FitPowerLaw({1024, 2048}, {1.0}).ok());
}

TEST(MatrixRelativeError, AgainstPlainLoop) {
  std::vector<float> a(1000), b(1000);
  for (int i = 0; i < 1000; ++i) {
    b[size_t(i)] = std::sin(0.1f * float(i));
    a[size_t(i)] = b[size_t(i)] + ((i % 7) ? 0.0f : 1e-3f);
  }
  double num = 0, den = 0;
  for (int i = 0; i < 1000; ++i) {
    num += std::pow(double(a[size_t(i)]) - double(b[size_t(i)]), 2);
    den += std::pow(double(b[size_t(i)]), 2);
  }
  EXPECT_NEAR(RelativeError(a.data(), b.data(), 1000), std::sqrt(num / den), 1e-15);
  EXPECT_EQ(RelativeError(b.data(), b.data(), 1000), 0.0);
  std::vector<float> z(4, 0.0f);
  EXPECT_EQ(RelativeError(z.data(), z.data(), 4), 0.0);
  EXPECT_TRUE(std::isinf(RelativeError(b.data(), z.data(), 4)));
}

TEST(MatrixDocument, SameBytesAsMakeDocumentScript) {
  for (int64_t bytes : {1, 97, 5000, 65536}) {
    const std::string path = ::testing::TempDir() + "/matrix_doc_" + std::to_string(bytes);
    const std::string cmd = std::string("bash ") + LONGCTX_SOURCE_DIR +
                            "/launch/make_document.sh " + std::to_string(bytes) + " " + path;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string doc = MakeSampleDocument(bytes);
    EXPECT_EQ(int64_t(doc.size()), bytes);
    EXPECT_EQ(doc, ss.str()) << bytes;
    std::remove(path.c_str());
  }
}

}  // namespace
}  // namespace longctx::bench
