// Synthetic task data (train/task_data.h): exact lengths, determinism, answers and masks where
// the document says they are, needle depths, the held-out split, and the global-token share of
// the real filler (DESIGN.md §1, §6).
#include "longctx/train/task_data.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "longctx/attention/global_selection.h"
#include "longctx/core/npy.h"
#include "longctx/test/temp_dir.h"
#include "longctx/test/status_matchers.h"

namespace longctx::train {
namespace {

namespace fs = std::filesystem;

constexpr Task kTasks[] = {Task::kPasskey, Task::kNiah, Task::kMultikey, Task::kVt, Task::kLm};

using test::TempDir;

// A small prose corpus written by the test (so these tests do not need the Debian package):
// 120 distinct paragraphs of 4-6 ordinary sentences, one with multi-byte characters, one with a
// very long "word", hard-wrapped as plain-text files are.
std::string TestProse() {
  static const char* kSentences[] = {
      "The committee met on a grey morning to discuss the proposal that had been circulating "
      "for several weeks",
      "Nobody in the room expected the discussion to be short, and most of them had brought "
      "coffee",
      "A small library at the end of the street keeps its doors open late on Thursdays",
      "Engineers who maintain old systems often know more about their history than anyone else",
      "When the river flooded in the spring, the farmers moved their animals to higher ground",
      "She wrote the letter twice before deciding that the first version had been better",
      "The report described how the network had grown from a handful of machines to thousands",
      "Travelers crossing the mountains in winter were advised to carry extra food and blankets",
      "In the evening the town square filled with musicians, vendors and children on bicycles",
      "The old bridge was repaired with stone taken from a quarry a few miles to the north",
      "Most of the documentation had been written by volunteers in their spare time",
      "He noticed that the clock in the hallway was running a few minutes behind",
  };
  std::string out;
  for (int p = 0; p < 120; ++p) {
    std::string para;
    const int n = 4 + p % 3;
    for (int s = 0; s < n; ++s) {
      para += kSentences[(p * 7 + s * 5) % 12];
      para += (s == 0 ? " in year " + std::to_string(1800 + p) : std::string()) + ". ";
    }
    if (p == 7) para += "The café served crème brûlée to naïve visitors — every day. ";
    if (p == 9) para += std::string(100, 'x') + " ended the paragraph. ";
    // Hard-wrap at ~70 columns, as plain-text files are.
    std::string wrapped;
    size_t col = 0;
    for (char c : para) {
      if (c == ' ' && col > 70) {
        wrapped += '\n';
        col = 0;
      } else {
        wrapped += c;
        ++col;
      }
    }
    out += wrapped + "\n\n";
  }
  return out;
}

const FillerCorpus& TestCorpus() {
  static const FillerCorpus corpus = [] {
    const std::string dir = (fs::path(::testing::TempDir()) / "task_data_corpus").string();
    fs::create_directories(dir);
    const std::string a = dir + "/a.txt", b = dir + "/b.txt";
    const std::string prose = TestProse();
    const size_t half = prose.find("\n\n", prose.size() / 2) + 2;
    std::ofstream(a) << prose.substr(0, half);
    std::ofstream(b) << prose.substr(half);
    const std::vector<std::string> files = {a, b};
    auto r = FillerCorpus::Load(files);
    if (!r.ok()) {
      ADD_FAILURE() << r.status().ToString();
      std::abort();
    }
    return *std::move(r);
  }();
  return corpus;
}

TaskDocument Make(Task task, int64_t tokens, uint64_t seed, TaskOptions o = {},
                  const FillerCorpus* corpus = nullptr) {
  auto r = MakeTaskDocument(task, tokens, seed, corpus ? *corpus : TestCorpus(), o);
  EXPECT_TRUE(r.ok()) << TaskName(task) << " " << tokens << ": " << r.status().ToString();
  return r.ok() ? *std::move(r) : TaskDocument{};
}

// Every invariant the header states for one document.
void CheckLayout(const TaskDocument& d, int64_t tokens) {
  SCOPED_TRACE(std::string(TaskName(d.task)) + " " + std::to_string(tokens));
  ASSERT_EQ(int64_t(d.text.size()), tokens);
  ASSERT_EQ(int64_t(d.ids.size()), tokens);
  ASSERT_EQ(d.loss_mask.size(), d.ids.size());
  EXPECT_EQ(d.text, d.context + d.question + d.answer);
  EXPECT_EQ(d.question_begin, int64_t(d.context.size()));
  EXPECT_EQ(d.answer_begin, d.question_begin + int64_t(d.question.size()));
  EXPECT_EQ(d.text.substr(size_t(d.answer_begin)), d.answer);
  for (size_t i = 0; i < d.ids.size(); ++i) {
    ASSERT_EQ(d.ids[i], int32_t(uint8_t(d.text[i]))) << i;
  }
  // The mask: exactly the answer (tasks), every token but the first (lm).
  const size_t first = d.task == Task::kLm ? 1 : size_t(d.answer_begin);
  for (size_t i = 0; i < d.loss_mask.size(); ++i) {
    ASSERT_EQ(d.loss_mask[i], i >= first ? 1 : 0) << i;
  }
  if (d.task == Task::kLm) {
    EXPECT_TRUE(d.question.empty() && d.answer.empty() && d.depths.empty());
  } else {
    EXPECT_FALSE(d.answer.empty());
    EXPECT_EQ(d.question.substr(0, 2), "\n\n");
    EXPECT_EQ(d.answer.front(), ' ');
    EXPECT_EQ(d.answer.back(), '.');
    ASSERT_EQ(d.depths.size(), d.needle_begins.size());
    for (double x : d.depths) EXPECT_TRUE(x >= 0 && x <= 1) << x;
  }
}

TEST(TaskData, ParsesTaskAndSplitNames) {
  for (Task t : kTasks) {
    auto r = ParseTask(TaskName(t));
    ASSERT_OK(r);
    EXPECT_EQ(*r, t);
  }
  EXPECT_EQ(ParseTask("needle").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseSplit("eval"), Split::kEval);
  EXPECT_EQ(*ParseSplit("train"), Split::kTrain);
  EXPECT_FALSE(ParseSplit("test").ok());
}

TEST(TaskData, ExactLengthForEveryTaskAndSize) {
  for (Task t : kTasks) {
    std::vector<int64_t> sizes = {MinTokens(t), 300, 1000, 4096, 65536, 262144};
    for (int64_t n : sizes) {
      if (n < MinTokens(t)) continue;
      for (uint64_t seed : {1u, 2u}) {
        const TaskDocument d = Make(t, n, seed);
        CheckLayout(d, n);
      }
    }
  }
  // 300 tokens is enough for every task but multikey with its default four distractors.
  EXPECT_LE(MinTokens(Task::kPasskey), 300);
  EXPECT_LE(MinTokens(Task::kNiah), 300);
  EXPECT_LE(MinTokens(Task::kVt), 300);
  EXPECT_LE(MinTokens(Task::kMultikey, {.keys = 1}), 400);
}

TEST(TaskData, TooFewTokensNamesTheMinimum) {
  for (Task t : kTasks) {
    const int64_t min = MinTokens(t);
    auto r = MakeTaskDocument(t, min - 1, 1, TestCorpus());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(std::to_string(min)), std::string::npos)
        << r.status().message();
  }
  EXPECT_FALSE(MakeTaskDocument(Task::kPasskey, 1000, 1, TestCorpus(), {.depth = 1.5}).ok());
  EXPECT_FALSE(MakeTaskDocument(Task::kMultikey, 4000, 1, TestCorpus(), {.keys = 0}).ok());
  EXPECT_FALSE(MakeTaskDocument(Task::kVt, 4000, 1, TestCorpus(), {.hops = 0}).ok());
  EXPECT_FALSE(CheckTaskOptions(Task::kPasskey, {.depth = std::nan("")}).ok());
  EXPECT_OK(CheckTaskOptions(Task::kPasskey, {.depth = -1}));
  EXPECT_FALSE(CheckTaskOptions(Task::kMultikey, {.keys = 100000}).ok());
  EXPECT_GT(MinTokens(Task::kMultikey, {.keys = 100000}), MinTokens(Task::kMultikey));  // clamped
}

TEST(TaskData, DeterministicInSeedAndDifferentAcrossSeeds) {
  for (Task t : kTasks) {
    const TaskDocument a = Make(t, 5000, 42), b = Make(t, 5000, 42), c = Make(t, 5000, 43);
    EXPECT_EQ(a.text, b.text) << TaskName(t);
    EXPECT_EQ(a.depths, b.depths) << TaskName(t);
    EXPECT_NE(a.text, c.text) << TaskName(t);
    const TaskDocument e = Make(t, 5000, 42, {.split = Split::kEval});
    EXPECT_NE(a.text, e.text) << TaskName(t);
  }
  EXPECT_NE(DocumentSeed(7, 0), DocumentSeed(7, 1));
  EXPECT_NE(DocumentSeed(7, 1), DocumentSeed(8, 0));
  EXPECT_EQ(DocumentSeed(7, 3), DocumentSeed(7, 3));
}

TEST(TaskData, PasskeyNeedleAndAnswerAgree) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const TaskDocument d = Make(Task::kPasskey, 2000, seed);
    const std::regex needle(
        "The pass key is (\\d{5})\\. Remember it\\. (\\d{5}) is the pass key\\.");
    std::smatch m;
    ASSERT_TRUE(std::regex_search(d.context, m, needle)) << d.context;
    EXPECT_EQ(m[1], m[2]);
    EXPECT_EQ(int64_t(m.position(0)), d.needle_begins[0]);
    EXPECT_EQ(d.question, "\n\nWhat is the pass key? The pass key is");
    EXPECT_EQ(d.answer, fmt::format(" {}.", m[1].str()));
    // Exactly one needle.
    EXPECT_EQ(d.context.find("pass key", size_t(m.position(0)) + size_t(m.length(0))),
              std::string::npos);
  }
}

