// comm/tcp/tcp_communicator.h: a Communicator over plain TCP for RANK/WORLD_SIZE launches on clusters
// without MPI. Simple algorithms (root reduce + broadcast) over a full mesh: for control traffic and
// CPU runs, not bandwidth. Same timeout semantics as MPI.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "comm/communicator.h"

namespace strata::comm {

class TcpStore;

struct TcpOptions {
  std::string master_addr;  // rank 0 hosts the store here
  uint16_t master_port = 0;
  int rank = 0;
  int size = 1;
  std::string secret;  // the job's store secret (STRATA_STORE_SECRET), the same on every rank
};

// Rank 0 hosts the store; everyone meets there, then connects the mesh; once every rank is connected
// the store closes. Blocks up to timeout_s.
std::unique_ptr<Communicator> make_tcp_world(const CommConfig& config, const TcpOptions& options);
// Same over a store the caller made (tests host it on port 0 and pass its port on); the communicator
// and its splits keep the store alive.
std::unique_ptr<Communicator> make_tcp_world(const CommConfig& config, std::shared_ptr<TcpStore> store, int rank,
                                             int size);

}  // namespace strata::comm
