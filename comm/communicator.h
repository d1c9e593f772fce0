// comm/communicator.h: the interface every transport implements (MPI and TCP host tensors here,
// NCCL device tensors in comm/nccl/). Device-agnostic: tensors carry their Device and a backend
// rejects the ones it cannot move. Never include mpi.h/nccl.h here.
#pragma once
#include <memory>
#include <string>

#include "runtime/tensor.h"

namespace strata::comm {

enum class ReduceOp { kSum, kMax };
const char* reduce_op_name(ReduceOp op);

// Which transport make_world_communicator builds; kAuto follows how the job was launched.
enum class Backend { kAuto, kMpi, kTcp, kSelf };

struct CommConfig {
  // Every wait gives up after this long and throws Error(kTimeout) naming the op, group and peers,
  // so a dead or hung rank never hangs the others forever. Launcher: STRATA_COMM_TIMEOUT.
  double timeout_s = 300.0;
  Backend backend = Backend::kAuto;
  // Ask MPI for MPI_THREAD_MULTIPLE (falls back to FUNNELED: then only the thread that made the world
  // communicator may call comm). Off: FUNNELED, which avoids Open MPI's locking cost.
  bool mpi_thread_multiple = true;
};

// Handle of an in-flight operation. wait() blocks until done (or the communicator's timeout: throws
// Error(kTimeout)); test() polls. Both throw strata::Error on failure. Tensors passed to the op must
// stay alive until the work completes.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  virtual bool test() = 0;
  // Seconds from issue to completion, known once test() returned true or wait() returned, where the
  // backend records when the op itself finished (TCP: its worker thread; MPI: the call that saw it
  // done, as MPI progresses only inside its calls). -1 when unknown: callers time it themselves.
  virtual double elapsed_seconds() const { return -1; }
};

// A group of ranks. Collectives must be called by every member in the same order. Reductions take
// f32, f16, bf16 and i32 (f16/bf16 are summed in f32 and rounded once); data movement takes any dtype.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Human name used in errors and logs, e.g. "tp[dp0 pp1]".
  virtual const std::string& name() const = 0;

  // In place over the group.
  virtual std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) = 0;
  // out = concatenation of every rank's `in` in rank order; out.nbytes() == size() * in.nbytes().
  virtual std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) = 0;
  // out = reduction over ranks of chunk rank() of `in`; in.numel() == size() * out.numel().
  virtual std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) = 0;
  virtual std::unique_ptr<Work> broadcast_async(Tensor& t, int root) = 0;
  // Point to point; tag in [0, 32767]. A recv matches the send of the same peer and tag, in order.
  virtual std::unique_ptr<Work> send_async(const Tensor& t, int peer, int tag) = 0;
  virtual std::unique_ptr<Work> recv_async(Tensor& t, int peer, int tag) = 0;
  virtual std::unique_ptr<Work> barrier_async() = 0;
  // Collective over this group: ranks with the same color form a new group ordered by (key, rank).
  // A negative color returns nullptr (this rank joins no group).
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  // Seconds the device spent in this group's operations, timed on the GPU, for transports whose
  // waits are stream-ordered (the host never sees them finish); -1 where the host times them.
  virtual double device_busy_seconds() const { return -1; }
  // Collective::fence(): deadline on stream-ordered work the host issued without handles.
  virtual void fence() {}
  virtual bool recordable() const { return false; }  // operations can be captured in a CUDA graph

  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::kSum) { all_reduce_async(t, op)->wait(); }
  void all_gather(const Tensor& in, Tensor& out) { all_gather_async(in, out)->wait(); }
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::kSum) {
    reduce_scatter_async(in, out, op)->wait();
  }
  void broadcast(Tensor& t, int root) { broadcast_async(t, root)->wait(); }
  void send(const Tensor& t, int peer, int tag = 0) { send_async(t, peer, tag)->wait(); }
  void recv(Tensor& t, int peer, int tag = 0) { recv_async(t, peer, tag)->wait(); }
  void barrier() { barrier_async()->wait(); }
};

// A Work that finished when it was made (the group of one, empty tensors).
class DoneWork final : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

// The group of one: every operation is the identity or a copy. Used for single-process runs without
// mpirun, where initialising MPI as a singleton would need an orted that containers often lack.
std::unique_ptr<Communicator> make_self_communicator(const CommConfig& config, const std::string& name = "world");

constexpr int kMaxTag = 32767;  // the largest tag MPI guarantees

}  // namespace strata::comm
