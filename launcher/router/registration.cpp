// launcher/router/registration.cpp
#include "launcher/router/registration.h"

#include <boost/json.hpp>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher::router {

Registration::Registration(RegistrationOptions options) : options_(std::move(options)) {
  thread_ = std::thread([this] { loop(); });
}

Registration::~Registration() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Registration::loop() {
  UpstreamRequest request;
  request.method = "POST";
  request.target = "/router/replicas";
  request.content_type = "application/json";
  request.headers = options_.headers;
  request.body = boost::json::serialize(boost::json::object{{"url", options_.self_url}, {"version", options_.version}});
  std::string last_problem = "(none yet)";  // logged when it changes, not every heartbeat
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    UpstreamCall call;
    int status = 0;
    std::string body;
    const UpstreamResult r = call.run(
        options_.router, request, UpstreamTimeouts{2.0, 5.0, 5.0},
        [&](int s, const std::string&) { return (status = s), true; },
        [&](std::string_view piece) { return body.append(piece), true; });
    std::string problem;
    if (!r.ok()) problem = r.error;
    else if (status != 200 && status != 201) problem = cat("status ", status, ": ", body.substr(0, 300));
    if (problem != last_problem) {
      if (problem.empty()) LOG_INFO("registered with the router ", options_.router.url(), " as ", options_.self_url);
      else LOG_WARN("could not register with the router ", options_.router.url(), ": ", problem, " (retrying every ",
                    options_.interval_s, " s)");
      last_problem = problem;
    }
    lock.lock();
    wake_.wait_for(lock, std::chrono::duration<double>(options_.interval_s), [&] { return stop_; });
  }
}

}  // namespace strata::launcher::router
