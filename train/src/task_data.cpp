// The task formats (passkey, RULER niah / multikey / variable tracking, lm), needle placement at
// sentence boundaries of the filler, and the files of a data set.
#include "longctx/train/task_data.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "longctx/core/file.h"
#include "longctx/core/npy.h"
#include "random_draw.h"

namespace longctx::train {
namespace {

// Filler bytes every task document keeps at least, so that a needle has a haystack.
constexpr int64_t kMinFillerBytes = 64;
// The depth a needle lands at may move this share of the filler to reach a sentence boundary.
constexpr double kDepthTolerance = 0.01;
// vt: the most copies per chain.
constexpr int64_t kMaxHops = 1000;

// Common English nouns for RULER's "special magic number for {word}" (at most kMaxWordLen
// letters, all distinct).
constexpr size_t kMaxWordLen = 10;
constexpr std::array<std::string_view, 200> kWords = {
    "apple",      "anchor",  "arrow",     "autumn",   "bakery",  "balloon", "banana",
    "basket",     "beach",   "bicycle",   "blanket",  "bottle",  "bridge",  "bucket",
    "butter",     "cabin",   "camera",    "candle",   "canyon",  "carpet",  "castle",
    "cherry",     "chimney", "circle",    "cliff",    "clock",   "cloud",   "coffee",
    "comet",      "compass", "copper",    "cotton",   "cowboy",  "crayon",  "cricket",
    "crystal",    "curtain", "daisy",     "desert",   "diamond", "dolphin", "dragon",
    "drum",       "eagle",   "elephant",  "engine",   "falcon",  "feather", "fiddle",
    "garden",     "giraffe", "glacier",   "goblet",   "gravel",  "guitar",  "hammer",
    "harbor",     "harvest", "helmet",    "honey",    "horizon", "island",  "jacket",
    "jungle",     "kettle",  "kitchen",   "ladder",   "lantern", "lemon",   "library",
    "lighthouse", "lizard",  "magnet",    "mailbox",  "maple",   "marble",  "meadow",
    "mirror",     "monkey",  "mountain",  "mushroom", "needle",  "nest",    "notebook",
    "oasis",      "ocean",   "orange",    "orchard",  "otter",   "oyster",  "paddle",
    "palace",     "panther", "parrot",    "peach",    "pebble",  "pencil",  "pepper",
    "piano",      "pillow",  "pirate",    "planet",   "pocket",  "pony",    "potato",
    "pumpkin",    "puzzle",  "quilt",     "rabbit",   "raccoon", "radish",  "rainbow",
    "raven",      "ribbon",  "river",     "rocket",   "saddle",  "salmon",  "sandal",
    "satellite",  "scarf",   "shadow",    "shell",    "signal",  "silver",  "skate",
    "sparrow",    "spider",  "spoon",     "squirrel", "stable",  "statue",  "storm",
    "sugar",      "summer",  "sunflower", "swallow",  "table",   "teapot",  "temple",
    "thunder",    "tiger",   "timber",    "tomato",   "tractor", "trumpet", "tulip",
    "tunnel",     "turtle",  "umbrella",  "valley",   "velvet",  "village", "violin",
    "volcano",    "wagon",   "walnut",    "walrus",   "window",  "winter",  "wizard",
    "wolf",       "yacht",   "zebra",     "acorn",    "badger",  "beacon",  "biscuit",
    "blossom",    "boulder", "cactus",    "canoe",    "cedar",   "chalk",   "cobalt",
    "coral",      "dune",    "ember",     "fern",     "fjord",   "garnet",  "gazelle",
    "granite",    "hazel",   "heron",     "iceberg",  "ivory",   "jasmine", "kayak",
    "lagoon",     "lotus",   "mango",     "marlin",   "meteor",  "nutmeg",  "olive",
    "opal",       "orbit",   "pelican",   "prairie",
};
static_assert(std::all_of(kWords.begin(), kWords.end(), [](std::string_view w) {
  return !w.empty() && w.size() <= kMaxWordLen;
}));

std::string PasskeyNeedle(std::string_view key) {
  return fmt::format("The pass key is {}. Remember it. {} is the pass key.", key, key);
}
constexpr std::string_view kPasskeyQuestion = "\n\nWhat is the pass key? The pass key is";

std::string NiahNeedle(std::string_view word, std::string_view number) {
  return fmt::format("One of the special magic numbers for {} is: {}.", word, number);
}
std::string NiahQuestion(std::string_view word) {
  return fmt::format(
      "\n\nWhat is the special magic number for {} mentioned in the provided text? The special "
      "magic number for {} mentioned in the provided text is",
      word, word);
}

std::string VtQuestion(std::string_view value) {
  return fmt::format(
      "\n\nFind all variables that are assigned the value {} in the text above. Answer:", value);
}

// A decimal number of exactly `digits` digits (no leading zero).
std::string DrawNumber(std::mt19937_64& rng, int digits) {
  uint64_t low = 1;
  for (int i = 1; i < digits; ++i) low *= 10;
  return std::to_string(low + UniformBelow(rng, 9 * low));
}

// A variable name: five capital letters, as RULER's variable tracking draws them.
std::string DrawName(std::mt19937_64& rng) {
  std::string name(5, 'A');
  for (char& c : name) c = char('A' + UniformBelow(rng, 26));
  return name;
}

double DrawDepth(std::mt19937_64& rng, double requested) {
  return requested >= 0 ? requested : UniformUnit(rng);
}

// A needle to insert: its text (a space follows it in the context) and its depth.
struct Needle {
  std::string text;
  double depth = 0;
};

bool SentenceBoundary(std::string_view f, size_t p) {
  if (p == 0) return true;
  if (p < 2) return false;
  const char a = f[p - 2], b = f[p - 1];
  return (b == ' ' && (a == '.' || a == '!' || a == '?')) || (a == '\n' && b == '\n');
}
bool WordBoundary(std::string_view f, size_t p) {
  return p == 0 || f[p - 1] == ' ' || (p >= 2 && f[p - 2] == '\n' && f[p - 1] == '\n');
}

// Where a needle of depth d goes in filler f: the sentence boundary nearest to d * |f| within
// kDepthTolerance * |f|, else the nearest word boundary there, else exactly d * |f|.
size_t InsertionPoint(std::string_view f, double depth) {
  const auto n = int64_t(f.size());
  const auto target = int64_t(std::llround(depth * double(n)));
  const auto tol = int64_t(std::floor(kDepthTolerance * double(n)));
  for (auto* boundary : {&SentenceBoundary, &WordBoundary}) {
    for (int64_t delta = 0; delta <= tol; ++delta) {
      for (const int64_t p : {target - delta, target + delta}) {
        if (p >= 0 && p <= n && boundary(f, size_t(p))) return size_t(p);
      }
    }
  }
  return size_t(std::clamp<int64_t>(target, 0, n));
}

// The needles' sizes in the context (each followed by one space).
int64_t NeedleBytes(const std::vector<Needle>& needles) {
  int64_t total = 0;
  for (const Needle& n : needles) total += int64_t(n.text.size()) + 1;
  return total;
}

// Fills doc->context and doc->depths / needle_begins: `filler_bytes` bytes of filler with the
// needles inserted. Needles that land on the same point keep their listed order.
void BuildContext(const FillerCorpus& filler, std::mt19937_64& rng, int64_t filler_bytes,
                  Split split, const std::vector<Needle>& needles, TaskDocument* doc) {
  std::string f;
  filler.Append(rng, filler_bytes, &f, split);
  std::vector<size_t> points(needles.size());
  for (size_t i = 0; i < needles.size(); ++i) points[i] = InsertionPoint(f, needles[i].depth);
  std::vector<size_t> order(needles.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return points[a] < points[b]; });
  doc->context.clear();
  doc->context.reserve(f.size() + size_t(NeedleBytes(needles)));
  doc->depths.assign(needles.size(), 0.0);
  doc->needle_begins.assign(needles.size(), 0);
  doc->needle_ends.assign(needles.size(), 0);
  size_t copied = 0;
  for (size_t i : order) {
    doc->context.append(f, copied, points[i] - copied);
    copied = points[i];
    doc->needle_begins[i] = int64_t(doc->context.size());
    doc->depths[i] = f.empty() ? 0.0 : double(points[i]) / double(f.size());
    doc->context.append(needles[i].text);
    doc->needle_ends[i] = int64_t(doc->context.size());
    doc->context.push_back(' ');
  }
  doc->context.append(f, copied, std::string::npos);
}

struct TaskParts {
  std::vector<Needle> needles;
  std::string question, answer;
};

// The task's needles, question and answer. `longest` draws the longest words the task can
// draw instead of random ones (for MinTokens).
TaskParts DrawParts(Task task, const TaskOptions& o, std::mt19937_64& rng, bool longest) {
  TaskParts parts;
  auto word_at = [&](size_t i) {
    return longest ? std::string(kMaxWordLen, 'w') : std::string(kWords[i]);
  };
  switch (task) {
    case Task::kPasskey: {
      const std::string key = DrawNumber(rng, 5);
      parts.needles.push_back({PasskeyNeedle(key), DrawDepth(rng, o.depth)});
      parts.question = std::string(kPasskeyQuestion);
      parts.answer = " " + key + ".";
      break;
    }
    case Task::kNiah:
    case Task::kMultikey: {
      const size_t count = task == Task::kNiah ? 1 : size_t(o.keys) + 1;
      // Distinct words: a partial Fisher-Yates shuffle of the word list's indices.
      std::array<size_t, kWords.size()> idx;
      for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
      std::vector<std::string> numbers;
      for (size_t k = 0; k < count; ++k) {
        std::swap(idx[k], idx[k + UniformBelow(rng, idx.size() - k)]);
        std::string number;
        do {
          number = DrawNumber(rng, 7);
        } while (std::find(numbers.begin(), numbers.end(), number) != numbers.end());
        numbers.push_back(number);
        const double depth = k == 0 ? DrawDepth(rng, o.depth) : UniformUnit(rng);
        parts.needles.push_back({NiahNeedle(word_at(idx[k]), number), depth});
      }
      parts.question = NiahQuestion(word_at(idx[0]));
      parts.answer = " " + numbers[0] + ".";
      break;
    }
    case Task::kVt: {
      std::vector<std::string> names;
      auto fresh_name = [&] {
        std::string name;
        do {
          name = DrawName(rng);
        } while (std::find(names.begin(), names.end(), name) != names.end());
        names.push_back(name);
        return name;
      };
      const std::string value = DrawNumber(rng, 5);
      std::string other;
      do {
        other = DrawNumber(rng, 5);
      } while (other == value);
      parts.question = VtQuestion(value);
      for (int chain = 0; chain < 2; ++chain) {
        // Depths in increasing order: the chain's statements read top to bottom.
        std::vector<double> depths(size_t(o.hops) + 1);
        const double first = chain == 0 ? DrawDepth(rng, o.depth) : -1;
        for (double& d : depths) d = UniformUnit(rng);
        if (first >= 0) {
          for (double& d : depths) d = first + d * (1.0 - first);
          depths[0] = first;
        }
        std::sort(depths.begin(), depths.end());
        std::string previous = chain == 0 ? value : other;
        for (double d : depths) {
          const std::string name = fresh_name();
          parts.needles.push_back({fmt::format("VAR {} = {}.", name, previous), d});
          if (chain == 0) parts.answer += " " + name;
          previous = name;
        }
      }
      parts.answer += ".";
      break;
    }
    case Task::kLm:
      break;
  }
  return parts;
}

}  // namespace

