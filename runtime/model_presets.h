// runtime/model_presets.h: named model shapes, for make-model (random weights) and for checking plans
// of real topologies without the weights at hand.
#pragma once
#include <string>
#include <vector>

#include "runtime/model_config.h"

namespace strata {

// tiny (tests), small (~100M, the demo and CPU benchmark), 7b-shape (Llama-2-7B), 13b-shape,
// 70b-shape (Llama-2-70B), llama3-8b-shape, llama3-70b-shape, qwen2-tiny (q/k/v biases).
ModelConfig model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

}  // namespace strata