TEST(TaskData, NiahNeedleAndAnswerAgree) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const TaskDocument d = Make(Task::kNiah, 3000, seed);
    const std::regex q(
        "\n\nWhat is the special magic number for ([a-z]+) mentioned in the provided text\\? The "
        "special magic number for ([a-z]+) mentioned in the provided text is");
    std::smatch qm;
    ASSERT_TRUE(std::regex_match(d.question, qm, q)) << d.question;
    EXPECT_EQ(qm[1], qm[2]);
    const std::string needle =
        fmt::format("One of the special magic numbers for {} is:", qm[1].str());
    const size_t at = d.context.find(needle);
    ASSERT_NE(at, std::string::npos);
    EXPECT_EQ(int64_t(at), d.needle_begins[0]);
    const std::string number = d.context.substr(at + needle.size() + 1, 7);
    EXPECT_TRUE(std::all_of(number.begin(), number.end(), ::isdigit)) << number;
    EXPECT_EQ(d.context[at + needle.size() + 8], '.');
    EXPECT_EQ(d.answer, fmt::format(" {}.", number));
  }
}

TEST(TaskData, MultikeyAsksForOnePresentWord) {
  for (int64_t keys : {1, 4, 10}) {
    for (uint64_t seed = 0; seed < 10; ++seed) {
      const TaskDocument d = Make(Task::kMultikey, 8000, seed, {.keys = keys});
      const std::regex needle("One of the special magic numbers for ([a-z]+) is: (\\d{7})\\.");
      std::vector<std::pair<std::string, std::string>> found;
      for (auto it = std::sregex_iterator(d.context.begin(), d.context.end(), needle);
           it != std::sregex_iterator(); ++it) {
        found.emplace_back((*it)[1], (*it)[2]);
      }
      ASSERT_EQ(int64_t(found.size()), keys + 1);
      std::set<std::string> words, numbers;
      for (auto& [w, n] : found) words.insert(w), numbers.insert(n);
      EXPECT_EQ(int64_t(words.size()), keys + 1);
      EXPECT_EQ(int64_t(numbers.size()), keys + 1);
      int asked = 0;
      for (auto& [w, n] : found) {
        if (d.question.find(fmt::format(" for {} mentioned", w)) != std::string::npos) {
          ++asked;
          EXPECT_EQ(d.answer, fmt::format(" {}.", n));
        }
      }
      EXPECT_EQ(asked, 1) << d.question;
      ASSERT_EQ(int64_t(d.needle_begins.size()), keys + 1);
      const std::string_view prefix = "One of the special magic numbers for ";
      EXPECT_EQ(d.context.compare(size_t(d.needle_begins[0]), prefix.size(), prefix), 0);
    }
  }
}

