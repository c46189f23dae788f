// TieredKvCache (tiered_cache.h): the block table, the three tiers with hard byte budgets, the
// background thread that demotes (LRU) and prefetches, and the caller-side loads of Scan/Gather.
//
// Concurrency model (one caller thread + the cache's background thread):
//   - every piece of metadata is guarded by mu_; slow work (encode, decode, remote Put/Get) runs
//     with mu_ released on a block marked `busy`, which nobody else evicts, loads or moves;
//   - only the background thread demotes (device -> host -> remote). A caller that needs device
//     room posts the request (room_wanted_) and waits for it with a deadline; when the thread
//     finds nothing it can demote it fails the request with a kResourceExhausted naming the
//     budget, so a wait never outlives what can be freed;
//   - loads run on whichever thread needs the block (the caller on a Scan miss, the background
//     thread for Prefetch); device bytes are reserved before a load starts, so the device tier
//     never exceeds its budget, not even with loads in flight;
//   - the caller marks a block `in_use` while its data is handed to a Scan callback; such a block
//     is never evicted.
#include "longctx/cache/tiered_cache.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "longctx/comm/communicator.h"
#include "longctx/core/log.h"
#include "longctx/core/trace.h"

namespace longctx::cache {
namespace {

using Clock = std::chrono::steady_clock;

// Does `add` more bytes fit under `budget` with `used` already taken? (Overflow-safe for the
// kUnlimitedBudget sentinel.)
bool Fits(uint64_t used, uint64_t add, uint64_t budget) {
  return add <= budget && used <= budget - add;
}

struct Block {
  int32_t layer = 0;
  int64_t index = 0;   // block b holds rows [b*block_tokens, b*block_tokens + tokens)
  int32_t tokens = 0;  // rows held; == block_tokens once sealed (only the tail may be partial)
  // Device copy, fp32, [tokens][row] each; valid iff on_device.
  std::vector<float> k, v;
  bool on_device = false;
  // Host copy (encoded with the codec); valid iff on_host. Remote copy under the block's key.
  std::vector<std::byte> host;
  bool on_host = false, on_remote = false;
  uint64_t encoded_bytes = 0;  // size of the host/remote copy
  bool pinned = false;         // holds a persistent row
  bool prefetched = false;     // loaded by the background thread (Prefetch), not read since
  int32_t in_use = 0;          // handed to a Scan callback / being copied by Gather
  bool busy = false;           // an encode/put/get/decode runs on it with mu_ released
  std::list<Block*>::iterator dev_it, host_it;
  bool in_dev_lru = false, in_host_lru = false;
};

struct LayerTable {
  std::vector<std::unique_ptr<Block>> blocks;  // unique_ptr: Block* stays valid across appends
  int64_t rows = 0;
  int64_t window_first = 0;  // first block of the last-window set
};

class TieredCache final : public TieredKvCache {
 public:
  TieredCache(const KvCacheOptions& o, int32_t layers, int32_t kv_heads, int32_t head_dim,
              uint64_t sequence, std::shared_ptr<RemoteTier> remote)
      : opt_(o),
        kv_heads_(kv_heads),
        head_dim_(head_dim),
        row_(int64_t(kv_heads) * head_dim),
        bt_(o.block_tokens),
        sequence_(sequence),
        remote_(std::move(remote)),
        full_block_bytes_(uint64_t(o.block_tokens) * uint64_t(row_) * 8),
        wait_timeout_(2 * comm::DefaultTimeout()),
        layers_(size_t(layers)) {
    // The background thread keeps this much device room free for the caller's next block
    // (appends and Scan misses then rarely wait); Prefetch only loads beyond it.
    headroom_ = std::min<uint64_t>(2 * full_block_bytes_, opt_.device_budget);
    thread_ = std::thread([this] { Run(); });
  }

  ~TieredCache() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++wake_gen_;
    }
    cv_.notify_all();
    thread_.join();
    if (remote_ == nullptr) return;
    for (auto& layer : layers_) {
      for (auto& b : layer.blocks) {
        if (!b->on_remote) continue;
        Status s = remote_->Erase(Key(*b));
        if (!s.ok()) LONGCTX_LOG_WARN("KV cache: erasing {}: {}", Key(*b).ToString(), s.ToString());
      }
    }
  }

