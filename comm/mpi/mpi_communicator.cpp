// comm/mpi/mpi_communicator.cpp: MpiCommunicator. Each op starts nonblocking MPI and returns an
// MpiWork whose wait() polls MPI_Test until done or CommConfig::timeout_s, so no rank hangs forever.
#include "comm/mpi/mpi_communicator.h"

#include <chrono>
#include <climits>
#include <functional>
#include <mutex>
#include <thread>

#include "comm/host_reduce.h"
#include "comm/mpi/check_mpi.h"
#include "comm/mpi/mpi_runtime.h"
#include "comm/op_checks.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::comm {

using Clock = std::chrono::steady_clock;

struct MpiGroupState {
  std::shared_ptr<MpiRuntime> runtime;  // keeps MPI initialised while this group or its works live
  MPI_Comm comm = MPI_COMM_NULL;
  CommConfig config;
  std::string name;
  int rank = 0;
  int size = 1;
  std::vector<int> world_ranks;

  // A collective that timed out stays posted inside MPI (collectives cannot be cancelled), so its
  // buffers must outlive it and the group must not start new ops that would match against it.
  struct Orphan {
    std::vector<MPI_Request> requests;
    std::shared_ptr<void> keep;
  };
  std::mutex mutex;
  std::string broken;  // why this group is unusable; empty while healthy
  std::vector<Orphan> orphans;

  ~MpiGroupState();
  std::string where(const char* op) const { return cat(op, " on '", name, "' (rank ", rank, " of ", size, ")"); }
  std::string peer(int r) const { return cat("peer ", r, " (world rank ", world_ranks.at(r), ")"); }
  std::string group() const {
    std::string list;
    for (size_t i = 0; i < world_ranks.size() && i < 16; ++i) list += cat(i ? "," : "", world_ranks[i]);
    if (world_ranks.size() > 16) list += ",...";
    return cat("every member of '", name, "' (world ranks ", list, ")");
  }
};

MpiGroupState::~MpiGroupState() {
  if (!mpi_active()) return;
  // Give abandoned ops a moment to finish (a late peer may just have joined) before freeing.
  const auto until = Clock::now() + std::chrono::seconds(1);
  for (auto& o : orphans) {
    int done = 0;
    while (!done && Clock::now() < until) {
      if (MPI_Testall(static_cast<int>(o.requests.size()), o.requests.data(), &done, MPI_STATUSES_IGNORE) !=
          MPI_SUCCESS)
        break;
      if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!done) {
      LOG_WARN("'", name, "': an operation abandoned after a timeout is still pending at shutdown; leaking its buffers");
      new std::shared_ptr<void>(std::move(o.keep));  // MPI may still write into them
    }
  }
  if (comm != MPI_COMM_NULL) {
    const int rc = MPI_Comm_free(&comm);
    if (rc != MPI_SUCCESS) LOG_WARN("MPI_Comm_free('", name, "') failed: ", detail::mpi_error_string(rc));
  }
}

