#include "longctx/core/status.h"
#include "longctx/test/status_matchers.h"

#include <gtest/gtest.h>

namespace longctx {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument("{} is odd", x);
  return x / 2;
}

Status Chain(int x, int* out) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  *out = q;
  return Status::Ok();
}

TEST(Status, OkAndError) {
  EXPECT_OK(Status::Ok());
  const Status s = NotFound("tensor {} missing", "lm_head.weight");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "NotFound: tensor lm_head.weight missing");
  EXPECT_EQ(s.WithContext("model.safetensors").message(),
            "model.safetensors: tensor lm_head.weight missing");
}

TEST(Status, ResultAndMacros) {
  int out = -1;
  EXPECT_OK(Chain(8, &out));
  EXPECT_EQ(out, 2);
  out = -1;
  const Status s = Chain(6, &out);  // 6 -> 3 -> odd
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "3 is odd");
  EXPECT_EQ(out, -1) << "output parameters are set only on success";
  const Result<int> r = Status::Ok();  // an OK status is not a value
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace longctx
