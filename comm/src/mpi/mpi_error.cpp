#include "mpi_error.h"

#include <cstdio>
#include <cstring>
#include <string>

#include "longctx/core/log.h"

namespace longctx::comm::mpi {
namespace {

StatusCode CodeOfClass(int error_class) {
  switch (error_class) {
    case MPI_ERR_BUFFER:
    case MPI_ERR_COUNT:
    case MPI_ERR_TYPE:
    case MPI_ERR_TAG:
    case MPI_ERR_RANK:
    case MPI_ERR_ROOT:
    case MPI_ERR_OP:
    case MPI_ERR_ARG:
    case MPI_ERR_TRUNCATE:  // a message longer than the receive buffer
    case MPI_ERR_DIMS:
    case MPI_ERR_TOPOLOGY:
    case MPI_ERR_GROUP:
    case MPI_ERR_COMM:
    case MPI_ERR_REQUEST:
    case MPI_ERR_INFO_KEY:
    case MPI_ERR_INFO_VALUE:
      return StatusCode::kInvalidArgument;
    case MPI_ERR_NO_MEM:
      return StatusCode::kResourceExhausted;
    case MPI_ERR_UNSUPPORTED_OPERATION:
    case MPI_ERR_UNSUPPORTED_DATAREP:
      return StatusCode::kUnimplemented;
    default:
      return StatusCode::kInternal;
  }
}

}  // namespace

Status MpiStatus(int rc, const char* call, const char* file, int line) {
  if (rc == MPI_SUCCESS) return Status::Ok();
  int error_class = MPI_ERR_UNKNOWN;
  if (MPI_Error_class(rc, &error_class) != MPI_SUCCESS) error_class = MPI_ERR_UNKNOWN;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) {
    std::snprintf(text, sizeof(text), "MPI error code %d", rc);
  }
  const char* base = std::strrchr(file, '/');
  Status status(CodeOfClass(error_class),
                fmt::format("{}:{}: {} failed: {}", base ? base + 1 : file, line, call, text));
  LONGCTX_LOG_ERROR("{}", status.ToString());
  return status;
}

}  // namespace longctx::comm::mpi
