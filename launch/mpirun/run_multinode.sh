#!/usr/bin/env bash
# `longctx run` across nodes with mpirun and a hostfile (no Slurm). Every node needs the same
# longctx binary path and must reach the input and output paths (a shared filesystem).
#   HOSTFILE=launch/mpirun/hostfile.example NP=8 launch/mpirun/run_multinode.sh \
#       --model /models/m --input /shared/contract.txt --out /shared/run1
# Network: OpenMPI's TCP BTL on the interface in BTL_IF (default: all); UCX (pml ucx) when the
# fabric has it — see docs/deploy.md.
set -euo pipefail
HOSTFILE="${HOSTFILE:?set HOSTFILE}"
NP="${NP:?set NP (total ranks)}"
LONGCTX="${LONGCTX:-longctx}"
THREADS="${THREADS:-1}"
ARGS=(--hostfile "$HOSTFILE" -np "$NP" --map-by "ppr:$(awk '/slots=/{split($2,a,"="); print a[2]; exit}' "$HOSTFILE"):node"
      --bind-to none -x LONGCTX_COMM_TIMEOUT_S -x UCX_TLS -x OMPI_MCA_btl -x OMPI_MCA_pml)
if [[ -n "${BTL_IF:-}" ]]; then
  ARGS+=(--mca btl self,vader,tcp --mca btl_tcp_if_include "$BTL_IF" --mca oob_tcp_if_include "$BTL_IF")
fi
if [[ $(id -u) -eq 0 ]]; then ARGS+=(--allow-run-as-root); fi
exec mpirun "${ARGS[@]}" "$LONGCTX" run --threads "$THREADS" --progress off "$@"
