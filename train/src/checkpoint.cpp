#include "longctx/train/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <unistd.h>

#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "longctx/core/file.h"
#include "longctx/model/config.h"
#include "longctx/model/safetensors.h"

namespace longctx::train {
namespace {

namespace fs = std::filesystem;

Status FsyncPath(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "open " + path);
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "fsync " + path);
  return Status::Ok();
}

}  // namespace

Status SaveCheckpoint(const std::string& dir, const worker::ParamBlock& params, const AdamW& opt,
                      const TrainState& state) {
  fs::path target = fs::path(dir).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/step-1/"
  std::error_code ec;
  if (target.has_parent_path()) {
    fs::create_directories(target.parent_path(), ec);
    if (ec) return FailedPrecondition("checkpoint: cannot create {}: {}", dir, ec.message());
  }
  // A fresh directory of ours beside the target (random name, never an existing entry).
  ASSIGN_OR_RETURN(const std::string tmp, MakeTempDirectory(target.string()));
  auto fail = [&](Status st) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    return st;
  };
  Status st = model::WriteModelConfig(tmp + "/config.json", params.config());
  if (st.ok()) {
    st = model::WriteSafetensors(tmp + "/model.safetensors", params.Refs(params.data()),
                                 {{"format", "pt"}});
  }
  if (st.ok()) {
    std::vector<model::TensorRef> moments;
    for (auto [prefix, values] : {std::pair{"m.", opt.m().data()}, std::pair{"v.", opt.v().data()}}) {
      for (model::TensorRef t : params.Refs(values)) {
        t.name = prefix + t.name;
        moments.push_back(std::move(t));
      }
    }
    st = model::WriteSafetensors(tmp + "/optimizer.safetensors", moments);
  }
  if (st.ok()) {
    nlohmann::json j;
    j["format"] = "longctx-train-state/1";
    j["step"] = state.step;
    j["adam_steps"] = state.adam_steps;
    j["curriculum"] = state.curriculum;
    j["seed"] = state.seed;
    j["ema_loss"] = state.ema_loss;
    j["tokens_seen"] = state.tokens_seen;
    st = WriteFileAtomically(tmp + "/state.json", j.dump(2) + "\n");
  }
  if (st.ok()) st = FsyncPath(tmp);
  if (!st.ok()) return fail(st.WithContext("checkpoint " + dir));
  // Replace: an existing directory of that name is swapped with the new one in one step
  // (RENAME_EXCHANGE: the name always holds a whole checkpoint, old or new) and the old one,
  // now under the temporary name, is removed. A file system without the exchange gets the old
  // way: move the old directory aside, rename the new one in, remove the old one.
  const bool had = fs::exists(fs::symlink_status(target, ec));
  if (had && ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp, ec);
  } else {
    if (had && errno != EINVAL && errno != ENOSYS) {
      return fail(ErrnoStatus(errno, fmt::format("checkpoint: cannot swap {} into place", dir)));
    }
    ASSIGN_OR_RETURN(const std::string old, MakeTempDirectory(target.string()));
    if (had) {
      fs::rename(target, old, ec);  // onto the empty directory `old`
      if (ec) {
        fs::remove(old, ec);
        return fail(FailedPrecondition("checkpoint: cannot move {} aside: {}", dir, ec.message()));
      }
    } else {
      fs::remove(old, ec);
    }
    fs::rename(tmp, target, ec);
    if (ec) {
      return fail(FailedPrecondition("checkpoint: cannot rename into {}: {}", dir, ec.message()));
    }
    if (had) fs::remove_all(old, ec);
  }
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  return FsyncPath(parent.string());
}

Status LoadOptimizerState(const std::string& dir, const worker::ParamBlock& params, AdamW* opt,
                          TrainState* state) {
  std::string text;
  {
    UniqueFd fd(::open((dir + "/state.json").c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return ErrnoStatus(errno, "--resume: " + dir + "/state.json");
    char buf[4096];
    ssize_t got;
    while ((got = ::read(fd.get(), buf, sizeof buf)) > 0) text.append(buf, size_t(got));
    if (got < 0) return ErrnoStatus(errno, "--resume: read " + dir + "/state.json");
  }
  TrainState s;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.at("format") != "longctx-train-state/1") {
      return InvalidArgument("--resume: {}/state.json has an unknown format", dir);
    }
    s.step = j.at("step").get<int64_t>();
    s.adam_steps = j.at("adam_steps").get<int64_t>();
    s.curriculum = j.at("curriculum").get<std::string>();
    s.seed = j.at("seed").get<uint64_t>();
    s.ema_loss = j.at("ema_loss").get<std::array<double, kMixTasks>>();
    s.tokens_seen = j.at("tokens_seen").get<double>();
  } catch (const std::exception& e) {
    return InvalidArgument("--resume: {}/state.json is malformed: {}", dir, e.what());
  }
  if (s.step < 0 || s.adam_steps < 0) {
    return InvalidArgument("--resume: {}/state.json has a negative step", dir);
  }
  ASSIGN_OR_RETURN(model::SafetensorsFile f, model::SafetensorsFile::Open(dir + "/optimizer.safetensors"));
  AdamW loaded(params.size());
  for (const worker::ParamTensor& p : params.tensors()) {
    for (auto [prefix, dst] : {std::pair{"m.", loaded.m().data()}, std::pair{"v.", loaded.v().data()}}) {
      ASSIGN_OR_RETURN(model::TensorRef t, f.Get(prefix + p.name));
      if (t.dtype != DType::kF32 || t.shape != p.shape) {
        return InvalidArgument("--resume: {}: {}{} does not match the model's tensor", f.path(),
                               prefix, p.name);
      }
      RETURN_IF_ERROR(model::CopyToFloat32(t, std::span<float>(dst + p.offset, p.numel)));
    }
  }
  loaded.set_steps(s.adam_steps);
  *opt = std::move(loaded);
  *state = s;
  return Status::Ok();
}

}  // namespace longctx::train
