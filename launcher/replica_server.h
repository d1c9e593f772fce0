// launcher/replica_server.h: the driver of a data-parallel replica other than replica 0 under
// `strata serve`: it takes requests, cancellations and the shutdown from the router on world rank 0
// over a DpLink, runs its Engine's step loop (the replica's other ranks follow as usual), and reports
// every step's token events and stats back. All of it on the driver's main thread, between steps.
#pragma once
#include "parallel/dp_link.h"
#include "runtime/engine.h"

namespace strata::launcher {

// Returns once the router's shutdown has ended the Engine and the bye is sent. Throws on an engine or
// link failure; report_failure() then tells the router.
void serve_replica(Engine& engine, parallel::DpLink& router, int idle_wait_ms = 20);

// Best effort, never throws: sends the router `error` so it can answer the clients, then waits up
// to `grace_s` for the router to end the job (it does so after answering).
void report_failure(parallel::DpLink& router, const std::string& error, double grace_s);

}  // namespace strata::launcher