namespace {

// Polling with backoff: yield (which still hands the core to oversubscribed ranks) for the first
// couple of milliseconds, since a pipeline hand-off usually lands within that, then sleep in steps
// capped at 200 us. A 1 ms cap cost every stage hand-off about a millisecond.
class Backoff {
 public:
  void pause() {
    if (std::chrono::steady_clock::now() - start_ < std::chrono::milliseconds(2)) {
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
    sleep_us_ = std::min(sleep_us_ * 2, 200);
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  int sleep_us_ = 20;
};

// MPI counts are int: pick the widest unit that divides the bytes so large tensors still fit.
struct ByteSpan {
  MPI_Datatype type;
  int count;
};
ByteSpan byte_span(int64_t nbytes, const std::string& where) {
  const std::pair<MPI_Datatype, int64_t> units[] = {{MPI_BYTE, 1}, {MPI_UINT32_T, 4}, {MPI_UINT64_T, 8}};
  for (const auto& [type, unit] : units)
    if (nbytes % unit == 0 && nbytes / unit <= INT_MAX) return {type, static_cast<int>(nbytes / unit)};
  STRATA_THROW(ErrorKind::kInvalidArgument, where, ": a tensor of ", nbytes,
               " bytes is too large for one MPI message; split it into chunks");
}

int element_count(int64_t n, const std::string& where) {
  STRATA_CHECK(n <= INT_MAX, where, ": ", n, " elements exceed MPI's int count; split the tensor");
  return static_cast<int>(n);
}

MPI_Datatype accum_type(DType dtype) { return dtype == DType::kI32 ? MPI_INT32_T : MPI_FLOAT; }
MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::kSum ? MPI_SUM : MPI_MAX; }

class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<MpiGroupState> state, std::string what, std::string waiting_for, bool cancellable)
      : state_(std::move(state)), what_(std::move(what)), waiting_for_(std::move(waiting_for)),
        cancellable_(cancellable), start_(Clock::now()) {}
  ~MpiWork() override;

  // One request per op today; the pointer is valid until the next add_request.
  MPI_Request* add_request() {
    requests_.push_back(MPI_REQUEST_NULL);
    return &requests_.back();
  }
  std::function<void(const std::vector<MPI_Status>&)> finish;  // once, after success
  std::shared_ptr<void> keep;                                   // buffers MPI reads or writes

  bool test() override;
  void wait() override;
  double elapsed_seconds() const override {
    return done_ ? std::chrono::duration<double>(end_ - start_).count() : -1;
  }

 private:
  void complete();
  // Throws Error(kTimeout); returns only if a cancelled receive turned out to have completed.
  void time_out(double elapsed);

  std::shared_ptr<MpiGroupState> state_;
  std::string what_;
  std::string waiting_for_;
  bool cancellable_;
  Clock::time_point start_, end_;
  std::vector<MPI_Request> requests_;
  std::vector<MPI_Status> statuses_;
  bool done_ = false;
};

MpiWork::~MpiWork() {
  if (done_ || requests_.empty() || !mpi_active()) return;
  // Dropped without wait(): the op is still legal in flight; keep its buffers until the group goes.
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->orphans.push_back({std::move(requests_), std::move(keep)});
}

void MpiWork::complete() {
  done_ = true;
  end_ = Clock::now();
  requests_.clear();
  if (finish) finish(statuses_);
  keep.reset();
}

bool MpiWork::test() {
  if (done_) return true;
  STRATA_CHECK_KIND(ErrorKind::kComm, !requests_.empty(), what_, " on '", state_->name,
                    "' already failed; its result is undefined");
  int flag = 0;
  statuses_.resize(requests_.size());
  const int rc = MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag, statuses_.data());
  if (rc != MPI_SUCCESS) {
    int code = rc;
    for (const auto& s : statuses_)
      if (rc == MPI_ERR_IN_STATUS && s.MPI_ERROR != MPI_SUCCESS) code = s.MPI_ERROR;
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      state_->broken = cat(what_, " failed: ", detail::mpi_error_string(code));
      state_->orphans.push_back({std::move(requests_), std::move(keep)});
      requests_.clear();
    }
    detail::throw_mpi_error("MPI_Testall", __FILE__, __LINE__, code,
                            cat(what_, " on '", state_->name, "' (rank ", state_->rank, " of ", state_->size,
                                ") waiting for ", waiting_for_));
  }
  if (flag) complete();
  return done_;
}

void MpiWork::wait() {
  Backoff backoff;
  while (!test()) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    if (elapsed > state_->config.timeout_s) {
      time_out(elapsed);
      return;
    }
    backoff.pause();
  }
}