Result<Task> ParseTask(std::string_view name) {
  for (Task t : {Task::kPasskey, Task::kNiah, Task::kMultikey, Task::kVt, Task::kLm}) {
    if (name == TaskName(t)) return t;
  }
  return InvalidArgument("unknown task '{}'; expected passkey, niah, multikey, vt or lm", name);
}

std::string_view TaskName(Task task) {
  switch (task) {
    case Task::kPasskey:
      return "passkey";
    case Task::kNiah:
      return "niah";
    case Task::kMultikey:
      return "multikey";
    case Task::kVt:
      return "vt";
    case Task::kLm:
      return "lm";
  }
  return "?";
}

Result<Split> ParseSplit(std::string_view name) {
  if (name == "train") return Split::kTrain;
  if (name == "eval") return Split::kEval;
  return InvalidArgument("unknown split '{}'; expected train or eval", name);
}

std::string_view SplitName(Split split) { return split == Split::kTrain ? "train" : "eval"; }

Status CheckTaskOptions(Task task, const TaskOptions& o) {
  if (!(o.depth < 0) && !(o.depth >= 0 && o.depth <= 1)) {
    return InvalidArgument("depth must be in [0, 1] (or negative for a random depth), got {}",
                           o.depth);
  }
  if (task == Task::kMultikey && (o.keys < 1 || o.keys > int64_t(kWords.size()) - 1)) {
    return InvalidArgument("multikey: keys (distractor needles) must be in [1, {}], got {}",
                           kWords.size() - 1, o.keys);
  }
  if (task == Task::kVt && (o.hops < 1 || o.hops > kMaxHops)) {
    return InvalidArgument("vt: hops must be in [1, {}], got {}", kMaxHops, o.hops);
  }
  return Status::Ok();
}