TEST(TaskData, VariableTrackingChainIsConsistent) {
  for (int64_t hops : {1, 2, 5}) {
    for (uint64_t seed = 0; seed < 10; ++seed) {
      const TaskDocument d = Make(Task::kVt, 6000, seed, {.hops = hops});
      std::smatch qm;
      ASSERT_TRUE(std::regex_match(
          d.question, qm,
          std::regex("\n\nFind all variables that are assigned the value (\\d{5}) in the text "
                     "above\\. Answer:")))
          << d.question;
      const std::string value = qm[1];
      // Follow the assignments in text order: a name holds the value when it is assigned the
      // value or a name that already holds it.
      const std::regex stmt("VAR ([A-Z]{5}) = ([A-Z]{5}|\\d{5})\\.");
      std::set<std::string> holders, assigned;
      std::vector<std::string> numbers;  // the values the two chains start from
      std::string expected;
      int statements = 0;
      for (auto it = std::sregex_iterator(d.context.begin(), d.context.end(), stmt);
           it != std::sregex_iterator(); ++it) {
        ++statements;
        const std::string name = (*it)[1], from = (*it)[2];
        EXPECT_TRUE(assigned.insert(name).second) << "assigned twice: " << name;
        if (std::isdigit(uint8_t(from[0]))) {
          numbers.push_back(from);
        } else {
          EXPECT_TRUE(assigned.count(from)) << from << " used before it is assigned";
        }
        if (from == value || holders.count(from)) {
          holders.insert(name);
          expected += fmt::format(" {}", name);
        }
      }
      EXPECT_EQ(statements, 2 * (hops + 1));
      ASSERT_EQ(numbers.size(), 2u);
      EXPECT_NE(numbers[0], numbers[1]);
      EXPECT_TRUE(numbers[0] == value || numbers[1] == value);
      EXPECT_EQ(int64_t(holders.size()), hops + 1);
      EXPECT_EQ(d.answer, fmt::format("{}.", expected));
      EXPECT_EQ(int64_t(d.depths.size()), 2 * (hops + 1));
    }
  }
}

