// `longctx bench tokenize` (bench/include/longctx/bench/tokenize_bench.h). The reference runs as
// a child process (node, with RAYON_NUM_THREADS=1 so the library's encode has one thread), timed
// inside the child around encode() alone, as ours is timed around Encode() alone.
#include "longctx/core/file.h"
#include "longctx/bench/tokenize_bench.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "longctx/model/tokenizer.h"

extern char** environ;

namespace longctx::bench {
namespace {

using Clock = std::chrono::steady_clock;

// The reference side: encode the file `reps` times, keep the best time, write ids and seconds.
constexpr const char* kReferenceJs = R"JS(
const path = require('path'); const fs = require('fs');
const [modules, tokPath, inPath, outPath, reps] = process.argv.slice(2);
const { Tokenizer } = require(path.join(modules, 'tokenizers'));
(async () => {
  const t0 = process.hrtime.bigint();
  const tok = Tokenizer.fromFile(tokPath);
  const load = Number(process.hrtime.bigint() - t0) / 1e9;
  const text = fs.readFileSync(inPath).toString('utf8');
  let best = Infinity, ids = null;
  for (let r = 0; r < Number(reps); ++r) {
    const t = process.hrtime.bigint();
    const enc = await tok.encode(text, null, { addSpecialTokens: true });
    const s = Number(process.hrtime.bigint() - t) / 1e9;
    if (s < best) best = s;
    ids = enc.getIds();
  }
  fs.writeFileSync(outPath, JSON.stringify({ seconds: best, load, ids: Array.from(ids) }));
})().catch((e) => { console.error(e.message); process.exit(1); });
)JS";

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Runs argv with RAYON_NUM_THREADS=1; its exit status.
Result<int> Spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  setenv("RAYON_NUM_THREADS", "1", 1);
  pid_t pid;
  const int rc = posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
  if (rc != 0) return NotFound("cannot start {}: {}", args[0], std::strerror(rc));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Internal("waitpid: {}", std::strerror(errno));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

Status RunTokenizeBench(const TokenizeBenchOptions& o) {
  if (o.tokenizer.empty() || o.input.empty()) {
    return InvalidArgument("give --tokenizer PATH and --input TEXT");
  }
  if (o.reps < 1 || o.threads < 1) return InvalidArgument("--reps and --threads must be >= 1");
  auto t0 = Clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<model::HfTokenizer> tok, model::LoadHfTokenizer(o.tokenizer));
  const double load_s = Since(t0);
  std::ifstream in(o.input, std::ios::binary);
  if (!in) return NotFound("{}: cannot open", o.input);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const double mb = double(text.size()) / 1e6;

  // Ours, one thread.
  double ours = 1e30;
  std::vector<int32_t> ids;
  for (int r = 0; r < o.reps; ++r) {
    t0 = Clock::now();
    ASSIGN_OR_RETURN(ids, tok->Encode(text, true));
    ours = std::min(ours, Since(t0));
  }
  // Ours, parallel parts (must equal the one-thread ids).
  double par = 0.0;
  bool par_equal = true;
  if (o.threads > 1) {
    par = 1e30;
    for (int r = 0; r < o.reps; ++r) {
      t0 = Clock::now();
      ASSIGN_OR_RETURN(std::vector<int32_t> p, tok->EncodeParallel(text, true, o.threads));
      par = std::min(par, Since(t0));
      par_equal = par_equal && p == ids;
    }
  }
  fmt::print("bench tokenize: {} ({:.2f} MB, {} tokens), loaded in {:.2f} s\n", tok->Describe(), mb,
             ids.size(), load_s);
  fmt::print("  longctx, 1 thread:      {:8.3f} s  {:7.2f} MB/s  {:9.0f} tokens/s\n", ours,
             mb / ours, double(ids.size()) / ours);
  if (o.threads > 1) {
    fmt::print("  longctx, {} threads:     {:8.3f} s  {:7.2f} MB/s  ids {} the 1-thread ids\n",
               o.threads, par, mb / par, par_equal ? "equal" : "DIFFER FROM");
  }

  // The reference, same text, one thread.
  std::string modules = o.reference;
  if (modules.empty() && std::getenv("LONGCTX_TOKENIZER_REFERENCE")) {
    modules = std::getenv("LONGCTX_TOKENIZER_REFERENCE");
  }
  nlohmann::json report = {{"tokenizer", tok->Describe()}, {"bytes", text.size()},
                           {"tokens", ids.size()}, {"longctx_seconds", ours},
                           {"longctx_parallel_seconds", par}, {"threads", o.threads},
                           {"parallel_ids_equal", par_equal}};
  Status result = par_equal ? Status::Ok() : Internal("the parallel encode differs from the 1-thread one");
  if (modules.empty()) {
    fmt::print("  reference: skipped (give --reference NODE_MODULES or set "
               "LONGCTX_TOKENIZER_REFERENCE; tests/tokenizer/install_reference.sh installs it)\n");
  } else {
    char dir_template[] = "/tmp/longctx-bench-tokenize-XXXXXX";
    if (mkdtemp(dir_template) == nullptr) return Internal("mkdtemp: {}", std::strerror(errno));
    const std::filesystem::path dir(dir_template);
    RETURN_IF_ERROR(WriteFileAtomically((dir / "reference.js").string(), kReferenceJs));
    std::string json_path = o.tokenizer;
    if (std::filesystem::is_directory(json_path)) json_path += "/tokenizer.json";
    const auto out = dir / "out.json";
    auto rc = Spawn({o.node, (dir / "reference.js").string(), std::filesystem::absolute(modules).string(),
                     json_path, o.input, out.string(), std::to_string(o.reps)});
    nlohmann::json ref;
    if (rc.ok() && *rc == 0) {
      std::ifstream rin(out);
      ref = nlohmann::json::parse(rin, nullptr, false);
    }
    std::filesystem::remove_all(dir);
    if (!rc.ok()) return rc.status();
    if (*rc != 0 || !ref.is_object()) return Internal("the reference ({}) failed (exit {})", o.node, *rc);
    const double theirs = ref["seconds"].get<double>();
    const bool equal = ref["ids"].get<std::vector<int32_t>>() == ids;
    fmt::print("  tokenizers (Rust, node binding), 1 thread: {:8.3f} s  {:7.2f} MB/s  ids {} ours"
               " (loaded in {:.2f} s)\n", theirs, mb / theirs, equal ? "equal" : "DIFFER FROM",
               ref["load"].get<double>());
    fmt::print("  speed ratio (reference time / ours), 1 thread: {:.2f}x\n", theirs / ours);
    report["reference_seconds"] = theirs;
    report["ratio"] = theirs / ours;
    report["reference_ids_equal"] = equal;
    if (!equal && result.ok()) result = Internal("our ids differ from the reference's");
  }
  if (!o.json.empty()) {
    RETURN_IF_ERROR(WriteFileAtomically(o.json, report.dump(2) + "\n").WithContext("--json"));
  }
  return result;
}

}  // namespace longctx::bench