int64_t MinTokens(Task task, const TaskOptions& options) {
  if (task == Task::kLm) return 2;
  TaskOptions o = options;
  o.depth = 0;
  o.keys = std::clamp<int64_t>(o.keys, 1, int64_t(kWords.size()) - 1);
  o.hops = std::clamp<int64_t>(o.hops, 1, kMaxHops);
  std::mt19937_64 rng(0);
  const TaskParts parts = DrawParts(task, o, rng, /*longest=*/true);
  return NeedleBytes(parts.needles) + int64_t(parts.question.size() + parts.answer.size()) +
         kMinFillerBytes;
}

uint64_t DocumentSeed(uint64_t seed, int64_t index) {
  return SplitMix64(SplitMix64(seed) ^ uint64_t(index));
}

Result<TaskDocument> MakeTaskDocument(Task task, int64_t tokens, uint64_t seed,
                                      const FillerCorpus& filler, const TaskOptions& options) {
  RETURN_IF_ERROR(CheckTaskOptions(task, options));
  const int64_t min_tokens = MinTokens(task, options);
  if (tokens < min_tokens) {
    return InvalidArgument("{}: {} tokens is too short; this task needs at least {}",
                           TaskName(task), tokens, min_tokens);
  }
  // One stream per (seed, task, split): eval documents draw other keys than train ones.
  std::mt19937_64 rng(SplitMix64(seed ^ SplitMix64(uint64_t(task) * 2 + uint64_t(options.split))));
  TaskDocument doc;
  doc.task = task;
  doc.seed = seed;
  if (task == Task::kLm) {
    filler.Append(rng, tokens, &doc.context, options.split);
  } else {
    TaskParts parts = DrawParts(task, options, rng, /*longest=*/false);
    const int64_t filler_bytes =
        tokens - NeedleBytes(parts.needles) - int64_t(parts.question.size() + parts.answer.size());
    BuildContext(filler, rng, filler_bytes, options.split, parts.needles, &doc);
    doc.question = std::move(parts.question);
    doc.answer = std::move(parts.answer);
  }
  doc.question_begin = int64_t(doc.context.size());
  doc.answer_begin = doc.question_begin + int64_t(doc.question.size());
  doc.text = doc.context + doc.question + doc.answer;
  if (int64_t(doc.text.size()) != tokens) {
    return Internal("{}: built {} tokens instead of {}", TaskName(task), doc.text.size(), tokens);
  }
  doc.ids.resize(doc.text.size());
  for (size_t i = 0; i < doc.text.size(); ++i) doc.ids[i] = int32_t(uint8_t(doc.text[i]));
  doc.loss_mask.assign(doc.text.size(), 0);
  const size_t first_target = task == Task::kLm ? 1 : size_t(doc.answer_begin);
  for (size_t i = first_target; i < doc.loss_mask.size(); ++i) doc.loss_mask[i] = 1;
  return doc;
}