// Depth: the needle starts within 1% of the requested depth, measured both as RULER does (share
// of the filler before it) and as a share of the context; at a sentence boundary when large.
TEST(TaskData, NeedleLandsAtTheRequestedDepth) {
  for (Task t : {Task::kPasskey, Task::kNiah, Task::kMultikey}) {
    for (int64_t n : {int64_t(2000), int64_t(65536)}) {
      for (double depth : {0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0}) {
        const TaskDocument d = Make(t, n, 11, {.depth = depth});
        SCOPED_TRACE(std::string(TaskName(t)) + " n=" + std::to_string(n) +
                     " depth=" + std::to_string(depth));
        EXPECT_NEAR(d.depths[0], depth, 0.01);
        if (n >= 65536) {
          EXPECT_NEAR(double(d.needle_begins[0]) / double(d.context.size()), depth, 0.01);
          const int64_t p = d.needle_begins[0];
          const bool sentence =
              p == 0 ||
              (d.context[size_t(p) - 1] == ' ' &&
               std::strchr(".!?", d.context[size_t(p) - 2]) != nullptr) ||
              (d.context[size_t(p) - 1] == '\n' && d.context[size_t(p) - 2] == '\n');
          EXPECT_TRUE(sentence) << d.context.substr(size_t(std::max<int64_t>(p - 40, 0)), 80);
        }
      }
    }
  }
  // Random depths spread over [0, 1].
  double lo = 1, hi = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const double x = Make(Task::kPasskey, 4000, seed).depths[0];
    lo = std::min(lo, x), hi = std::max(hi, x);
  }
  EXPECT_LT(lo, 0.2);
  EXPECT_GT(hi, 0.8);
}

