// comm/nccl/nccl_communicator.cpp: NCCL collectives and point-to-point on a dedicated stream, ordered
// after the compute stream by events. Communicators are non-blocking so that no call can hang: every
// wait polls with a deadline, and on expiry the communicator is aborted (ncclCommAbort) and the error
// names the operation, the group and the elapsed time.
#include "comm/nccl/nccl_communicator.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/nccl/check_nccl.h"
#include "comm/op_checks.h"
#include "runtime/log.h"

namespace strata::comm {
namespace detail {
void throw_nccl_error(const char* call, const char* file, int line, ncclResult_t result, ncclComm_t comm) {
  const char* last = comm != nullptr ? ncclGetLastError(comm) : ncclGetLastError(nullptr);
  ::strata::detail::throw_error(ErrorKind::kComm, nullptr, file, line,
                                cat("NCCL error in ", call, ": ", ncclGetErrorString(result),
                                    (last != nullptr && *last != '\0') ? cat(" (", last, ")") : std::string()));
}
void throw_cuda_error(const char* call, const char* file, int line, cudaError_t status) {
  ::strata::detail::throw_error(ErrorKind::kCuda, nullptr, file, line,
                                cat("CUDA error in ", call, ": ", cudaGetErrorName(status), ": ",
                                    cudaGetErrorString(status)));
}
}  // namespace detail

namespace {

ncclDataType_t nccl_type(DType dtype, const char* op, const Communicator& comm) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kF16: return ncclFloat16;
    case DType::kBF16: return ncclBfloat16;
    case DType::kI32: return ncclInt32;
    case DType::kI8: return ncclInt8;
    default:
      STRATA_THROW(ErrorKind::kInvalidArgument, op_where(op, comm), ": NCCL cannot move ", dtype_name(dtype),
                   " tensors");
  }
}

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Shared state of one NCCL communicator: the comm, its stream, and the failure that poisons it.
// Waits are stream-ordered (the compute stream waits for the operation's event on the GPU), so the
// host never stalls on an all-reduce; a watchdog thread follows those events instead and aborts the
// communicator once one is older than the deadline, which also frees a GPU stuck on a dead peer.
struct NcclState {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  cudaStream_t compute = nullptr;
  int device = 0;
  double timeout_s = 300;
  bool recordable = false;  // NcclOptions::recordable
  std::string name;
  int rank = 0, size = 1;

  ~NcclState() {
    stop_watchdog();
    if (comm != nullptr) {
      const ncclResult_t r = failed() ? ncclSuccess : ncclCommDestroy(comm);
      if (r != ncclSuccess) LOG_WARN("ncclCommDestroy of '", name, "' failed: ", ncclGetErrorString(r));
    }
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // Polls the communicator until an in-progress call completes (non-blocking mode), with the deadline.
  void settle(const char* op) {
    const double start = now_s();
    while (true) {
      ncclResult_t state = ncclSuccess;
      CHECK_NCCL(ncclCommGetAsyncError(comm, &state), comm);
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) detail::throw_nccl_error(op, __FILE__, __LINE__, state, comm);
      if (now_s() - start > timeout_s) abort_and_throw(op, now_s() - start);
      std::this_thread::yield();
    }
  }

  [[noreturn]] void abort_and_throw(const char* op, double elapsed) {
    abort(op, elapsed);
    STRATA_THROW(ErrorKind::kTimeout, failure());
  }

  void check_usable(const char* op) const {
    const std::string f = failure();
    STRATA_CHECK_KIND(ErrorKind::kComm, f.empty(), op, " on '", name,
                      "': the communicator is unusable after an earlier failure (", f, "); end the job");
  }