  Status SetPersistent(std::span<const int64_t> rows, int64_t window_rows) override {
    if (window_rows < 0) return InvalidArgument("KV cache: window_rows {} < 0", window_rows);
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i] < 0 || (i > 0 && rows[i] < rows[i - 1])) {
        return InvalidArgument("KV cache: persistent rows must be sorted and >= 0 (row {} at {})",
                               rows[i], i);
      }
    }
    std::unique_lock<std::mutex> lock(mu_);
    pinned_blocks_.clear();
    for (int64_t r : rows) pinned_blocks_.insert(r / bt_);
    window_rows_ = window_rows;
    for (auto& layer : layers_) {
      layer.window_first = WindowFirst(layer.rows);
      for (auto& b : layer.blocks) {
        b->pinned = pinned_blocks_.count(b->index) > 0;
        Reclassify(layer, b.get());
      }
    }
    Kick();
    return Status::Ok();
  }

  void Pin(int64_t row) override {
    if (row < 0) return;
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t bi = row / bt_;
    pinned_blocks_.insert(bi);
    for (auto& layer : layers_) {
      if (bi >= int64_t(layer.blocks.size())) continue;
      Block* b = layer.blocks[size_t(bi)].get();
      b->pinned = true;
      Reclassify(layer, b);
    }
    Kick();
  }

  Status Append(int32_t layer, const float* k, const float* v, int64_t rows) override {
    RETURN_IF_ERROR(CheckLayer(layer));
    if (rows < 0) return InvalidArgument("KV cache: append of {} rows", rows);
    if (rows == 0) return Status::Ok();
    if (k == nullptr || v == nullptr) return InvalidArgument("KV cache: append with null K or V");
    const size_t n = size_t(rows) * size_t(row_);
    for (size_t i = 0; i < n; ++i) {
      // Encoding refuses non-finite values; refuse them here, where the caller can tell which.
      if (!std::isfinite(k[i]) || !std::isfinite(v[i])) {
        return InvalidArgument("KV cache: layer {} append: non-finite K/V at row {}", layer,
                               int64_t(i) / row_);
      }
    }
    std::unique_lock<std::mutex> lock(mu_);
    LayerTable& L = layers_[size_t(layer)];
    int64_t done = 0;
    while (done < rows) {
      const bool fresh = L.blocks.empty() || L.blocks.back()->tokens == bt_;
      const int64_t have = fresh ? 0 : L.blocks.back()->tokens;
      const int64_t chunk = std::min<int64_t>(rows - done, bt_ - have);
      const uint64_t bytes = uint64_t(chunk) * uint64_t(row_) * 8;
      RETURN_IF_ERROR(WaitForRoom(lock, bytes).WithContext(
          fmt::format("appending rows [{}, {}) of layer {}", L.rows, L.rows + chunk, layer)));
      if (fresh) {
        auto nb = std::make_unique<Block>();
        nb->layer = layer;
        nb->index = int64_t(L.blocks.size());
        nb->on_device = true;
        nb->pinned = pinned_blocks_.count(nb->index) > 0;
        // The tail's arrays are allocated at full size once (accounted by rows held).
        nb->k.reserve(size_t(bt_) * size_t(row_));
        nb->v.reserve(size_t(bt_) * size_t(row_));
        L.blocks.push_back(std::move(nb));
        ++dev_blocks_;
      }
      Block* b = L.blocks.back().get();
      const size_t off = size_t(done) * size_t(row_), cnt = size_t(chunk) * size_t(row_);
      b->k.insert(b->k.end(), k + off, k + off + cnt);
      b->v.insert(b->v.end(), v + off, v + off + cnt);
      b->tokens += int32_t(chunk);
      L.rows += chunk;
      done += chunk;
      Touch(b);
      const int64_t old_first = L.window_first;
      L.window_first = WindowFirst(L.rows);
      for (int64_t i = old_first; i < L.window_first; ++i) Reclassify(L, L.blocks[size_t(i)].get());
      Reclassify(L, b);
    }
    Kick();
    return Status::Ok();
  }

  Status Truncate(int64_t rows) override {
    if (rows < 0) return InvalidArgument("KV cache: truncate to {} rows", rows);
    std::unique_lock<std::mutex> lock(mu_);
    std::vector<BlockKey> erase;
    for (size_t li = 0; li < layers_.size(); ++li) {
      LayerTable& L = layers_[li];
      if (L.rows <= rows) continue;
      const int64_t keep = (rows + bt_ - 1) / bt_;  // blocks kept
      Block* tail = nullptr;
      if (rows % bt_ != 0) {
        // The block that becomes the partial tail must be on the device: it is mutable again.
        tail = L.blocks[size_t(rows / bt_)].get();
        Status s = Acquire(lock, tail, /*count_prefetch=*/false);
        if (!s.ok()) {
          EraseRemote(lock, erase);  // what earlier layers dropped
          return s.WithContext(fmt::format("truncating layer {} to {} rows", li, rows));
        }
      }
      // No background work may run on the blocks changed below. (Its operation in flight ends
      // within the remote tier's deadline; the wait has its own, longer one.)
      paused_ = true;
      if (!cv_.wait_until(lock, Clock::now() + wait_timeout_, [&] { return !bg_in_op_; })) {
        paused_ = false;
        if (tail != nullptr) Release(tail);
        EraseRemote(lock, erase);  // what earlier layers dropped
        return DeadlineExceeded("KV cache: truncating layer {}: background thread busy for {} s",
                                li, std::chrono::duration_cast<std::chrono::seconds>(wait_timeout_).count());
      }
      while (int64_t(L.blocks.size()) > keep) {
        Block* b = L.blocks.back().get();
        DropAll(b, &erase);
        if (b->on_device) DropDevice(b);
        L.blocks.pop_back();
      }
      if (tail != nullptr) {
        SetPrefetched(tail, false);  // (Acquire cleared it already) before its size changes
        const int32_t now = int32_t(rows - tail->index * bt_);
        const uint64_t freed = uint64_t(tail->tokens - now) * uint64_t(row_) * 8;
        tail->k.resize(size_t(now) * size_t(row_));
        tail->v.resize(size_t(now) * size_t(row_));
        tail->tokens = now;
        dev_bytes_ -= freed;
        DropAll(tail, &erase);  // its lower copies hold rows that are gone
        --tail->in_use;
      }
      L.rows = rows;
      L.window_first = WindowFirst(L.rows);
      for (auto& b : L.blocks) Reclassify(L, b.get());
      paused_ = false;
    }
    Kick();
    EraseRemote(lock, erase);
    return Status::Ok();
  }

  // Erases remote copies the table no longer refers to; a failure only leaks store space.
  void EraseRemote(std::unique_lock<std::mutex>& lock, const std::vector<BlockKey>& keys) {
    if (remote_ == nullptr || keys.empty()) return;
    lock.unlock();
    for (const BlockKey& key : keys) {
      Status s = remote_->Erase(key);
      if (!s.ok()) LONGCTX_LOG_WARN("KV cache: erasing {}: {}", key.ToString(), s.ToString());
    }
    lock.lock();
  }

  int64_t rows(int32_t layer) const override {
    std::lock_guard<std::mutex> lock(mu_);
    if (layer < 0 || layer >= int32_t(layers_.size())) return 0;
    return layers_[size_t(layer)].rows;
  }

  Status Scan(int32_t layer, int64_t begin, int64_t end, const BlockFn& fn) override {
    RETURN_IF_ERROR(CheckLayer(layer));
    std::unique_lock<std::mutex> lock(mu_);
    const LayerTable& L = layers_[size_t(layer)];
    if (begin < 0 || begin > end || end > L.rows) {
      return OutOfRange("KV cache: scan of rows [{}, {}) of layer {}, which has {} rows", begin,
                        end, layer, L.rows);
    }
    for (int64_t row = begin; row < end;) {
      Block* b = L.blocks[size_t(row / bt_)].get();
      RETURN_IF_ERROR(Acquire(lock, b, /*count_prefetch=*/true));
      const int64_t first = b->index * bt_;
      const int64_t count = std::min<int64_t>(end, first + b->tokens) - row;
      const float* kp = b->k.data() + (row - first) * row_;
      const float* vp = b->v.data() + (row - first) * row_;
      lock.unlock();
      Status s = fn(row, count, kp, vp);
      lock.lock();
      Release(b);
      RETURN_IF_ERROR(s);
      row += count;
    }
    return Status::Ok();
  }

  Status Gather(int32_t layer, std::span<const int64_t> rows, float* k, float* v) override {
    RETURN_IF_ERROR(CheckLayer(layer));
    if (!rows.empty() && (k == nullptr || v == nullptr)) {
      return InvalidArgument("KV cache: gather into null K or V");
    }
    std::unique_lock<std::mutex> lock(mu_);
    const LayerTable& L = layers_[size_t(layer)];
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i] < 0 || rows[i] >= L.rows || (i > 0 && rows[i] <= rows[i - 1])) {
        return InvalidArgument(
            "KV cache: gather rows must be sorted, distinct and in [0, {}) for layer {} (row {} "
            "at {})", L.rows, layer, rows[i], i);
      }
    }
    const size_t rb = size_t(row_) * sizeof(float);
    for (size_t i = 0; i < rows.size();) {
      Block* b = L.blocks[size_t(rows[i] / bt_)].get();
      RETURN_IF_ERROR(Acquire(lock, b, /*count_prefetch=*/true));
      const int64_t first = b->index * bt_;
      for (; i < rows.size() && rows[i] < first + b->tokens; ++i) {
        std::memcpy(k + i * size_t(row_), b->k.data() + (rows[i] - first) * row_, rb);
        std::memcpy(v + i * size_t(row_), b->v.data() + (rows[i] - first) * row_, rb);
      }
      Release(b);
    }
    return Status::Ok();
  }

  void Prefetch(int32_t layer, int64_t begin, int64_t end) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (layer < 0 || layer >= int32_t(layers_.size())) return;
    const LayerTable& L = layers_[size_t(layer)];
    begin = std::max<int64_t>(begin, 0);
    end = std::min(end, L.rows);
    if (begin >= end) return;
    for (int64_t bi = begin / bt_; bi <= (end - 1) / bt_; ++bi) {
      if (!L.blocks[size_t(bi)]->on_device) prefetch_.emplace_back(layer, bi);
    }
    Kick();
  }

  Status Flush() override {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t want = ++flush_req_;
    Kick();
    if (!cv_.wait_until(lock, Clock::now() + wait_timeout_,
                        [&] { return flush_done_ >= want || stop_; })) {
      return DeadlineExceeded("KV cache: background thread still busy after {} s",
                              std::chrono::duration_cast<std::chrono::seconds>(wait_timeout_).count());
    }
    Status s = bg_error_;
    bg_error_ = Status::Ok();
    return s;
  }

  KvCacheStats Stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    KvCacheStats s = stats_;
    s.device = {dev_bytes_, dev_blocks_, dev_peak_};
    s.host = {host_bytes_, host_blocks_, host_peak_};
    s.remote = {remote_bytes_, remote_blocks_, remote_peak_};
    return s;
  }

 private:
  BlockKey Key(const Block& b) const { return BlockKey{sequence_, uint32_t(b.layer), uint64_t(b.index)}; }
  BlockShape Shape(const Block& b) const { return BlockShape{b.tokens, kv_heads_, head_dim_}; }
  uint64_t DeviceBytes(const Block& b) const { return uint64_t(b.tokens) * uint64_t(row_) * 8; }

  Status CheckLayer(int32_t layer) const {
    if (layer < 0 || layer >= int32_t(layers_.size())) {
      return OutOfRange("KV cache: layer {} outside [0, {})", layer, layers_.size());
    }
    return Status::Ok();
  }

  int64_t WindowFirst(int64_t rows) const {
    const int64_t start = rows - window_rows_;
    return start <= 0 ? 0 : start / bt_;
  }

  // Persistent: never demoted (global-token blocks, the last window, the partial tail).
  bool Persistent(const LayerTable& L, const Block& b) const {
    return b.pinned || b.tokens < bt_ || b.index >= L.window_first;
  }

  // Puts a block in or out of the device LRU after its persistence or residency changed; a
  // persistent block that is not resident is queued for loading (it belongs on the device).
  void Reclassify(const LayerTable& L, Block* b) {
    const bool persistent = Persistent(L, *b);
    if (b->on_device && !persistent && !b->in_dev_lru) {
      b->dev_it = dev_lru_.insert(dev_lru_.end(), b);
      b->in_dev_lru = true;
    } else if ((!b->on_device || persistent) && b->in_dev_lru) {
      dev_lru_.erase(b->dev_it);
      b->in_dev_lru = false;
    }
    if (persistent && !b->on_device && !b->busy) prefetch_.emplace_back(b->layer, b->index);
  }

  void Touch(Block* b) {
    if (b->in_dev_lru) dev_lru_.splice(dev_lru_.end(), dev_lru_, b->dev_it);
  }

  // Wakes the background thread: something it may act on changed.
  void Kick() {
    ++wake_gen_;
    cv_.notify_all();
  }

  void DropDevice(Block* b) {
    dev_bytes_ -= DeviceBytes(*b);
    --dev_blocks_;
    std::vector<float>().swap(b->k);
    std::vector<float>().swap(b->v);
    b->on_device = false;
    SetPrefetched(b, false);
    if (b->in_dev_lru) {
      dev_lru_.erase(b->dev_it);
      b->in_dev_lru = false;
    }
    cv_.notify_all();
  }

  void SetPrefetched(Block* b, bool on) {
    if (b->prefetched == on) return;
    b->prefetched = on;
    if (on) {
      prefetched_bytes_ += DeviceBytes(*b);
    } else {
      prefetched_bytes_ -= DeviceBytes(*b);
    }
  }

  void DropHost(Block* b) {
    lower_full_ = false;
    host_bytes_ -= b->host.size();
    --host_blocks_;
    std::vector<std::byte>().swap(b->host);
    b->on_host = false;
    if (b->in_host_lru) {
      host_lru_.erase(b->host_it);
      b->in_host_lru = false;
    }
  }

  // Forgets a block's lower-tier copies; the remote keys to erase are collected in *erase.
  void DropAll(Block* b, std::vector<BlockKey>* erase) {
    if (b->on_host) DropHost(b);
    if (b->on_remote) {
      lower_full_ = false;
      remote_bytes_ -= b->encoded_bytes;
      --remote_blocks_;
      b->on_remote = false;
      erase->push_back(Key(*b));
    }
  }

  void AddDevice(uint64_t bytes) {
    dev_bytes_ += bytes;
    dev_peak_ = std::max(dev_peak_, dev_bytes_);
  }

  // Reserves `bytes` of device room for the caller, waiting for the background thread to demote
  // blocks. Fails (never hangs) when nothing can be demoted or the deadline passes.
  Status WaitForRoom(std::unique_lock<std::mutex>& lock, uint64_t bytes) {
    if (!Fits(dev_bytes_, bytes, opt_.device_budget)) {
      if (bytes > opt_.device_budget) {
        return ResourceExhausted(
            "KV cache: device budget of {} bytes is smaller than one block ({} bytes); raise "
            "--kv-device-budget", opt_.device_budget, bytes);
      }
      const uint64_t gen = room_fail_gen_;
      room_wanted_ = bytes;
      Kick();
      const auto deadline = Clock::now() + wait_timeout_;
      cv_.wait_until(lock, deadline, [&] {
        return stop_ || room_fail_gen_ != gen || Fits(dev_bytes_, bytes, opt_.device_budget);
      });
      room_wanted_ = 0;
      if (!Fits(dev_bytes_, bytes, opt_.device_budget)) {
        if (room_fail_gen_ != gen) return room_fail_;
        if (stop_) return Unavailable("KV cache: shutting down");
        return DeadlineExceeded("KV cache: no device room for {} bytes after {} s", bytes,
                                std::chrono::duration_cast<std::chrono::seconds>(wait_timeout_).count());
      }
    }
    AddDevice(bytes);
    return Status::Ok();
  }

  // Makes `b` resident and marks it in use (the caller must Release it). A demoted block is
  // loaded here (a miss), or waited for when the background thread is loading it.
  Status Acquire(std::unique_lock<std::mutex>& lock, Block* b, bool count_prefetch) {
    if (b->on_device) {
      if (count_prefetch && b->prefetched) ++stats_.prefetch_hits;
      SetPrefetched(b, false);
    } else {
      const auto t0 = Clock::now();
      if (count_prefetch) ++stats_.prefetch_misses;
      while (!b->on_device) {
        if (b->busy) {  // being loaded (Prefetch) or moved host -> remote: wait for it
          if (!cv_.wait_until(lock, t0 + wait_timeout_, [&] { return !b->busy || stop_; })) {
            return DeadlineExceeded("KV cache: {} still busy after {} s", Key(*b).ToString(),
                                    std::chrono::duration_cast<std::chrono::seconds>(wait_timeout_).count());
          }
          if (stop_) return Unavailable("KV cache: shutting down");
          continue;
        }
        b->busy = true;
        Status s = WaitForRoom(lock, DeviceBytes(*b));
        if (!s.ok()) {
          b->busy = false;
          cv_.notify_all();
          return s.WithContext(fmt::format("loading {}", Key(*b).ToString()));
        }
        RETURN_IF_ERROR(Load(lock, b));
      }
      SetPrefetched(b, false);
      stats_.stall_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    }
    ++b->in_use;
    Touch(b);
    return Status::Ok();
  }

  void Release(Block* b) {
    --b->in_use;
    Touch(b);
    // A block leaving use only matters to the background thread when it is short of room or
    // has prefetches waiting; otherwise a scan would wake it for every block.
    if (room_wanted_ > 0 || draining_ || !prefetch_.empty() ||
        !Fits(dev_bytes_, headroom_, opt_.device_budget)) {
      Kick();
    }
  }

  // Loads a busy, non-resident block whose device bytes are already reserved; clears busy.
  Status Load(std::unique_lock<std::mutex>& lock, Block* b) {
    trace::TraceSpan span("kv_load", "kv", "layer", b->layer, "block", b->index);
    const BlockKey key = Key(*b);
    const uint64_t bytes = DeviceBytes(*b);
    std::vector<float> k, v;
    BlockShape shape;
    Status s;
    if (b->on_host) {
      // The host copy is stable while busy: nothing drops or moves a busy block's copies.
      const std::span<const std::byte> enc(b->host);
      lock.unlock();
      s = DecodeBlock(enc, key, &shape, &k, &v);
      lock.lock();
    } else if (b->on_remote && remote_ != nullptr) {
      lock.unlock();
      Result<std::vector<std::byte>> got = remote_->Get(key);
      s = got.ok() ? DecodeBlock(*got, key, &shape, &k, &v) : got.status();
      lock.lock();
    } else {
      s = Internal("KV cache: {} has no copy in any tier", key.ToString());
    }
    if (s.ok() && shape.tokens != b->tokens) {
      s = DataLoss("KV block {}: holds {} rows, the table says {}", key.ToString(), shape.tokens,
                   b->tokens);
    }
    b->busy = false;
    if (!s.ok()) {
      dev_bytes_ -= bytes;
      cv_.notify_all();
      return s;
    }
    b->k = std::move(k);
    b->v = std::move(v);
    b->on_device = true;
    ++dev_blocks_;
    ++stats_.loads;
    if (b->in_host_lru) host_lru_.splice(host_lru_.end(), host_lru_, b->host_it);
    Reclassify(layers_[size_t(b->layer)], b);
    cv_.notify_all();
    return Status::Ok();
  }

  // ---- the background thread -----------------------------------------------------------------

  void Run() {
    trace::SetThreadName("kv-cache");
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      const uint64_t seq = flush_req_, gen = wake_gen_;
      bool worked = false;
      if (!paused_) {
        bg_in_op_ = true;
        worked = Step(lock);
        bg_in_op_ = false;
        cv_.notify_all();  // a Truncate may wait for the step to end
      }
      if (worked) continue;
      flush_done_ = seq;
      cv_.notify_all();
      cv_.wait(lock, [&] { return stop_ || wake_gen_ != gen; });
    }
    flush_done_ = flush_req_;
    cv_.notify_all();
  }

  // One unit of background work; false when there was nothing it could do.
  bool Step(std::unique_lock<std::mutex>& lock) {
    // 1. A caller waits for device room.
    if (room_wanted_ > 0 && !Fits(dev_bytes_, room_wanted_, opt_.device_budget)) {
      Status s;
      const Evicted e = EvictOne(lock, /*allow_prefetched=*/true, &s);
      if (e == Evicted::kYes) return true;
      if (room_wanted_ > 0) {
        room_fail_ = e == Evicted::kNoVictim ? PersistentSetTooLarge() : s;
        ++room_fail_gen_;
        cv_.notify_all();
      }
      return false;
    }
    // 2. Keep `headroom_` free so the caller's next block need not wait (unless the lower tiers
    //    are known to be full: then only a caller's need is worth another try). Once below it,
    //    demote up to twice the headroom, so the thread is not woken for every appended block.
    if (!Fits(dev_bytes_, headroom_, opt_.device_budget)) draining_ = true;
    if (draining_ && Fits(dev_bytes_, 2 * headroom_, opt_.device_budget)) draining_ = false;
    if (!lower_full_ && draining_) {
      Status s;
      const Evicted e = EvictOne(lock, /*allow_prefetched=*/false, &s);
      if (e == Evicted::kYes) return true;
      draining_ = false;
      // Full lower tiers are the caller's error when it needs the room; anything else (a remote
      // tier failing) is reported by Flush.
      if (e == Evicted::kError && s.code() != StatusCode::kResourceExhausted) RecordError(s);
      return false;
    }
    // 3. Prefetch into free room, in the order asked, leaving the headroom.
    while (!prefetch_.empty()) {
      const auto [li, bi] = prefetch_.front();
      const LayerTable& L = layers_[size_t(li)];
      Block* b = bi < int64_t(L.blocks.size()) ? L.blocks[size_t(bi)].get() : nullptr;
      if (b == nullptr || b->on_device || b->busy) {
        prefetch_.pop_front();
        continue;
      }
      const uint64_t bytes = DeviceBytes(*b);
      if (!Fits(dev_bytes_, bytes + headroom_, opt_.device_budget)) {
        // Make room by demoting LRU blocks of other layers, as long as loaded-but-unread blocks
        // stay under half the budget (a prefetch must not crowd out what is being read).
        Status s;
        if (Fits(prefetched_bytes_, bytes, opt_.device_budget / 2) &&
            EvictOne(lock, /*allow_prefetched=*/false, &s, /*spare_layer=*/li) == Evicted::kYes) {
          return true;
        }
        return false;
      }
      prefetch_.pop_front();
      b->busy = true;
      AddDevice(bytes);
      trace::TraceSpan span("kv_prefetch", "kv", "layer", li, "block", bi);
      Status s = Load(lock, b);
      if (s.ok()) {
        SetPrefetched(b, true);
      } else {
        RecordError(s.WithContext("prefetch"));
      }
      return true;
    }
    return false;
  }

  void RecordError(const Status& s) {
    LONGCTX_LOG_WARN("KV cache: {}", s.ToString());
    if (bg_error_.ok()) bg_error_ = s;
  }

  enum class Evicted { kYes, kNoVictim, kError };

  // Demotes the least recently used evictable device block: dropped at once when a lower tier
  // already holds it, else encoded and placed in the host (or remote) tier first.
  // spare_layer: a layer whose blocks are not demoted (the one being prefetched), or -1.
  Evicted EvictOne(std::unique_lock<std::mutex>& lock, bool allow_prefetched, Status* error,
                   int32_t spare_layer = -1) {
    Block* victim = nullptr;
    Block* fallback = nullptr;  // a prefetched-but-unread block, the last resort
    for (Block* b : dev_lru_) {
      if (b->in_use > 0 || b->busy || b->layer == spare_layer) continue;
      if (b->prefetched) {
        if (fallback == nullptr) fallback = b;
        continue;
      }
      victim = b;
      break;
    }
    if (victim == nullptr && allow_prefetched) victim = fallback;
    if (victim == nullptr) return Evicted::kNoVictim;
    if (victim->on_host || victim->on_remote) {
      DropDevice(victim);
      return Evicted::kYes;
    }
    victim->busy = true;
    trace::TraceSpan span("kv_demote", "kv", "layer", victim->layer, "block", victim->index);
    const BlockKey key = Key(*victim);
    const BlockShape shape = Shape(*victim);
    // A sealed block's device arrays are immutable, and nothing frees them while it is busy.
    const std::span<const float> k(victim->k), v(victim->v);
    lock.unlock();
    Result<std::vector<std::byte>> enc = EncodeBlock(key, shape, opt_.codec, k, v);
    lock.lock();
    Status s = enc.ok() ? Place(lock, victim, std::move(enc).value()) : enc.status();
    victim->busy = false;
    cv_.notify_all();
    if (s.ok()) {
      ++stats_.demotions;
      // Still evictable? (It may have been pinned, or handed to a Scan, meanwhile.)
      if (victim->in_dev_lru && victim->in_use == 0) DropDevice(victim);
      return Evicted::kYes;
    }
    if (s.code() == StatusCode::kResourceExhausted) {
      lower_full_ = true;
      // No lower tier has room for a new copy; a block that already has one is free to drop.
      for (Block* b : dev_lru_) {
        if (b->in_use == 0 && !b->busy && (b->on_host || b->on_remote)) {
          DropDevice(b);
          return Evicted::kYes;
        }
      }
    }
    *error = s.WithContext(fmt::format("demoting {}", key.ToString()));
    return Evicted::kError;
  }

  // Stores the encoded copy of busy block `b` in the host tier — making room there by moving
  // host blocks to the remote tier in LRU order — or, failing that, in the remote tier.
  Status Place(std::unique_lock<std::mutex>& lock, Block* b, std::vector<std::byte> enc) {
    const uint64_t size = enc.size();
    Status remote_status;  // why the remote tier could not take a block, for the message
    if (size <= opt_.host_budget) {
      while (!Fits(host_bytes_, size, opt_.host_budget)) {
        Block* h = nullptr;
        for (Block* c : host_lru_) {
          if (!c->busy) {
            h = c;
            break;
          }
        }
        if (h == nullptr) break;
        if (h->on_remote) {  // already has a remote copy: free to drop
          DropHost(h);
          continue;
        }
        remote_status = HostToRemote(lock, h);
        if (!remote_status.ok()) {
          if (remote_status.code() != StatusCode::kResourceExhausted) return remote_status;
          break;
        }
      }
      if (Fits(host_bytes_, size, opt_.host_budget)) {
        host_bytes_ += size;
        host_peak_ = std::max(host_peak_, host_bytes_);
        ++host_blocks_;
        b->host = std::move(enc);
        b->on_host = true;
        b->encoded_bytes = size;
        b->host_it = host_lru_.insert(host_lru_.end(), b);
        b->in_host_lru = true;
        return Status::Ok();
      }
    }
    if (remote_status.ok()) {
      remote_status = PutRemote(lock, b, enc);
      if (remote_status.ok() || remote_status.code() != StatusCode::kResourceExhausted) {
        return remote_status;
      }
    }
    return ResourceExhausted(
        "KV cache: every tier is full: device budget {} bytes, host budget {} bytes ({} bytes in "
        "{} blocks), {}; raise --kv-device-budget, --kv-host-budget or --kv-remote-budget",
        opt_.device_budget, opt_.host_budget, host_bytes_, host_blocks_, remote_status.message());
  }

  // Writes block `b` (busy, or made busy here) to the remote tier; bytes are reserved first.
  Status PutRemote(std::unique_lock<std::mutex>& lock, Block* b, std::span<const std::byte> enc) {
    if (remote_ == nullptr) {
      return ResourceExhausted("no remote tier (a remote budget needs the KV store)");
    }
    if (!Fits(remote_bytes_, enc.size(), opt_.remote_budget)) {
      return ResourceExhausted("remote budget {} bytes ({} used) cannot take {} more",
                               opt_.remote_budget, remote_bytes_, enc.size());
    }
    remote_bytes_ += enc.size();
    remote_peak_ = std::max(remote_peak_, remote_bytes_);
    const BlockKey key = Key(*b);
    lock.unlock();
    Status s = remote_->Put(key, enc);
    lock.lock();
    if (!s.ok()) {
      remote_bytes_ -= enc.size();
      return s;
    }
    ++remote_blocks_;
    b->on_remote = true;
    b->encoded_bytes = enc.size();
    return Status::Ok();
  }

  // Moves host block `h` (not busy) to the remote tier and drops its host copy.
  Status HostToRemote(std::unique_lock<std::mutex>& lock, Block* h) {
    h->busy = true;
    Status s = PutRemote(lock, h, h->host);
    h->busy = false;
    cv_.notify_all();
    if (!s.ok()) return s;
    ++stats_.demotions;
    DropHost(h);
    return Status::Ok();
  }

  Status PersistentSetTooLarge() const {
    uint64_t bytes = 0, blocks = 0;
    for (const auto& L : layers_) {
      for (const auto& b : L.blocks) {
        if (b->on_device && !b->in_dev_lru) {
          bytes += DeviceBytes(*b);
          ++blocks;
        }
      }
    }
    return ResourceExhausted(
        "KV cache: device budget of {} bytes is too small: the persistent set (global-token "
        "blocks, the last {}-row window and the tail of each of {} layers) holds {} blocks, {} "
        "bytes, and streaming needs 2 more blocks ({} bytes); raise --kv-device-budget",
        opt_.device_budget, window_rows_, layers_.size(), blocks, bytes, 2 * full_block_bytes_);
  }

  const KvCacheOptions opt_;
  const int32_t kv_heads_, head_dim_;
  const int64_t row_;  // floats per token of K (or V)
  const int64_t bt_;   // block_tokens
  const uint64_t sequence_;
  const std::shared_ptr<RemoteTier> remote_;
  const uint64_t full_block_bytes_;  // device bytes of a sealed block
  const std::chrono::milliseconds wait_timeout_;
  uint64_t headroom_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // every state change; waiters re-check their predicate
  std::vector<LayerTable> layers_;
  std::set<int64_t> pinned_blocks_;  // block indices holding a persistent row (every layer)
  int64_t window_rows_ = 0;
  std::list<Block*> dev_lru_;   // resident, non-persistent blocks, least recently used first
  std::list<Block*> host_lru_;  // blocks with a host copy, least recently placed/read first
  std::deque<std::pair<int32_t, int64_t>> prefetch_;  // (layer, block) to load, in order

  // Tier accounting. Device bytes include reservations of loads in flight.
  uint64_t dev_bytes_ = 0, dev_blocks_ = 0, dev_peak_ = 0;
  uint64_t prefetched_bytes_ = 0;  // device bytes of blocks loaded by Prefetch and not yet read
  uint64_t host_bytes_ = 0, host_blocks_ = 0, host_peak_ = 0;
  uint64_t remote_bytes_ = 0, remote_blocks_ = 0, remote_peak_ = 0;
  KvCacheStats stats_;

  // Caller <-> background thread.
  uint64_t room_wanted_ = 0;  // device bytes the caller waits for (0: none)
  uint64_t room_fail_gen_ = 0;
  Status room_fail_;
  uint64_t wake_gen_ = 0;
  uint64_t flush_req_ = 0, flush_done_ = 0;
  bool stop_ = false, paused_ = false, bg_in_op_ = false;
  bool lower_full_ = false;
  bool draining_ = false;    // demoting from below the headroom up to twice the headroom  // the last demotion found host and remote full (reset on a drop)
  Status bg_error_;
  std::thread thread_;  // last: started after every member above is built
};

}  // namespace

