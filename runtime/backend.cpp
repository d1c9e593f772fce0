// runtime/backend.cpp: the default (host) implementation of Backend::sample.
#include "runtime/backend.h"

#include "runtime/error.h"
#include "runtime/sampler.h"

namespace strata {

void Backend::sample(const Tensor& logits, const SampleRow* rows, int32_t* tokens, float* logprobs) {
  STRATA_CHECK(logits.device() == Device::kCpu && logits.dtype() == DType::kF32 && logits.rank() == 2,
               "sample: logits must be a host f32 [rows, vocab] tensor on ", name(), ", got ",
               shape_str(logits.shape()), " ", dtype_name(logits.dtype()));
  const int64_t R = logits.dim(0), V = logits.dim(1);
  for (int64_t r = 0; r < R; ++r)
    STRATA_CHECK(rows[r].params.repetition_penalty == 1.f, "sample: the repetition penalty needs the history; use Sampler");
#pragma omp parallel for schedule(dynamic) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    const std::span<const float> row(logits.data<float>() + r * V, static_cast<size_t>(V));
    const int32_t token = Sampler::sample(row, rows[r].params, {}, rows[r].step);
    tokens[r] = token;
    logprobs[r] = static_cast<float>(Sampler::log_prob(row, token));
  }
}

std::unique_ptr<OpGraph> Backend::capture(const std::function<void()>&) {
  STRATA_THROW(ErrorKind::kInternal, name(), " cannot capture op graphs (check supports_capture())");
}

}  // namespace strata
