// Status helpers used across vitq.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define VITQ_CONCAT_INNER(a, b) a##b
#define VITQ_CONCAT(a, b) VITQ_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define VITQ_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status vitq_status_ = (expr);        \
    if (!vitq_status_.ok()) return vitq_status_; \
  } while (0)

// `lhs = value of expr` (an absl::StatusOr), or returns its error.
#define VITQ_ASSIGN_OR_RETURN(lhs, expr) \
  VITQ_ASSIGN_OR_RETURN_IMPL(VITQ_CONCAT(vitq_statusor_, __LINE__), lhs, expr)
#define VITQ_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(*tmp)