void MpiWork::time_out(double elapsed) {
  if (cancellable_) {
    // A receive can be withdrawn cleanly, so the group stays usable; if the message won the race
    // the receive simply completed.
    bool cancelled = false;
    for (auto& r : requests_) {
      MPI_Cancel(&r);
      MPI_Status status;
      MPI_Wait(&r, &status);
      int c = 0;
      MPI_Test_cancelled(&status, &c);
      cancelled = cancelled || c;
      statuses_.assign(1, status);
    }
    if (!cancelled) {
      complete();
      return;
    }
    requests_.clear();
  } else {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->broken = cat(what_, " timed out after ", elapsed, " s");
    state_->orphans.push_back({std::move(requests_), std::move(keep)});
    requests_.clear();
  }
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.1f", elapsed);
  STRATA_THROW(ErrorKind::kTimeout, what_, " on '", state_->name, "' (rank ", state_->rank, " of ", state_->size,
               ") timed out after ", secs, " s waiting for ", waiting_for_,
               ". A rank may have died, hung, or skipped this op (members must call collectives in the same "
               "order); raise CommConfig::timeout_s (STRATA_COMM_TIMEOUT) if the step is legitimately slow");
}

std::shared_ptr<MpiGroupState> make_state(MPI_Comm comm, std::shared_ptr<MpiRuntime> runtime,
                                          const CommConfig& config, const std::string& name) {
  auto s = std::make_shared<MpiGroupState>();
  s->runtime = std::move(runtime);
  s->comm = comm;
  s->config = config;
  s->name = name;
  CHECK_MPI(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  CHECK_MPI(MPI_Comm_rank(comm, &s->rank));
  CHECK_MPI(MPI_Comm_size(comm, &s->size));
  MPI_Group group, world;
  CHECK_MPI(MPI_Comm_group(comm, &group));
  CHECK_MPI(MPI_Comm_group(MPI_COMM_WORLD, &world));
  std::vector<int> ranks(static_cast<size_t>(s->size));
  for (int i = 0; i < s->size; ++i) ranks[static_cast<size_t>(i)] = i;
  s->world_ranks.resize(ranks.size());
  CHECK_MPI(MPI_Group_translate_ranks(group, s->size, ranks.data(), world, s->world_ranks.data()));
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  return s;
}

void check_usable(MpiGroupState& s, const char* op) {
  std::lock_guard<std::mutex> lock(s.mutex);
  STRATA_CHECK_KIND(ErrorKind::kComm, s.broken.empty(), s.where(op), ": the group is unusable after an earlier ",
                    "failure (", s.broken, "); end the job (comm::abort_world) so every rank stops");
}

std::string describe(const char* op, const Tensor& t) {
  return cat(op, " (", dtype_name(t.dtype()), " ", shape_str(t.shape()), ")");
}

}  // namespace

std::unique_ptr<MpiCommunicator> MpiCommunicator::world(const CommConfig& config, const std::string& name) {
  auto runtime = MpiRuntime::acquire(config);
  // A private duplicate keeps our traffic apart from any other library using MPI_COMM_WORLD.
  MPI_Comm comm;
  CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  return std::make_unique<MpiCommunicator>(make_state(comm, std::move(runtime), config, name));
}

MpiCommunicator::MpiCommunicator(std::shared_ptr<MpiGroupState> state) : state_(std::move(state)) {}
MpiCommunicator::~MpiCommunicator() = default;

int MpiCommunicator::rank() const { return state_->rank; }
int MpiCommunicator::size() const { return state_->size; }
const std::string& MpiCommunicator::name() const { return state_->name; }
const std::vector<int>& MpiCommunicator::world_ranks() const { return state_->world_ranks; }

