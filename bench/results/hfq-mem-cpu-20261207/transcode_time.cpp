// bench/results/hfq-mem-cpu-20261207/transcode_time.cpp: time to transcode every quantized layer of a Hugging
// Face checkpoint (or the first N) with T threads, each held so it builds once. Not built by CMake; see README.
// usage: transcode_time MODEL_DIR THREADS [N]
#include <ctime>
#include <sys/resource.h>
#include <cstdio>
#include <vector>
#include <cstdlib>
#include "runtime/formats/checkpoint.h"
using namespace strata;
static double cpu() { timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static double wall() { timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char** argv) {
  const int threads = std::atoi(argv[2]);
  const int layers = argc > 3 ? std::atoi(argv[3]) : 1 << 30;
  auto ck = open_checkpoint(argv[1], CheckpointOptions{threads});
  std::vector<Tensor> held;
  const double c0 = cpu(), w0 = wall();
  int n = 0;
  for (const TensorEntry& e : ck->entries())
    if (e.built_on_access && n++ < layers) held.push_back(ck->tensor(e.name));
  rusage ru; getrusage(RUSAGE_SELF, &ru);
  std::printf("user %.2f sys %.2f (whole process) ", ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6);
  std::printf("threads %d: %d tensors, cpu %.2f s, wall %.2f s\n", threads, n < layers ? n : layers, cpu() - c0, wall() - w0);
}
