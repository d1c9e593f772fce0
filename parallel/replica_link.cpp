// parallel/replica_link.cpp: message shapes of the replica link. Variable-size messages send their
// length first; activations and logits have shapes both sides already know.
#include "parallel/replica_link.h"

#include <algorithm>

#include "runtime/error.h"

namespace strata::parallel {

ReplicaLink::ReplicaLink(comm::Communicator& replica, int sampler, int prev_stage, int next_stage)
    : replica_(replica), sampler_(sampler), prev_(prev_stage), next_(next_stage) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, sampler >= 0 && sampler < replica.size(), "sampler rank ", sampler,
                    " outside the replica of ", replica.size());
}

void ReplicaLink::broadcast_step(std::vector<int32_t>& message) {
  int32_t size = static_cast<int32_t>(message.size());
  Tensor count = Tensor::view(&size, {1}, DType::kI32);
  replica_.broadcast(count, 0);
  message.resize(static_cast<size_t>(size));
  if (size == 0) return;
  Tensor body = Tensor::view(message.data(), {size}, DType::kI32);
  replica_.broadcast(body, 0);
}

void ReplicaLink::recv_hidden(Tensor& hidden, int tag) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, prev_ >= 0, "the first stage has no previous stage to receive from");
  replica_.recv(hidden, prev_, tag % comm::kMaxTag);
}

void ReplicaLink::send_hidden(const Tensor& hidden, int tag) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, next_ >= 0, "the last stage has no next stage to send to");
  replica_.send(hidden, next_, tag % comm::kMaxTag);
}

void ReplicaLink::broadcast_tokens(std::vector<int32_t>& tokens) {
  if (tokens.empty()) return;
  Tensor t = Tensor::view(tokens.data(), {static_cast<int64_t>(tokens.size())}, DType::kI32);
  replica_.broadcast(t, sampler_);
}

void ReplicaLink::broadcast_logits(Tensor& logits) {
  if (logits.numel() == 0) return;
  replica_.broadcast(logits, sampler_);
}

// Two all-gathers (lengths, then the words padded to the longest): rare and small, so the simplest
// collective every transport has.
std::vector<std::vector<int32_t>> ReplicaLink::gather_to_driver(const std::vector<int32_t>& words) {
  const int n = replica_.size();
  int32_t mine = static_cast<int32_t>(words.size());
  std::vector<int32_t> lengths(static_cast<size_t>(n));
  Tensor len_in = Tensor::view(&mine, {1}, DType::kI32);
  Tensor len_out = Tensor::view(lengths.data(), {n}, DType::kI32);
  replica_.all_gather(len_in, len_out);
  int32_t longest = 0;
  for (int32_t l : lengths) {
    STRATA_CHECK_KIND(ErrorKind::kComm, l >= 0, "a rank of the replica sent a negative telemetry length ", l);
    longest = std::max(longest, l);
  }
  std::vector<std::vector<int32_t>> out;
  if (longest == 0) {
    if (is_driver()) out.resize(static_cast<size_t>(n));
    return out;
  }
  std::vector<int32_t> padded(words);
  padded.resize(static_cast<size_t>(longest), 0);
  std::vector<int32_t> all(static_cast<size_t>(n) * static_cast<size_t>(longest));
  Tensor in = Tensor::view(padded.data(), {longest}, DType::kI32);
  Tensor gathered = Tensor::view(all.data(), {static_cast<int64_t>(all.size())}, DType::kI32);
  replica_.all_gather(in, gathered);
  if (!is_driver()) return out;
  for (int r = 0; r < n; ++r) {
    const int32_t* row = all.data() + static_cast<size_t>(r) * static_cast<size_t>(longest);
    out.emplace_back(row, row + lengths[static_cast<size_t>(r)]);
  }
  return out;
}

}  // namespace strata::parallel