std::unique_ptr<Work> MpiCommunicator::all_reduce_async(Tensor& t, ReduceOp op) {
  check_usable(*state_, "all_reduce");
  check_host_tensor(t, "all_reduce", *this, "MPI");
  check_reducible(t.dtype(), "all_reduce", *this);
  if (t.numel() == 0) return std::make_unique<DoneWork>();
  const std::string where = state_->where("all_reduce");
  const int n = element_count(t.numel(), where);
  auto work = std::make_unique<MpiWork>(state_, describe("all_reduce", t), state_->group(), false);
  void* buffer = t.raw();
  if (t.dtype() == DType::kF16 || t.dtype() == DType::kBF16) {
    auto acc = std::make_shared<std::vector<uint8_t>>(widen(t.raw(), n, t.dtype()));
    buffer = acc->data();
    work->keep = acc;
    work->finish = [acc, t](const std::vector<MPI_Status>&) mutable { narrow(acc->data(), t.numel(), t.dtype(), t.raw()); };
  } else {
    work->keep = t.keepalive();
  }
  CHECK_MPI_CTX(MPI_Iallreduce(MPI_IN_PLACE, buffer, n, accum_type(t.dtype()), mpi_op(op), state_->comm,
                               work->add_request()),
                where);
  return work;
}

std::unique_ptr<Work> MpiCommunicator::all_gather_async(const Tensor& in, Tensor& out) {
  check_usable(*state_, "all_gather");
  check_host_tensor(in, "all_gather", *this, "MPI");
  check_host_tensor(out, "all_gather", *this, "MPI");
  check_all_gather(in, out, *this);
  if (in.nbytes() == 0) return std::make_unique<DoneWork>();
  const std::string where = state_->where("all_gather");
  const ByteSpan span = byte_span(in.nbytes(), where);
  auto work = std::make_unique<MpiWork>(state_, describe("all_gather", in), state_->group(), false);
  work->keep = std::make_shared<std::pair<Tensor, Tensor>>(in, out);
  // The caller's slice of `out` may already hold its input (a gather into a shared buffer).
  const bool in_place = in.raw() == static_cast<const uint8_t*>(out.raw()) + in.nbytes() * state_->rank;
  CHECK_MPI_CTX(MPI_Iallgather(in_place ? MPI_IN_PLACE : in.raw(), span.count, span.type, out.raw(), span.count,
                               span.type, state_->comm, work->add_request()),
                where);
  return work;
}

std::unique_ptr<Work> MpiCommunicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) {
  check_usable(*state_, "reduce_scatter");
  check_host_tensor(in, "reduce_scatter", *this, "MPI");
  check_host_tensor(out, "reduce_scatter", *this, "MPI");
  check_reducible(in.dtype(), "reduce_scatter", *this);
  check_reduce_scatter(in, out, *this);
  if (out.numel() == 0) return std::make_unique<DoneWork>();
  const std::string where = state_->where("reduce_scatter");
  const int n = element_count(out.numel(), where);
  element_count(in.numel(), where);
  auto work = std::make_unique<MpiWork>(state_, describe("reduce_scatter", in), state_->group(), false);
  const void* send = in.raw();
  void* recv = out.raw();
  if (in.dtype() == DType::kF16 || in.dtype() == DType::kBF16) {
    auto bufs = std::make_shared<std::pair<std::vector<uint8_t>, std::vector<uint8_t>>>(
        widen(in.raw(), in.numel(), in.dtype()), std::vector<uint8_t>(static_cast<size_t>(n) * 4));
    send = bufs->first.data();
    recv = bufs->second.data();
    work->keep = bufs;
    work->finish = [bufs, out](const std::vector<MPI_Status>&) mutable {
      narrow(bufs->second.data(), out.numel(), out.dtype(), out.raw());
    };
  } else {
    work->keep = std::make_shared<std::pair<Tensor, Tensor>>(in, out);
  }
  CHECK_MPI_CTX(MPI_Ireduce_scatter_block(send, recv, n, accum_type(in.dtype()), mpi_op(op), state_->comm,
                                          work->add_request()),
                where);
  return work;
}