  bool failed() const { return failed_.load(); }
  std::string failure() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return failure_;
  }

  // Timing-capable events, reused: a decode step issues two per all-reduce, and creating them each time
  // costs host time that eager TP steps cannot spare.
  cudaEvent_t take_event() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!spare_.empty()) {
        const cudaEvent_t e = spare_.back();
        spare_.pop_back();
        return e;
      }
    }
    cudaEvent_t e = nullptr;
    CHECK_CUDA_COMM(cudaEventCreate(&e));
    return e;
  }
  void give_event(cudaEvent_t e) {
    if (e == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    spare_.push_back(e);
  }

  // Hands the watchdog an operation's events (it recycles them once the op finished).
  void watch(cudaEvent_t began, cudaEvent_t done, const char* op, double start) {
    std::lock_guard<std::mutex> lock(mutex_);
    watched_.push_back({began, done, op, start});
    if (!watchdog_.joinable()) watchdog_ = std::thread([this] { run_watchdog(); });
  }

 private:
  void abort(const char* op, double elapsed) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!failure_.empty()) return;
      failure_ = cat(op, " on '", name, "' (rank ", rank, " of ", size, ") did not finish within ", elapsed,
                     " s; the NCCL communicator was aborted. A rank may have died, hung, or skipped this op; raise "
                     "comm.timeout_s (STRATA_COMM_TIMEOUT) if the step is legitimately slow");
      failed_ = true;
    }
    LOG_ERROR(failure());
    ncclCommAbort(comm);  // NCCL allows this from any thread; it ends kernels spinning on a dead peer
  }

  void run_watchdog() {
    if (cudaSetDevice(device) != cudaSuccess) return;
    while (!stop_) {
      const char* late = nullptr;
      double late_for = 0;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        while (!watched_.empty()) {
          Watched& w = watched_.front();
          const cudaError_t q = cudaEventQuery(w.done);
          if (q == cudaErrorNotReady) {
            if (now_s() - w.start > timeout_s) late = w.op, late_for = now_s() - w.start;
            break;
          }
          float ms = 0;
          if (q == cudaSuccess && w.began != nullptr && cudaEventElapsedTime(&ms, w.began, w.done) == cudaSuccess)
            device_busy_s_ = device_busy_s_.load() + ms * 1e-3;
          if (w.began != nullptr) spare_.push_back(w.began);  // fired, or the device failed (reported elsewhere)
          spare_.push_back(w.done);
          watched_.pop_front();
        }
      }
      if (late != nullptr && !failed()) abort(late, late_for);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  void stop_watchdog() {
    stop_ = true;
    if (watchdog_.joinable()) watchdog_.join();
    for (const Watched& w : watched_) {
      if (w.began != nullptr) cudaEventDestroy(w.began);
      cudaEventDestroy(w.done);
    }
    watched_.clear();
    for (cudaEvent_t e : spare_) cudaEventDestroy(e);
    spare_.clear();
  }

  struct Watched {
    cudaEvent_t began;  // on the communication stream just before the op; nullptr: untimed (a fence)
    cudaEvent_t done;
    const char* op;
    double start;
  };
  mutable std::mutex mutex_;
  std::string failure_;  // set once the communicator was aborted
  std::atomic<bool> failed_{false};
  std::deque<Watched> watched_;
  std::vector<cudaEvent_t> spare_;
  std::thread watchdog_;
  std::atomic<bool> stop_{false};

 public:
  std::atomic<double> device_busy_s_{0};  // GPU time of the watched ops that have finished
};

class NcclWork final : public Work {
 public:
  // `began` was recorded on the communication stream before the op; the work owns it.
  NcclWork(std::shared_ptr<NcclState> state, const char* op, cudaEvent_t began, bool host_wait)
      : state_(std::move(state)), op_(op), began_(began), host_wait_(host_wait) {
    done_ = state_->take_event();
    CHECK_CUDA_COMM(cudaEventRecord(done_, state_->stream));
    start_ = now_s();
    // Recorded into a CUDA graph: the events only order streams inside the capture; nothing may query
    // them, and the deadline goes on each replay (Collective::fence).
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    CHECK_CUDA_COMM(cudaStreamIsCapturing(state_->stream, &capture));
    captured_ = capture == cudaStreamCaptureStatusActive;
  }
  // A work dropped unwaited: its events may still be pending on the stream; a later record resets them.
  ~NcclWork() override {
    state_->give_event(done_);
    state_->give_event(began_);
  }
  bool test() override {
    if (done_ == nullptr || captured_) return true;  // handed to the watchdog, or ordered in the graph
    const cudaError_t s = cudaEventQuery(done_);
    if (s == cudaSuccess) {
      order_compute();
      return true;
    }
    if (s != cudaErrorNotReady) CHECK_CUDA_COMM(s);
    ncclResult_t async = ncclSuccess;
    state_->check_usable(op_);
    CHECK_NCCL(ncclCommGetAsyncError(state_->comm, &async), state_->comm);
    if (async != ncclSuccess && async != ncclInProgress)
      detail::throw_nccl_error(op_, __FILE__, __LINE__, async, state_->comm);
    if (now_s() - start_ > state_->timeout_s) state_->abort_and_throw(op_, now_s() - start_);
    return false;
  }
  // With a compute stream, waiting is a GPU-side dependency: later kernels queue behind the operation
  // and the host goes on launching (the watchdog keeps the deadline). Without one, the host polls.
  void wait() override {
    if (done_ == nullptr) return;
    if (captured_) {
      order_compute();
      return;
    }
    if (state_->compute != nullptr && !host_wait_) {
      state_->check_usable(op_);
      order_compute();
      state_->watch(began_, done_, op_, start_);
      began_ = done_ = nullptr;
      return;
    }
    while (!test()) std::this_thread::yield();
  }

