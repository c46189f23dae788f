// The one place where MPI return codes become longctx Status values (the MPI backend sets
// MPI_ERRORS_RETURN on its communicators, so every failure arrives here as a code).
#pragma once

#include <mpi.h>

#include "longctx/core/status.h"

namespace longctx::comm::mpi {

// OK for MPI_SUCCESS; otherwise a Status naming file:line, the call and MPI_Error_string,
// with a code from the MPI error class (bad arguments -> kInvalidArgument, out of memory ->
// kResourceExhausted, anything else -> kInternal). Logs the error once.
Status MpiStatus(int rc, const char* call, const char* file, int line);

}  // namespace longctx::comm::mpi

// LONGCTX_MPI(MPI_Foo(...)) evaluates to a Status.
#define LONGCTX_MPI(call) ::longctx::comm::mpi::MpiStatus((call), #call, __FILE__, __LINE__)
#define LONGCTX_MPI_RETURN_IF_ERROR(call) RETURN_IF_ERROR(LONGCTX_MPI(call))
