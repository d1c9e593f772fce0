// tests/e2e/k8s_manifests_test.cpp: the structure of examples/k8s/*.yaml, parsed with yaml-cpp (no
// cluster, no python): the kinds, the MPIJob's launcher and worker replicas and command, GPU limits,
// the serving Deployment's /health readiness probe and Prometheus scraping of /metrics.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "test_util.h"

namespace strata {
namespace {

std::vector<YAML::Node> documents_of_kind(const std::string& kind, std::vector<std::string>* files = nullptr) {
  std::vector<YAML::Node> out;
  for (const auto& e : std::filesystem::directory_iterator(test::source_dir() + "/examples/k8s")) {
    if (e.path().extension() != ".yaml") continue;
    for (const YAML::Node& doc : YAML::LoadAllFromFile(e.path().string())) {
      if (!doc || doc.IsNull()) continue;
      EXPECT_TRUE(doc["apiVersion"] && doc["kind"] && doc["metadata"]["name"]) << e.path();
      if (doc["kind"].as<std::string>() != kind) continue;
      out.push_back(doc);
      if (files != nullptr) files->push_back(e.path().string());
    }
  }
  return out;
}

std::string joined(const YAML::Node& seq) {
  std::string s;
  for (const auto& x : seq) s += x.as<std::string>() + " ";
  return s;
}

TEST(K8sManifests, MpiJobHasOneLauncherGpuWorkersAndAnMpirunCommand) {
  const auto jobs = documents_of_kind("MPIJob");
  ASSERT_FALSE(jobs.empty());
  for (const YAML::Node& job : jobs) {
    EXPECT_EQ(job["apiVersion"].as<std::string>(), "kubeflow.org/v2beta1");
    const YAML::Node specs = job["spec"]["mpiReplicaSpecs"];
    ASSERT_TRUE(specs["Launcher"] && specs["Worker"]);
    EXPECT_EQ(specs["Launcher"]["replicas"].as<int>(), 1);
    const int workers = specs["Worker"]["replicas"].as<int>();
    EXPECT_GE(workers, 2);  // multi-node
    const int slots = job["spec"]["slotsPerWorker"].as<int>();
    const YAML::Node worker = specs["Worker"]["template"]["spec"]["containers"][0];
    EXPECT_EQ(worker["resources"]["limits"]["nvidia.com/gpu"].as<int>(), slots);  // one rank per GPU
    const YAML::Node launcher = specs["Launcher"]["template"]["spec"]["containers"][0];
    const std::string command = joined(launcher["command"]);
    EXPECT_EQ(launcher["command"][0].as<std::string>(), "mpirun");
    EXPECT_NE(command.find("-np " + std::to_string(workers * slots) + " "), std::string::npos) << command;
    EXPECT_NE(command.find("strata generate --plan "), std::string::npos) << command;
    EXPECT_NE(command.find("--device cuda"), std::string::npos) << command;
    // The plan it names exists in the repository (the image copies configs/ to /opt/strata/configs).
    const auto plan = command.find("/opt/strata/configs/");
    ASSERT_NE(plan, std::string::npos);
    const std::string name = command.substr(plan + 20, command.find(' ', plan) - plan - 20);
    EXPECT_TRUE(std::filesystem::exists(test::source_dir() + "/configs/" + name)) << name;
  }
}

// True when some Service selects the pods of `pod` (a pod template) on `port`.
bool service_selects(const std::vector<YAML::Node>& services, const YAML::Node& pod, int port) {
  for (const YAML::Node& s : services) {
    bool match = true;
    for (const auto& kv : s["spec"]["selector"])
      match &= pod["metadata"]["labels"][kv.first.as<std::string>()].as<std::string>("") == kv.second.as<std::string>();
    if (match && s["spec"]["ports"][0]["targetPort"].as<int>() == port) return true;
  }
  return false;
}

bool runs(const YAML::Node& workload, const std::string& subcommand) {
  return joined(workload["spec"]["template"]["spec"]["containers"][0]["command"]).find("strata " + subcommand + " ") !=
         std::string::npos;
}

TEST(K8sManifests, ServingDeploymentIsProbedOnHealthAndScrapedOnMetrics) {
  const auto deployments = documents_of_kind("Deployment");
  ASSERT_FALSE(deployments.empty());
  const auto services = documents_of_kind("Service");
  for (const YAML::Node& d : deployments) {
    if (runs(d, "router")) continue;  // below
    const YAML::Node pod = d["spec"]["template"];
    const YAML::Node c = pod["spec"]["containers"][0];
    EXPECT_EQ(c["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/health");
    const int port = c["ports"][0]["containerPort"].as<int>();
    EXPECT_EQ(c["readinessProbe"]["httpGet"]["port"].as<int>(), port);
    const YAML::Node ann = pod["metadata"]["annotations"];
    EXPECT_EQ(ann["prometheus.io/scrape"].as<std::string>(), "true");
    EXPECT_EQ(ann["prometheus.io/path"].as<std::string>(), "/metrics");
    EXPECT_EQ(ann["prometheus.io/port"].as<std::string>(), std::to_string(port));
    EXPECT_GE(c["resources"]["limits"]["nvidia.com/gpu"].as<int>(), 1);
    const std::string command = joined(c["command"]);
    EXPECT_NE(command.find("strata serve "), std::string::npos) << command;
    EXPECT_NE(command.find("--port " + std::to_string(port)), std::string::npos) << command;
    // SIGTERM reaches mpirun (PID 1): the ranks' drain must end before Open MPI's SIGKILL, and that
    // before the pod's grace runs out.
    if (command.rfind("mpirun ", 0) == 0) {
      auto flag_value = [&](const std::string& flag) {
        const auto at = command.find(flag + " ");
        return at == std::string::npos ? -1 : std::atoi(command.c_str() + at + flag.size() + 1);
      };
      const int drain = flag_value("--drain-timeout"), sigkill = flag_value("odls_base_sigkill_timeout");
      EXPECT_GT(drain, 0) << command;
      EXPECT_GT(sigkill, drain) << command;
      EXPECT_GT(pod["spec"]["terminationGracePeriodSeconds"].as<int>(), sigkill) << command;
    }
    // The selector matches the pod labels, and a Service selects the same pods.
    for (const auto& kv : d["spec"]["selector"]["matchLabels"])
      EXPECT_EQ(pod["metadata"]["labels"][kv.first.as<std::string>()].as<std::string>(), kv.second.as<std::string>());
    EXPECT_TRUE(service_selects(services, pod, port)) << "no Service selects " << d["metadata"]["name"].as<std::string>();
  }
}

// The router's --replica URLs name pods of a StatefulSet of `strata serve` replicas through its headless
// Service (POD.SERVICE:PORT), one URL per replica, and the router is probed and served like a replica.
TEST(K8sManifests, RouterNamesEveryReplicaOfItsStatefulSet) {
  const auto services = documents_of_kind("Service");
  const auto sets = documents_of_kind("StatefulSet");
  int routers = 0;
  for (const YAML::Node& d : documents_of_kind("Deployment")) {
    if (!runs(d, "router")) continue;
    ++routers;
    const YAML::Node pod = d["spec"]["template"];
    const YAML::Node c = pod["spec"]["containers"][0];
    const int port = c["ports"][0]["containerPort"].as<int>();
    EXPECT_EQ(c["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/health");
    EXPECT_EQ(c["readinessProbe"]["httpGet"]["port"].as<int>(), port);
    EXPECT_TRUE(service_selects(services, pod, port));
    std::vector<std::string> urls;
    const YAML::Node command = c["command"];
    for (size_t i = 0; i + 1 < command.size(); ++i)
      if (command[i].as<std::string>() == "--replica") urls.push_back(command[i + 1].as<std::string>());
    ASSERT_FALSE(urls.empty());
    bool matched = false;
    for (const YAML::Node& set : sets) {
      if (!runs(set, "serve")) continue;
      const std::string name = set["metadata"]["name"].as<std::string>();
      const std::string service = set["spec"]["serviceName"].as<std::string>();
      const int replicas = set["spec"]["replicas"].as<int>();
      const int replica_port = set["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"].as<int>();
      std::vector<std::string> want;
      for (int i = 0; i < replicas; ++i) want.push_back(cat("http://", name, "-", i, ".", service, ":", replica_port));
      if (want != urls) continue;
      matched = true;
      bool headless = false;
      for (const YAML::Node& s : services)
        headless |= s["metadata"]["name"].as<std::string>() == service && s["spec"]["clusterIP"].as<std::string>("") == "None";
      EXPECT_TRUE(headless) << "the StatefulSet's serviceName " << service << " is not a headless Service";
      EXPECT_EQ(set["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"].as<std::string>(),
                "/health");
    }
    EXPECT_TRUE(matched) << "the router's replicas are not the pods of one StatefulSet of strata serve";
  }
  EXPECT_GE(routers, 1);
}

}  // namespace
}  // namespace strata
