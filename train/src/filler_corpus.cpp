// FillerCorpus: paragraphs of real prose from plain-text or HTML files, split by a hash of
// their text into train and eval, and cut into filler of an exact byte size.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <unordered_set>
#include <utility>

#include "longctx/core/utf8.h"
#include "longctx/train/task_data.h"
#include "random_draw.h"

namespace longctx::train {
namespace {

// A paragraph is eval-only when this hash of its text falls in the last 10% of the range.
constexpr uint64_t kEvalPercent = 10;

uint64_t Fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

Split SplitOf(std::string_view paragraph) {
  return SplitMix64(Fnv1a64(paragraph)) % 100 >= 100 - kEvalPercent ? Split::kEval : Split::kTrain;
}

Result<std::string> ReadWholeFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return NotFound("{}: no such file", path);
  if (!std::filesystem::is_regular_file(path, ec)) {
    return InvalidArgument("{}: not a regular file", path);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("{}: cannot open", path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return DataLoss("{}: read error", path);
  return text;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

// Collapses runs of whitespace (and U+00A0, no-break space) to one space; trims both ends.
std::string CollapseSpaces(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool pending = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool nbsp = uint8_t(s[i]) == 0xC2 && i + 1 < s.size() && uint8_t(s[i + 1]) == 0xA0;
    if (IsSpace(s[i]) || nbsp) {
      pending = true;
      if (nbsp) ++i;
      continue;
    }
    if (pending && !out.empty()) out.push_back(' ');
    pending = false;
    out.push_back(s[i]);
  }
  return out;
}

// Tags removed (a tag separates words only where it was next to whitespace already), the
// common entities decoded; an unknown entity is kept as written.
std::string StripTags(std::string_view html) {
  std::string out;
  out.reserve(html.size());
  size_t i = 0;
  while (i < html.size()) {
    const char c = html[i];
    if (c == '<') {
      const size_t close = html.find('>', i);
      if (close == std::string_view::npos) break;
      i = close + 1;
      continue;
    }
    if (c == '&') {
      const size_t semi = html.find(';', i);
      if (semi != std::string_view::npos && semi - i <= 10) {
        const std::string_view name = html.substr(i + 1, semi - i - 1);
        static constexpr std::pair<std::string_view, uint32_t> kNamed[] = {
            {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}, {"nbsp", ' '}};
        uint32_t cp = 0;
        for (const auto& [entity, code] : kNamed) {
          if (name == entity) cp = code;
        }
        if (cp == 0 && name.size() >= 2 && name[0] == '#') {
          const bool hex = name[1] == 'x' || name[1] == 'X';
          const std::string digits(name.substr(hex ? 2 : 1));
          char* end = nullptr;
          const unsigned long v = std::strtoul(digits.c_str(), &end, hex ? 16 : 10);
          if (!digits.empty() && end && *end == '\0' && v > 0 && v < 0x110000) cp = uint32_t(v);
        }
        if (cp != 0) {
          AppendUtf8(char32_t(cp), &out);
          i = semi + 1;
          continue;
        }
      }
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

bool EndsSentence(std::string_view p) {
  // Allow a closing quote or parenthesis after the mark: 'it is "done."' or '(see above.)'.
  while (!p.empty()) {
    const char c = p.back();
    if (c == '.' || c == '!' || c == '?') return true;
    if (c == '"' || c == ')' || c == '\'') {
      p.remove_suffix(1);
      continue;
    }
    if (p.size() >= 3 && p.substr(p.size() - 3) == "\xE2\x80\x9D") {  // ” closing quote
      p.remove_suffix(3);
      continue;
    }
    return false;
  }
  return false;
}

// The prose paragraphs of an HTML file: <p> and <div class="para"> elements without block
// markup inside (nested div, pre, table, list), tags stripped, ending a sentence.
void HtmlParagraphs(std::string_view html, std::vector<std::string>* out) {
  static constexpr std::string_view kOpeners[] = {"<div class=\"para\">", "<p>", "<p "};
  size_t pos = 0;
  size_t found[std::size(kOpeners)] = {0, 0, 0};  // each opener's next match at or after pos
  bool searched = false;
  while (true) {
    size_t begin = std::string_view::npos;
    std::string_view opener;
    for (size_t k = 0; k < std::size(kOpeners); ++k) {
      // Search again only when the last match was consumed (keeps the scan linear).
      if (!searched || (found[k] != std::string_view::npos && found[k] < pos)) {
        found[k] = html.find(kOpeners[k], pos);
      }
      if (found[k] < begin) begin = found[k], opener = kOpeners[k];
    }
    searched = true;
    if (begin == std::string_view::npos) return;
    const bool is_div = opener[1] == 'd';
    const size_t body = html.find('>', begin) + 1;
    // The element's end: the matching </div> (counting nested divs) or the next </p>.
    size_t end = std::string_view::npos, next = body;
    bool nested = false;
    if (is_div) {
      int depth = 1;
      size_t p = body;
      while (depth > 0) {
        const size_t open = html.find("<div", p), close = html.find("</div>", p);
        if (close == std::string_view::npos) return;
        if (open < close) {
          ++depth;
          nested = true;
          p = open + 4;
        } else {
          --depth;
          p = close + 6;
        }
      }
      end = p - 6;
      next = p;
    } else {
      end = html.find("</p>", body);
      if (end == std::string_view::npos) return;
      next = end + 4;
    }
    pos = next;
    const std::string_view inner = html.substr(body, end - body);
    if (nested || inner.find("<pre") != std::string_view::npos ||
        inner.find("<table") != std::string_view::npos ||
        inner.find("<ul") != std::string_view::npos ||
        inner.find("<ol") != std::string_view::npos) {
      continue;
    }
    std::string text = CollapseSpaces(StripTags(inner));
    if (text.size() >= 40 && EndsSentence(text)) out->push_back(std::move(text));
  }
}

// Paragraphs of plain text: blank-line separated, lines joined with single spaces.
void TextParagraphs(std::string_view text, std::vector<std::string>* out) {
  std::string current;
  size_t i = 0;
  auto flush = [&] {
    std::string p = CollapseSpaces(current);
    if (!p.empty()) out->push_back(std::move(p));
    current.clear();
  };
  while (i <= text.size()) {
    size_t eol = text.find('\n', i);
    if (eol == std::string_view::npos) eol = text.size();
    const std::string_view line = text.substr(i, eol - i);
    if (std::all_of(line.begin(), line.end(), IsSpace)) {
      flush();
    } else {
      current.append(line);
      current.push_back(' ');
    }
    i = eol + 1;
  }
  flush();
}

bool IsHtml(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".html" || ext == ".htm";
}

}  // namespace

Result<FillerCorpus> FillerCorpus::LoadDefault() {
  std::error_code ec;
  std::vector<std::string> files;
  for (std::filesystem::directory_iterator it(kDefaultDir, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (IsHtml(it->path().string())) files.push_back(it->path().string());
  }
  if (ec || files.empty()) {
    return NotFound(
        "{}: no filler text; install the Debian package debian-handbook "
        "(launch/install-deps.sh; it must not be excluded by a dpkg path-exclude of "
        "/usr/share/doc) or give --filler FILES",
        kDefaultDir);
  }
  std::sort(files.begin(), files.end());  // directory order is not deterministic
  return Load(files);
}

Result<FillerCorpus> FillerCorpus::Load(std::span<const std::string> files) {
  if (files.empty()) return InvalidArgument("no filler files given");
  FillerCorpus corpus;
  std::unordered_set<std::string> seen;
  for (const std::string& path : files) {
    ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path));
    std::vector<std::string> paragraphs;
    if (IsHtml(path)) {
      HtmlParagraphs(text, &paragraphs);
    } else {
      TextParagraphs(text, &paragraphs);
    }
    for (std::string& p : paragraphs) {
      if (!seen.insert(p).second) continue;
      const auto index = int32_t(corpus.paragraphs_.size());
      if (SplitOf(p) == Split::kEval) {
        corpus.eval_.push_back(index);
        corpus.eval_bytes_ += int64_t(p.size());
      } else {
        corpus.train_.push_back(index);
        corpus.train_bytes_ += int64_t(p.size());
      }
      corpus.paragraphs_.push_back(std::move(p));
    }
  }
  if (corpus.train_.empty() || corpus.eval_.empty()) {
    return InvalidArgument(
        "filler: {} distinct paragraphs in {} file(s) give {} train and {} eval paragraphs; "
        "both splits need at least one (about 10% of paragraphs are eval-only)",
        corpus.paragraphs_.size(), files.size(), corpus.train_.size(), corpus.eval_.size());
  }
  return corpus;
}

int64_t FillerCorpus::paragraphs(Split split) const {
  return int64_t(split == Split::kTrain ? train_.size() : eval_.size());
}

int64_t FillerCorpus::bytes(Split split) const {
  return split == Split::kTrain ? train_bytes_ : eval_bytes_;
}

std::vector<std::string_view> FillerCorpus::Paragraphs(Split split) const {
  const std::vector<int32_t>& indices = split == Split::kTrain ? train_ : eval_;
  std::vector<std::string_view> out;
  out.reserve(indices.size());
  for (int32_t i : indices) out.emplace_back(paragraphs_[size_t(i)]);
  return out;
}

void FillerCorpus::Append(std::mt19937_64& rng, int64_t bytes, std::string* out,
                          Split split) const {
  if (bytes <= 0) return;
  const std::vector<int32_t>& indices = split == Split::kTrain ? train_ : eval_;
  const size_t base = out->size();
  const size_t limit = base + size_t(bytes);
  out->reserve(limit);
  size_t next = size_t(UniformBelow(rng, indices.size()));
  while (out->size() < limit) {
    if (out->size() > base) out->append("\n\n");
    const std::string& p = paragraphs_[size_t(indices[next])];
    out->append(p, 0, std::min(p.size(), limit + 64 - std::min(limit + 64, out->size())));
    next = (next + 1) % indices.size();
  }
  if (out->size() > limit) {
    // Cut before a space or newline that ends a word (the filler then ends with a whole word),
    // no more than 32 bytes back; else on a UTF-8 character boundary.
    size_t cut = limit;
    const size_t floor = std::max(base, limit >= 32 ? limit - 32 : 0);
    size_t c = limit;
    auto word_end = [&](size_t i) {
      const char at = (*out)[i], before = (*out)[i - 1];
      return (at == ' ' || at == '\n') && before != '\n' && before != ' ';
    };
    while (c > floor && !word_end(c)) {
      --c;
    }
    if (c > floor) {
      cut = c;
    } else {
      while (cut > base && (uint8_t((*out)[cut]) & 0xC0) == 0x80) --cut;
    }
    out->resize(cut);
    while (out->size() > base && out->back() == '\n') out->pop_back();
  }
  out->resize(limit, ' ');
}

}  // namespace longctx::train
