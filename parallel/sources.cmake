# parallel/ sources, one a line, sorted (CMakeLists.txt: files under cuda/ or nccl/ build only with CUDA).
# A new source file goes here; configuring fails while a file on disk is missing from the list.
set(STRATA_PARALLEL_SOURCES
  byte_size.cpp
  dp_link.cpp
  dp_wire.cpp
  partition.cpp
  perf_model.cpp
  plan.cpp
  plan_check.cpp
  plan_parser.cpp
  plan_report.cpp
  rank_layout.cpp
  replica_link.cpp
)