std::unique_ptr<Work> MpiCommunicator::broadcast_async(Tensor& t, int root) {
  check_usable(*state_, "broadcast");
  check_host_tensor(t, "broadcast", *this, "MPI");
  check_rank_arg(root, "root", "broadcast", *this);
  if (t.nbytes() == 0) return std::make_unique<DoneWork>();
  const std::string where = state_->where("broadcast");
  const ByteSpan span = byte_span(t.nbytes(), where);
  const std::string waiting = state_->rank == root ? state_->group() : cat("root ", state_->peer(root));
  auto work = std::make_unique<MpiWork>(state_, describe("broadcast", t), waiting, false);
  work->keep = t.keepalive();
  CHECK_MPI_CTX(MPI_Ibcast(t.raw(), span.count, span.type, root, state_->comm, work->add_request()), where);
  return work;
}

std::unique_ptr<Work> MpiCommunicator::send_async(const Tensor& t, int peer, int tag) {
  check_usable(*state_, "send");
  check_host_tensor(t, "send", *this, "MPI");
  check_rank_arg(peer, "peer", "send", *this);
  check_tag(tag, "send", *this);
  const std::string where = state_->where("send");
  const ByteSpan span = byte_span(t.nbytes(), where);
  auto work = std::make_unique<MpiWork>(state_, cat(describe("send", t), " tag ", tag), state_->peer(peer), false);
  work->keep = t.keepalive();
  CHECK_MPI_CTX(MPI_Isend(t.raw(), span.count, span.type, peer, tag, state_->comm, work->add_request()), where);
  return work;
}

std::unique_ptr<Work> MpiCommunicator::recv_async(Tensor& t, int peer, int tag) {
  check_usable(*state_, "recv");
  check_host_tensor(t, "recv", *this, "MPI");
  check_rank_arg(peer, "peer", "recv", *this);
  check_tag(tag, "recv", *this);
  const std::string where = state_->where("recv");
  const ByteSpan span = byte_span(t.nbytes(), where);
  auto work = std::make_unique<MpiWork>(state_, cat(describe("recv", t), " tag ", tag), state_->peer(peer), true);
  work->keep = t.keepalive();
  work->finish = [span, where, peer](const std::vector<MPI_Status>& statuses) {
    int got = 0;
    MPI_Get_count(&statuses.at(0), span.type, &got);
    STRATA_CHECK_KIND(ErrorKind::kComm, got == span.count, where, ": peer ", peer, " sent ", got,
                      " units but the tensor holds ", span.count, "; sender and receiver disagree on the shape");
  };
  CHECK_MPI_CTX(MPI_Irecv(t.raw(), span.count, span.type, peer, tag, state_->comm, work->add_request()), where);
  return work;
}

std::unique_ptr<Work> MpiCommunicator::barrier_async() {
  check_usable(*state_, "barrier");
  auto work = std::make_unique<MpiWork>(state_, "barrier", state_->group(), false);
  CHECK_MPI_CTX(MPI_Ibarrier(state_->comm, work->add_request()), state_->where("barrier"));
  return work;
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& name) {
  check_usable(*state_, "split");
  // MPI_Comm_split blocks without a deadline; gathering (color, key) first proves every member is
  // here, so a missing rank shows up as a timeout naming this group instead of a hang.
  Tensor mine = Tensor::empty({2}, DType::kI32);
  mine.data<int32_t>()[0] = color;
  mine.data<int32_t>()[1] = key;
  Tensor all = Tensor::empty({2 * static_cast<int64_t>(state_->size)}, DType::kI32);
  all_gather(mine, all);
  MPI_Comm comm = MPI_COMM_NULL;
  CHECK_MPI_CTX(MPI_Comm_split(state_->comm, color < 0 ? MPI_UNDEFINED : color, key, &comm),
                state_->where("split"));
  if (comm == MPI_COMM_NULL) return nullptr;
  return std::make_unique<MpiCommunicator>(make_state(comm, state_->runtime, state_->config, name));
}

}  // namespace strata::comm
