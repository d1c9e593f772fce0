// comm/self_communicator.cpp: the group of one, for single-process runs started without a launcher.
// Collectives are copies; a send to self is kept until the matching recv.
#include <cstring>
#include <deque>
#include <map>

#include "comm/communicator.h"
#include "comm/op_checks.h"
#include "runtime/error.h"

namespace strata::comm {
namespace {

class SelfCommunicator final : public Communicator {
 public:
  SelfCommunicator(CommConfig config, std::string name) : config_(config), name_(std::move(name)) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }

  std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp) override {
    check_host_tensor(t, "all_reduce", *this, "self");
    check_reducible(t.dtype(), "all_reduce", *this);
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) override {
    check_host_tensor(in, "all_gather", *this, "self");
    check_host_tensor(out, "all_gather", *this, "self");
    check_all_gather(in, out, *this);
    if (in.nbytes() > 0 && in.raw() != out.raw()) std::memmove(out.raw(), in.raw(), static_cast<size_t>(in.nbytes()));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp) override {
    check_host_tensor(in, "reduce_scatter", *this, "self");
    check_host_tensor(out, "reduce_scatter", *this, "self");
    check_reducible(in.dtype(), "reduce_scatter", *this);
    check_reduce_scatter(in, out, *this);
    if (in.nbytes() > 0 && in.raw() != out.raw()) std::memmove(out.raw(), in.raw(), static_cast<size_t>(in.nbytes()));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> broadcast_async(Tensor& t, int root) override {
    check_host_tensor(t, "broadcast", *this, "self");
    check_rank_arg(root, "root", "broadcast", *this);
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> send_async(const Tensor& t, int peer, int tag) override {
    check_host_tensor(t, "send", *this, "self");
    check_rank_arg(peer, "peer", "send", *this);
    check_tag(tag, "send", *this);
    const auto* p = static_cast<const uint8_t*>(t.raw());
    pending_[tag].emplace_back(p, p + t.nbytes());
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> recv_async(Tensor& t, int peer, int tag) override {
    check_host_tensor(t, "recv", *this, "self");
    check_rank_arg(peer, "peer", "recv", *this);
    check_tag(tag, "recv", *this);
    auto it = pending_.find(tag);
    // With one rank nobody else can send later, so waiting would only ever time out.
    STRATA_CHECK(it != pending_.end() && !it->second.empty(), op_where("recv", *this),
                 ": no send to self with tag ", tag, " is pending; in a group of one a recv must follow its send");
    std::vector<uint8_t> msg = std::move(it->second.front());
    it->second.pop_front();
    STRATA_CHECK_KIND(ErrorKind::kComm, static_cast<int64_t>(msg.size()) == t.nbytes(), op_where("recv", *this),
                      ": message of ", msg.size(), " bytes does not fit a tensor of ", t.nbytes(), " bytes");
    if (!msg.empty()) std::memcpy(t.raw(), msg.data(), msg.size());
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> barrier_async() override { return std::make_unique<DoneWork>(); }
  std::unique_ptr<Communicator> split(int color, int, const std::string& name) override {
    if (color < 0) return nullptr;
    return std::make_unique<SelfCommunicator>(config_, name);
  }

 private:
  CommConfig config_;
  std::string name_;
  std::map<int, std::deque<std::vector<uint8_t>>> pending_;
};

}  // namespace

std::unique_ptr<Communicator> make_self_communicator(const CommConfig& config, const std::string& name) {
  return std::make_unique<SelfCommunicator>(config, name);
}

}  // namespace strata::comm
