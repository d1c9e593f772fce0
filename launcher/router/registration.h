// launcher/router/registration.h: a `strata serve` replica announcing itself to a `strata router`
// (`--register-with`): POST /router/replicas with its own URL, repeated as a heartbeat so that a router
// that restarts learns its replicas again. Whether the replica takes traffic is still the router's
// health check's call.
#pragma once
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "launcher/router/upstream.h"

namespace strata::launcher::router {

struct RegistrationOptions {
  Endpoint router;
  std::string self_url;  // what the router calls: http://HOST:PORT
  std::string version;   // model version for --route splits ("" for none)
  std::vector<std::pair<std::string, std::string>> headers;  // the router's API key
  double interval_s = 5.0;
};

class Registration {
 public:
  explicit Registration(RegistrationOptions options);  // starts the heartbeat thread
  ~Registration();

 private:
  void loop();
  RegistrationOptions options_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace strata::launcher::router
