// The subcommands of the `longctx` CLI. Each registers its flags on a CLI11 subcommand and
// returns a runner; a runner returns a Status that main() turns into a one-line error and a
// non-zero exit.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "longctx/core/status.h"

namespace longctx::cli {

using Runner = std::function<Status()>;

Runner AddAttentionCommand(CLI::App& app);
Runner AddBenchCommand(CLI::App& app);
Runner AddRunCommand(CLI::App& app);
Runner AddMkmodelCommand(CLI::App& app);

}  // namespace longctx::cli
