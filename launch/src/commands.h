// The subcommands of the `longctx` CLI. Each registers its flags on a CLI11 subcommand and
// returns a runner; a runner returns a Status that main() turns into a one-line error and a
// non-zero exit.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "longctx/comm/communicator.h"
#include "longctx/core/status.h"

namespace longctx::cli {

using Runner = std::function<Status()>;

Runner AddAttentionCommand(CLI::App& app);

// Test hook: when LONGCTX_TEST_KILL_RANK names this rank, it waits until every rank has reached
// this point and then dies by SIGKILL, as a crashed or OOM-killed process would. Used by the
// mpirun and Slurm tests to check that a dead rank ends the job, visibly and quickly.
void MaybeKillForTest(comm::Communicator& comm);
// Test hook: when LONGCTX_TEST_PAUSE_FILE names a file, rank 0 creates it and every rank waits
// (up to 120 s) until the test removes it — e.g. to kill a store process between the prefill
// and the decode.
void MaybePauseForTest(comm::Communicator& comm);
Runner AddBenchCommand(CLI::App& app);
Runner AddPlanCommand(CLI::App& app);  // `longctx plan`: the capacity model
Runner AddRunCommand(CLI::App& app);
Runner AddMkmodelCommand(CLI::App& app);
// `longctx store`: a memory-only KV store process (cache/store.h).
Runner AddStoreCommand(CLI::App& app);
// The control plane: the coordinator service, a worker group's rank loop, submit and status.
Runner AddCoordinatorCommand(CLI::App& app);
Runner AddSubmitCommand(CLI::App& app);
Runner AddStatusCommand(CLI::App& app);
Runner AddWorkerCommand(CLI::App& app);
Runner AddDataCommand(CLI::App& app);  // `longctx data`: synthetic task data (train/)
// `longctx tokenize` / `detokenize`: text <-> ids with a tokenizer.json (model/tokenizer.h).
Runner AddTokenizeCommand(CLI::App& app);
Runner AddDetokenizeCommand(CLI::App& app);
// Training (DESIGN.md §6): one sequence's loss and gradients.
Runner AddGradCommand(CLI::App& app);
Runner AddTrainCommand(CLI::App& app);
// Task accuracy of a model on fresh documents, answered as `run --query` answers.
Runner AddEvalCommand(CLI::App& app);

}  // namespace longctx::cli