TEST(TaskData, FillerHasExactSizeAndCleanEnds) {
  const FillerCorpus& c = TestCorpus();
  std::mt19937_64 rng(5);
  for (int64_t bytes : {0, 1, 2, 17, 100, 333, 4096, 100000}) {
    for (int rep = 0; rep < 20; ++rep) {
      std::string out = "prefix";
      c.Append(rng, bytes, &out);
      ASSERT_EQ(int64_t(out.size()), 6 + bytes);
      const std::string f = out.substr(6);
      if (!f.empty()) {
        EXPECT_NE(f.back(), '\n');
      }
      EXPECT_EQ(f.find("\n\n\n"), std::string::npos);
      // Valid UTF-8 (no sequence cut in half).
      for (size_t i = 0; i < f.size();) {
        const auto b = uint8_t(f[i]);
        const size_t len = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
        ASSERT_NE(b & 0xC0, 0x80) << "continuation byte at " << i;
        ASSERT_LE(i + len, f.size()) << "cut UTF-8 at the end: " << f;
        i += len;
      }
    }
  }
  // Unwrapped: no single newline inside a paragraph.
  std::string big;
  c.Append(rng, 50000, &big);
  for (size_t i = 1; i + 1 < big.size(); ++i) {
    if (big[i] == '\n') {
      ASSERT_TRUE(big[i - 1] == '\n' || big[i + 1] == '\n') << i;
    }
  }
}

TEST(TaskData, HeldOutSplitIsDisjointFromTrain) {
  const FillerCorpus& c = TestCorpus();
  ASSERT_GT(c.paragraphs(Split::kTrain), 0);
  ASSERT_GT(c.paragraphs(Split::kEval), 0);
  EXPECT_EQ(c.paragraphs(Split::kTrain) + c.paragraphs(Split::kEval), 120);
  const auto train = c.Paragraphs(Split::kTrain), eval = c.Paragraphs(Split::kEval);
  const std::set<std::string_view> train_set(train.begin(), train.end());
  for (std::string_view p : eval) EXPECT_FALSE(train_set.count(p));
  // A long train document holds no eval paragraph, and an eval document no train paragraph.
  const TaskDocument t = Make(Task::kLm, 200000, 3);
  const TaskDocument e = Make(Task::kLm, 200000, 3, {.split = Split::kEval});
  for (std::string_view p : eval) {
    EXPECT_EQ(t.text.find(p), std::string::npos);
    EXPECT_NE(e.text.find(p.substr(0, 100)), std::string::npos);
  }
  for (std::string_view p : train) EXPECT_EQ(e.text.find(p), std::string::npos);
  // The split is by content, not by file order: the same files in the other order split alike.
  const std::string dir = (fs::path(::testing::TempDir()) / "task_data_corpus").string();
  const std::vector<std::string> swapped = {dir + "/b.txt", dir + "/a.txt"};
  auto r = FillerCorpus::Load(swapped);
  ASSERT_OK(r);
  const auto eval2 = r->Paragraphs(Split::kEval);
  EXPECT_EQ(std::set<std::string_view>(eval2.begin(), eval2.end()),
            std::set<std::string_view>(eval.begin(), eval.end()));
}