Status WriteTaskDocumentFiles(const std::string& dir, int64_t id, const TaskDocument& doc) {
  const std::string stem = fmt::format("{}/doc-{}", dir, id);
  RETURN_IF_ERROR(WriteFileAtomically(stem + ".txt", doc.context));
  RETURN_IF_ERROR(
      WriteNpy(stem + ".ids.npy", DType::kI32, {int64_t(doc.ids.size())}, doc.ids.data()));
  // numpy's uint8 ('|u1'), which core's DType has no name for: the 1.0 header by hand, padded
  // so that the data starts at a multiple of 64 bytes, as np.save writes it.
  std::string dict = fmt::format("{{'descr': '|u1', 'fortran_order': False, 'shape': ({},), }}",
                                 doc.loss_mask.size());
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string npy("\x93NUMPY\x01\x00", 8);
  npy.push_back(char(dict.size() & 0xFF));
  npy.push_back(char(dict.size() >> 8));
  npy += dict;
  npy.append(reinterpret_cast<const char*>(doc.loss_mask.data()), doc.loss_mask.size());
  return WriteFileAtomically(stem + ".mask.npy", npy);
}

std::string IndexJsonLine(int64_t id, const TaskDocument& doc) {
  nlohmann::ordered_json j;
  j["id"] = id;
  j["task"] = std::string(TaskName(doc.task));
  j["tokens"] = doc.ids.size();
  j["question"] = doc.question;
  j["answer"] = doc.answer;
  j["depths"] = doc.depths;
  j["seed"] = doc.seed;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

Result<std::vector<int32_t>> LoadTokenFile(const std::string& path) {
  std::vector<int32_t> ids;
  if (std::filesystem::path(path).extension() == ".npy") {
    ASSIGN_OR_RETURN(const NpyArray a, ReadNpy(path));
    if (a.shape.size() != 1) {
      return InvalidArgument("{}: token ids must be a 1-D array, got {} dimensions", path,
                             a.shape.size());
    }
    if (a.dtype != DType::kI32 && a.dtype != DType::kI64) {
      return InvalidArgument("{}: token ids must be int32 or int64, got {}", path,
                             DTypeName(a.dtype));
    }
    ids.resize(size_t(a.numel()));
    for (int64_t i = 0; i < a.numel(); ++i) {
      const int64_t v = a.dtype == DType::kI32 ? a.as<int32_t>()[i] : a.as<int64_t>()[i];
      if (v < 0 || v > INT32_MAX) {
        return OutOfRange("{}: token id {} at position {} is negative or too large", path, v, i);
      }
      ids[size_t(i)] = int32_t(v);
    }
    return ids;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("{}: cannot open the token file", path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return DataLoss("{}: read error", path);
  ids.resize(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = int32_t(uint8_t(text[i]));
  return ids;
}

}  // namespace longctx::train
