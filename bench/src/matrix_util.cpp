// `longctx bench matrix`: the pure pieces (token counts, power-law fit, relative error, the
// sample document) and the plumbing (subprocesses with a time limit, machine facts).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "longctx/bench/matrix.h"
#include "longctx/core/file.h"
#include "matrix_internal.h"

namespace longctx::bench {

Result<int64_t> ParseTokenCount(std::string_view text) {
  if (text.empty()) return InvalidArgument("a length is empty");
  int64_t mult = 1;
  std::string_view digits = text;
  const char last = text.back();
  if (last == 'K' || last == 'k') mult = 1024;
  if (last == 'M' || last == 'm') mult = 1024 * 1024;
  if (mult != 1) digits.remove_suffix(1);
  if (digits.empty() || digits.size() > 12) {
    return InvalidArgument("length '{}': expected a whole number of tokens like 2048, 2K or 1M",
                           text);
  }
  int64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') {
      return InvalidArgument("length '{}': expected a whole number of tokens like 2048, 2K or 1M",
                             text);
    }
    v = v * 10 + (c - '0');
  }
  if (v <= 0) return InvalidArgument("length '{}' must be at least 1 token", text);
  const int64_t tokens = v * mult;
  if (tokens > (int64_t(1) << 31)) {
    return InvalidArgument("length '{}' is over 2^31 tokens", text);
  }
  return tokens;
}

Result<PowerFit> FitPowerLaw(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) return InvalidArgument("fit: {} x values, {} y values", x.size(), y.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0;
  const double m = double(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if (!(x[i] > 0) || !(y[i] > 0)) return InvalidArgument("fit: values must be positive");
    const double lx = std::log(x[i]), ly = std::log(y[i]);
    sx += lx;
    sy += ly;
    sxx += lx * lx;
    sxy += lx * ly;
    syy += ly * ly;
  }
  const double vxx = sxx - sx * sx / m, vxy = sxy - sx * sy / m, vyy = syy - sy * sy / m;
  if (x.size() < 2 || !(vxx > 1e-12)) {
    return InvalidArgument("fit: needs at least 2 distinct lengths, got {} points", x.size());
  }
  PowerFit f;
  f.exponent = vxy / vxx;
  f.coefficient = std::exp((sy - f.exponent * sx) / m);
  f.r2 = vyy > 0 ? (vxy * vxy) / (vxx * vyy) : 1.0;
  f.points = int(x.size());
  return f;
}

double RelativeError(const float* a, const float* b, int64_t count) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  if (den == 0) return num == 0 ? 0.0 : INFINITY;
  return std::sqrt(num / den);
}

std::string MakeSampleDocument(int64_t bytes) {
  static const char* const kWho[] = {"supplier", "buyer", "licensor", "licensee", "agent",
                                     "trustee"};
  static const char* const kAct[] = {"deliver", "inspect", "replace", "certify", "insure",
                                     "store"};
  std::string out;
  out.reserve(size_t(bytes));
  for (int64_t i = 1; int64_t(out.size()) < bytes; ++i) {
    std::string s = fmt::format(
        "Clause {}: the {} shall {} the goods of lot {}, at its own cost; notice is due within "
        "{} days.",
        i, kWho[i % 6], kAct[i % 6], i * 7 % 1000, i % 90 + 1);
    if (i % 7 == 0) s += fmt::format(" Is the {} liable if the seal is broken? It is!", kWho[i % 6]);
    s += i % 5 == 0 ? "\n\n" : " ";
    out += s.substr(0, size_t(bytes) - out.size());
  }
  return out;
}

namespace matrix {

std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (!path) return "";
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    const std::string full = dir + "/" + name;
    if (access(full.c_str(), X_OK) == 0) return full;
  }
  return "";
}

Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, const std::string& log_path,
                                 double limit_s) {
  if (argv.empty()) return Internal("RunProcess: empty argv");
  // Everything the child needs is prepared before fork: it only calls async-signal-safe functions.
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  UniqueFd log(open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (log.get() < 0) return ErrnoStatus(errno, log_path);
  UniqueFd devnull(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (devnull.get() < 0) return ErrnoStatus(errno, "/dev/null");
  const pid_t parent = getpid();
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid < 0) return ErrnoStatus(errno, "fork");
  if (pid == 0) {
    setpgid(0, 0);                     // its own group: a time-out ends mpirun and its ranks
    prctl(PR_SET_PDEATHSIG, SIGTERM);  // and it does not outlive the matrix
    if (getppid() != parent) _exit(127);
    dup2(devnull.get(), 0);
    dup2(log.get(), 1);
    dup2(log.get(), 2);
    execv(args[0], args.data());
    _exit(127);
  }
  setpgid(pid, pid);  // also from here, so the group exists before any kill below
  // -1 on kernels before 5.3: then plain polling.
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  ProcessResult r;
  int status = 0;
  bool term_sent = false;
  std::chrono::steady_clock::time_point term_at;
  for (;;) {
    const pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) return ErrnoStatus(errno, "waitpid");
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - t0).count();
    if (!term_sent && elapsed > limit_s) {
      r.timed_out = true;
      kill(-pid, SIGTERM);
      term_sent = true;
      term_at = now;
    } else if (term_sent && std::chrono::duration<double>(now - term_at).count() > 5.0) {
      kill(-pid, SIGKILL);
    }
    // Sleep until the child exits (its pidfd turns readable) or 20 ms pass, so the measured
    // time is exact rather than rounded up to the polling step.
    if (pidfd.get() >= 0) {
      pollfd pfd{pidfd.get(), POLLIN, 0};
      (void)poll(&pfd, 1, 20);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (r.timed_out) kill(-pid, SIGKILL);  // any straggler of the group
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

Result<ScratchDir> ScratchDir::Create(const std::string& prefix) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (!::mkdtemp(tmpl.data())) return ErrnoStatus(errno, "mkdtemp " + tmpl);
  return ScratchDir(std::move(tmpl));
}

ScratchDir::~ScratchDir() {
  if (path_.empty() || std::getenv("LONGCTX_KEEP_RUNS")) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string LastLogLine(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  }
  if (last.size() > 500) last = last.substr(0, 497) + "...";
  return last;
}

namespace {
std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}
double MemInfoBytes(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string k;
  double kib = 0;
  std::string unit;
  while (in >> k >> kib >> unit) {
    if (k == key + ":") return kib * 1024.0;
  }
  return 0;
}
}  // namespace

std::string LoadAverage() { return ReadFirstLine("/proc/loadavg"); }
double MemAvailableBytes() { return MemInfoBytes("MemAvailable"); }

MachineInfo ReadMachineInfo() {
  MachineInfo m;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  m.host = host;
  std::ifstream cpu("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpu, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) m.cpu = line.substr(colon + 2);
      break;
    }
  }
  m.cores = int(sysconf(_SC_NPROCESSORS_ONLN));
  m.mem_total = MemInfoBytes("MemTotal");
  m.mem_available = MemAvailableBytes();
  const std::time_t now = std::time(nullptr);
  std::tm tm {};
  gmtime_r(&now, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  m.date_utc = buf;
  m.load_before = LoadAverage();
  return m;
}

}  // namespace matrix
}  // namespace longctx::bench