TEST(TaskData, LoadRejectsMissingAndTooSmallCorpora) {
  TempDir dir;
  const std::vector<std::string> missing = {dir.File("nope.txt")};
  EXPECT_EQ(FillerCorpus::Load(missing).status().code(), StatusCode::kNotFound);
  std::ofstream(dir.File("one.txt")) << "Just one paragraph here.\n";
  const std::vector<std::string> one = {dir.File("one.txt")};
  auto r = FillerCorpus::Load(one);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("1 distinct paragraphs"), std::string::npos)
      << r.status().message();
  EXPECT_FALSE(FillerCorpus::Load({}).ok());
}

TEST(TaskData, HtmlKeepsProseParagraphsOnly) {
  TempDir dir;
  std::string html = "<html><body>";
  for (int i = 0; i < 60; ++i) {
    html += "<div class=\"para\">\n\t\tParagraph " + std::to_string(i) +
            " explains how <code class=\"command\">apt</code> works &amp; why it is &lt;fast&gt;."
            "\n\t</div>";
  }
  html += "<div class=\"para\">A listing follows: <pre class=\"screen\">$ ls</pre></div>";
  html += "<div class=\"para\">An introduction that ends with a colon and is long enough:</div>";
  html += "<p class=\"title\">Short title</p><pre>code &amp; more code.</pre></body></html>";
  std::ofstream(dir.File("page.html")) << html;
  const std::vector<std::string> files = {dir.File("page.html")};
  auto r = FillerCorpus::Load(files);
  ASSERT_OK(r);
  EXPECT_EQ(r->paragraphs(Split::kTrain) + r->paragraphs(Split::kEval), 60);
  for (Split s : {Split::kTrain, Split::kEval}) {
    for (std::string_view p : r->Paragraphs(s)) {
      EXPECT_NE(p.find(" explains how apt works & why it is <fast>."), std::string::npos) << p;
      EXPECT_EQ(p.find('\n'), std::string::npos);
      EXPECT_EQ(p.find('\t'), std::string::npos);
    }
  }
}

TEST(TaskData, WritesTheFilesOfADocument) {
  TempDir dir;
  const TaskDocument d = Make(Task::kNiah, 1500, 9);
  ASSERT_OK(WriteTaskDocumentFiles(dir.path().string(), 3, d));
  std::ifstream txt(dir.File("doc-3.txt"), std::ios::binary);
  const std::string context((std::istreambuf_iterator<char>(txt)),
                            std::istreambuf_iterator<char>());
  EXPECT_EQ(context, d.context);
  auto ids = ReadNpy(dir.File("doc-3.ids.npy"));
  ASSERT_OK(ids);
  EXPECT_EQ(ids->dtype, DType::kI32);
  EXPECT_EQ(std::vector<int32_t>(ids->as<int32_t>(), ids->as<int32_t>() + ids->numel()), d.ids);
  // The mask: numpy's uint8 format 1.0, data 64-byte aligned.
  std::ifstream mf(dir.File("doc-3.mask.npy"), std::ios::binary);
  const std::string mask((std::istreambuf_iterator<char>(mf)), std::istreambuf_iterator<char>());
  ASSERT_GT(mask.size(), 10u);
  EXPECT_EQ(mask.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header = uint8_t(mask[8]) | size_t(uint8_t(mask[9])) << 8;
  EXPECT_EQ((10 + header) % 64, 0u);
  EXPECT_NE(mask.find("'descr': '|u1'"), std::string::npos);
  EXPECT_NE(mask.find("'shape': (1500,)"), std::string::npos);
  EXPECT_EQ(mask.substr(10 + header),
            std::string(reinterpret_cast<const char*>(d.loss_mask.data()), d.loss_mask.size()));
  const std::string line = IndexJsonLine(3, d);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.rfind("{\"id\":3,\"task\":\"niah\",\"tokens\":1500,\"question\":\"\\n\\nWhat", 0),
            0u)
      << line;
  EXPECT_NE(line.find(fmt::format("\"answer\":\"{}\"", d.answer)), std::string::npos) << line;
  EXPECT_NE(line.find("\"seed\":9}"), std::string::npos) << line;
  // Nothing but the three files (no temporary left behind).
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 3);
}