Result<std::unique_ptr<TieredKvCache>> TieredKvCache::Create(const KvCacheOptions& options,
                                                             int32_t layers, int32_t kv_heads,
                                                             int32_t head_dim, uint64_t sequence,
                                                             std::shared_ptr<RemoteTier> remote) {
  if (options.block_tokens < 1) {
    return InvalidArgument("KV cache: block_tokens {} < 1 (--kv-block-tokens)", options.block_tokens);
  }
  if (layers < 1 || kv_heads < 1 || head_dim < 1) {
    return InvalidArgument("KV cache: bad shape: {} layers, {} kv heads, head dim {}", layers,
                           kv_heads, head_dim);
  }
  if (uint8_t(options.codec) > uint8_t(Codec::kInt8)) {
    return InvalidArgument("KV cache: unknown codec {}", int(options.codec));
  }
  const uint64_t block = uint64_t(options.block_tokens) * uint64_t(kv_heads) * uint64_t(head_dim) * 8;
  if (options.device_budget < 2 * block) {
    return ResourceExhausted(
        "KV cache: device budget of {} bytes is below two blocks ({} bytes each at {} tokens x {} "
        "kv heads x {} dims, fp32 K and V); raise --kv-device-budget", options.device_budget, block,
        options.block_tokens, kv_heads, head_dim);
  }
  return std::unique_ptr<TieredKvCache>(
      new TieredCache(options, layers, kv_heads, head_dim, sequence, std::move(remote)));
}

}  // namespace longctx::cache
