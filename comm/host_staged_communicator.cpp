// comm/host_staged_communicator.cpp: device <-> host staging around a host communicator.
#include "comm/host_staged_communicator.h"

namespace strata::comm {
namespace {

class HostStagedCommunicator final : public Communicator {
 public:
  HostStagedCommunicator(std::unique_ptr<Communicator> inner, ::strata::Backend& backend)
      : inner_(std::move(inner)), backend_(backend) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }

  std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override {
    if (!on_device(t)) return inner_->all_reduce_async(t, op);
    Tensor h = to_host(t);
    inner_->all_reduce(h, op);
    from_host(h, t);
    return done();
  }
  std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) override {
    if (!on_device(in) && !on_device(out)) return inner_->all_gather_async(in, out);
    const Tensor hin = to_host(in);
    Tensor hout = Tensor::empty(out.shape(), out.dtype());
    inner_->all_gather(hin, hout);
    from_host(hout, out);
    return done();
  }
  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override {
    if (!on_device(in) && !on_device(out)) return inner_->reduce_scatter_async(in, out, op);
    const Tensor hin = to_host(in);
    Tensor hout = Tensor::empty(out.shape(), out.dtype());
    inner_->reduce_scatter(hin, hout, op);
    from_host(hout, out);
    return done();
  }
  std::unique_ptr<Work> broadcast_async(Tensor& t, int root) override {
    if (!on_device(t)) return inner_->broadcast_async(t, root);
    Tensor h = to_host(t);
    inner_->broadcast(h, root);
    from_host(h, t);
    return done();
  }
  std::unique_ptr<Work> send_async(const Tensor& t, int peer, int tag) override {
    if (!on_device(t)) return inner_->send_async(t, peer, tag);
    inner_->send(to_host(t), peer, tag);
    return done();
  }
  std::unique_ptr<Work> recv_async(Tensor& t, int peer, int tag) override {
    if (!on_device(t)) return inner_->recv_async(t, peer, tag);
    Tensor h = Tensor::empty(t.shape(), t.dtype());
    inner_->recv(h, peer, tag);
    from_host(h, t);
    return done();
  }
  std::unique_ptr<Work> barrier_async() override { return inner_->barrier_async(); }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    auto child = inner_->split(color, key, name);
    return child ? std::make_unique<HostStagedCommunicator>(std::move(child), backend_) : nullptr;
  }

 private:
  static bool on_device(const Tensor& t) { return t.device() != Device::kCpu; }
  static std::unique_ptr<Work> done() { return std::make_unique<DoneWork>(); }
  Tensor to_host(const Tensor& t) {
    Tensor h = Tensor::empty(t.shape(), t.dtype());
    backend_.copy(t, h);
    backend_.synchronize();
    return h;
  }
  // Synchronous so the host buffer may go away when this returns.
  void from_host(const Tensor& h, Tensor& t) {
    backend_.copy(h, t);
    backend_.synchronize();
  }
  std::unique_ptr<Communicator> inner_;
  ::strata::Backend& backend_;
};

}  // namespace

std::unique_ptr<Communicator> make_host_staged_communicator(std::unique_ptr<Communicator> inner, ::strata::Backend& backend) {
  return std::make_unique<HostStagedCommunicator>(std::move(inner), backend);
}

}  // namespace strata::comm