TEST(TaskData, LoadsTokenFiles) {
  TempDir dir;
  std::ofstream(dir.File("a.txt"), std::ios::binary) << "hi\xff";
  auto t = LoadTokenFile(dir.File("a.txt"));
  ASSERT_OK(t);
  EXPECT_EQ(*t, (std::vector<int32_t>{'h', 'i', 255}));
  const std::vector<int64_t> big = {1, 70000, 3};
  ASSERT_OK(WriteNpy(dir.File("b.npy"), DType::kI64, {3}, big.data()));
  auto b = LoadTokenFile(dir.File("b.npy"));
  ASSERT_OK(b);
  EXPECT_EQ(*b, (std::vector<int32_t>{1, 70000, 3}));
  const std::vector<int32_t> neg = {1, -1};
  ASSERT_OK(WriteNpy(dir.File("n.npy"), DType::kI32, {2}, neg.data()));
  EXPECT_EQ(LoadTokenFile(dir.File("n.npy")).status().code(), StatusCode::kOutOfRange);
  const std::vector<int32_t> m = {1, 2, 3, 4};
  ASSERT_OK(WriteNpy(dir.File("m.npy"), DType::kI32, {2, 2}, m.data()));
  EXPECT_EQ(LoadTokenFile(dir.File("m.npy")).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadTokenFile(dir.File("none.txt")).status().code(), StatusCode::kNotFound);
}

// The shares of sentence-end and paragraph-boundary tokens (attention::ClassifyBytes, the rule
// the global selection reads) in filler of the real default corpus; printed for docs/training.md.
TEST(TaskData, DefaultFillerHasProseShareOfGlobalCandidates) {
  auto r = FillerCorpus::LoadDefault();
  if (!r.ok()) GTEST_SKIP() << "no default filler: " << r.status().message();
  const FillerCorpus& c = *r;
  EXPECT_GT(c.paragraphs(Split::kTrain), 1000);
  const double eval_share = double(c.paragraphs(Split::kEval)) /
                            double(c.paragraphs(Split::kEval) + c.paragraphs(Split::kTrain));
  EXPECT_NEAR(eval_share, 0.10, 0.03);
  std::mt19937_64 rng(1);
  std::string f;
  c.Append(rng, 1 << 20, &f);
  int64_t ends = 0, paragraphs = 0, punct = 0;
  for (attention::TokenClass k : attention::ClassifyBytes(f)) {
    ends += k == attention::TokenClass::kSentenceEnd;
    paragraphs += k == attention::TokenClass::kParagraph;
    punct += k == attention::TokenClass::kPunctuation;
  }
  const double n = double(f.size());
  std::cout << "default filler (" << c.paragraphs(Split::kTrain) << " train / "
            << c.paragraphs(Split::kEval) << " eval paragraphs, " << c.bytes(Split::kTrain)
            << " train bytes): sentence ends " << 100.0 * double(ends) / n
            << "%, paragraph boundaries " << 100.0 * double(paragraphs) / n
            << "%, other punctuation " << 100.0 * double(punct) / n << "% of 1 MiB\n";
  EXPECT_LT(double(ends) / n, 0.03);
  EXPECT_GT(double(ends) / n, 0.002);  // prose, not one endless sentence
  EXPECT_LT(double(paragraphs) / n, 0.02);
  EXPECT_GT(paragraphs, 0);
  // A 1M-token document of every task from the real corpus.
  for (Task t : kTasks) CheckLayout(Make(t, 1 << 20, 5, {}, &c), 1 << 20);
}

}  // namespace
}  // namespace longctx::train