 private:
  // Later compute-stream work (which reads the result) runs after the operation.
  void order_compute() {
    if (!ordered_ && state_->compute != nullptr) CHECK_CUDA_COMM(cudaStreamWaitEvent(state_->compute, done_, 0));
    ordered_ = true;
  }
  std::shared_ptr<NcclState> state_;
  const char* op_;
  cudaEvent_t began_ = nullptr;
  bool host_wait_ = false;
  bool captured_ = false;
  cudaEvent_t done_ = nullptr;
  double start_ = 0;
  bool ordered_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(std::shared_ptr<NcclState> state) : state_(std::move(state)) {}
  int rank() const override { return state_->rank; }
  int size() const override { return state_->size; }
  const std::string& name() const override { return state_->name; }

  std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override {
    return run("all_reduce", {&t}, [&](ncclComm_t c, cudaStream_t s) {
      return ncclAllReduce(t.raw(), t.raw(), static_cast<size_t>(t.numel()), nccl_type(t.dtype(), "all_reduce", *this),
                           op == ReduceOp::kSum ? ncclSum : ncclMax, c, s);
    });
  }
  std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) override {
    STRATA_CHECK(out.nbytes() == in.nbytes() * size(), op_where("all_gather", *this), ": output holds ", out.nbytes(),
                 " bytes, needs ", in.nbytes() * size());
    return run("all_gather", {&in, &out}, [&](ncclComm_t c, cudaStream_t s) {
      return ncclAllGather(in.raw(), out.raw(), static_cast<size_t>(in.numel()),
                           nccl_type(in.dtype(), "all_gather", *this), c, s);
    });
  }
  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override {
    STRATA_CHECK(in.numel() == out.numel() * size(), op_where("reduce_scatter", *this), ": input has ", in.numel(),
                 " elements, needs ", out.numel() * size());
    return run("reduce_scatter", {&in, &out}, [&](ncclComm_t c, cudaStream_t s) {
      return ncclReduceScatter(in.raw(), out.raw(), static_cast<size_t>(out.numel()),
                               nccl_type(in.dtype(), "reduce_scatter", *this), op == ReduceOp::kSum ? ncclSum : ncclMax,
                               c, s);
    });
  }
  std::unique_ptr<Work> broadcast_async(Tensor& t, int root) override {
    check_rank_arg(root, "root", "broadcast", *this);
    return run("broadcast", {&t}, [&](ncclComm_t c, cudaStream_t s) {
      return ncclBroadcast(t.raw(), t.raw(), static_cast<size_t>(t.numel()), nccl_type(t.dtype(), "broadcast", *this),
                           root, c, s);
    });
  }
  // NCCL matches point-to-point messages by order per peer; tags are checked but not needed.
  std::unique_ptr<Work> send_async(const Tensor& t, int peer, int tag) override {
    check_rank_arg(peer, "peer", "send", *this);
    check_tag(tag, "send", *this);
    return run("send", {&t}, [&](ncclComm_t c, cudaStream_t s) {
      return ncclSend(t.raw(), static_cast<size_t>(t.numel()), nccl_type(t.dtype(), "send", *this), peer, c, s);
    });
  }
  std::unique_ptr<Work> recv_async(Tensor& t, int peer, int tag) override {
    check_rank_arg(peer, "peer", "recv", *this);
    check_tag(tag, "recv", *this);
    return run("recv", {&t}, [&](ncclComm_t c, cudaStream_t s) {
      return ncclRecv(t.raw(), static_cast<size_t>(t.numel()), nccl_type(t.dtype(), "recv", *this), peer, c, s);
    });
  }
  std::unique_ptr<Work> barrier_async() override {
    if (scratch_ == nullptr) CHECK_CUDA_COMM(cudaMalloc(&scratch_, 4));
    Tensor one = Tensor::view(scratch_, {1}, DType::kI32, Device::kCuda);
    return run("barrier", {&one}, [&](ncclComm_t c, cudaStream_t s) {  // a barrier holds the host
      return ncclAllReduce(one.raw(), one.raw(), 1, ncclInt32, ncclSum, c, s);
    }, /*host_wait=*/true);
  }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    state_->check_usable("split");
    auto child = std::make_shared<NcclState>();
    child->device = state_->device;
    child->compute = state_->compute;
    child->timeout_s = state_->timeout_s;
    child->recordable = state_->recordable;
    child->name = name;
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    CHECK_NCCL(ncclCommSplit(state_->comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child->comm, &config),
               state_->comm);
    state_->settle("ncclCommSplit");
    if (color < 0) return nullptr;
    child->settle("ncclCommSplit (child)");
    CHECK_NCCL(ncclCommCount(child->comm, &child->size), child->comm);
    CHECK_NCCL(ncclCommUserRank(child->comm, &child->rank), child->comm);
    CHECK_CUDA_COMM(cudaStreamCreateWithFlags(&child->stream, cudaStreamNonBlocking));
    return std::make_unique<NcclCommunicator>(child);
  }
  ~NcclCommunicator() override {
    if (scratch_ != nullptr) cudaFree(scratch_);
  }
  double device_busy_seconds() const override { return state_->device_busy_s_.load(); }
  bool recordable() const override { return state_->recordable && state_->compute != nullptr; }
  void fence() override {
    if (state_->compute == nullptr) return;
    state_->check_usable("fence");
    const cudaEvent_t done = state_->take_event();
    CHECK_CUDA_COMM(cudaEventRecord(done, state_->compute));
    state_->watch(nullptr, done, "a replayed CUDA graph's collectives", now_s());
  }

 private:
  template <typename Launch>
  std::unique_ptr<Work> run(const char* op, std::initializer_list<const Tensor*> tensors, Launch launch,
                            bool host_wait = false) {
    state_->check_usable(op);
    for (const Tensor* t : tensors)
      STRATA_CHECK(t->device() == Device::kCuda, op_where(op, *this),
                   ": NCCL moves device tensors; this one is in host memory (use the MPI or TCP communicator)");
    CHECK_CUDA_COMM(cudaSetDevice(state_->device));
    if (state_->compute != nullptr) {  // the inputs are ready once the compute stream reaches here
      if (ready_ == nullptr) CHECK_CUDA_COMM(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
      CHECK_CUDA_COMM(cudaEventRecord(ready_, state_->compute));
      CHECK_CUDA_COMM(cudaStreamWaitEvent(state_->stream, ready_, 0));
    }
    // A non-blocking communicator may answer ncclInProgress (the first operation with a peer sets up its
    // connections): NCCL takes no further call until it settles, and the operation is on the stream only
    // then, so the completion event is recorded after.
    const cudaEvent_t began = state_->take_event();
    CHECK_CUDA_COMM(cudaEventRecord(began, state_->stream));
    const ncclResult_t launched = launch(state_->comm, state_->stream);
    if (launched != ncclSuccess && launched != ncclInProgress) state_->give_event(began);
    CHECK_NCCL(launched, state_->comm);
    if (launched == ncclInProgress) state_->settle(op);
    return std::make_unique<NcclWork>(state_, op, began, host_wait);
  }

  std::shared_ptr<NcclState> state_;
  cudaEvent_t ready_ = nullptr;
  void* scratch_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, const NcclOptions& options,
                                                     const std::string& name) {
  auto state = std::make_shared<NcclState>();
  state->device = options.device;
  state->compute = static_cast<cudaStream_t>(options.compute_stream);
  state->timeout_s = options.timeout_s;
  state->recordable = options.recordable;
  state->name = name;
  state->rank = bootstrap.rank();
  state->size = bootstrap.size();
  CHECK_CUDA_COMM(cudaSetDevice(options.device));
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (bootstrap.rank() == 0) CHECK_NCCL(ncclGetUniqueId(&id), nullptr);
  Tensor id_bytes = Tensor::view(&id, {static_cast<int64_t>(sizeof(id))}, DType::kI8);
  bootstrap.broadcast(id_bytes, 0);  // host communicator: times out like every other op
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  CHECK_NCCL(ncclCommInitRankConfig(&state->comm, state->size, id, state->rank, &config), state->comm);
  state->settle("ncclCommInitRankConfig");
  CHECK_CUDA_COMM(cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking));
  LOG_DEBUG("NCCL communicator '", name, "': rank ", state->rank, " of ", state->size, " on device ", options.device);
  return std::make_unique<NcclCommunicator>(state);
}

}  // namespace strata::comm
