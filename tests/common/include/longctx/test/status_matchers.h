// GoogleTest assertions for longctx::Status and Result<T> (tests/common): the one home of
// ASSERT_OK / EXPECT_OK / ASSERT_OK_AND_ASSIGN, so a failure always prints the expression and the
// full Status ("code: message").
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>

#include "longctx/core/status.h"

namespace longctx::test {

// The Status of a Status or of a Result<T>.
inline const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const Result<T>& r) {
  return r.status();
}

// An AssertionResult that is a success when `value` (a Status or a Result) is OK.
template <typename S>
::testing::AssertionResult IsOk(const char* expr, const S& value) {
  const Status& s = StatusOf(value);
  if (s.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << expr << " -> " << s.ToString();
}

}  // namespace longctx::test

// EXPECT_OK(expr) / ASSERT_OK(expr): expr is a Status or a Result<T> and must be OK. One
// statement (safe in an unbraced if); the failure message is the expression and the Status.
#define EXPECT_OK(expr)                                      \
  do {                                                       \
    EXPECT_PRED_FORMAT1(::longctx::test::IsOk, expr);        \
  } while (0)
#define ASSERT_OK(expr)                                      \
  do {                                                       \
    ASSERT_PRED_FORMAT1(::longctx::test::IsOk, expr);        \
  } while (0)

// ASSERT_OK_AND_ASSIGN(lhs, expr): expr is a Result<T>; asserts it is OK and moves the value into
// lhs (a declaration such as `auto x` or an existing variable). Only in functions returning void.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  LONGCTX_TEST_ASSERT_OK_AND_ASSIGN_IMPL(LONGCTX_CONCAT(_lc_test_result_, __LINE__), lhs, expr)
#define LONGCTX_TEST_ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                              \
  ASSERT_TRUE(tmp.ok()) << #expr << " -> " << tmp.status().ToString(); \
  lhs = std::move(tmp).value()
