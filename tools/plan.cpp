// `safetensors plan`: a device_map for a checkpoint under per-device memory budgets.
#include <fmt/core.h>

#include <memory>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "safetensors/safetensors.hpp"

namespace safetensors::cli {
namespace {

struct PlanCommandOptions {
  std::string input;
  std::string max_memory;
  std::vector<std::string> no_split;
  std::string dtype;
  bool json = false;
};

// "cuda:0=20GiB,cpu=60GiB" -> budgets.
std::vector<DeviceBudget> parse_budgets(const std::string& text) {
  std::vector<DeviceBudget> out;
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, comma - at);
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw Error(ErrorCode::invalid_argument,
                  "--max-memory: `" + item + "` is not DEVICE=SIZE (e.g. cuda:0=20GiB)");
    }
    out.push_back({item.substr(0, eq), parse_size(item.substr(eq + 1))});
    at = comma + 1;
  }
  return out;
}

int run_plan(const PlanCommandOptions& options) {
  DeviceMapOptions map_options;
  map_options.max_memory = parse_budgets(options.max_memory);
  map_options.no_split = options.no_split;
  if (!options.dtype.empty()) map_options.dtype = parse_cast_dtype(options.dtype);
  const Checkpoint checkpoint = Checkpoint::open(options.input);
  const DeviceMap map = plan_device_map(checkpoint, map_options);
  if (options.json) {
    std::vector<std::string> modules, devices;
    for (const DeviceAssignment& a : map.modules) {
      modules.push_back(JsonObject()
                            .text("module", a.module)
                            .text("device", a.device)
                            .number("bytes", a.bytes)
                            .str());
    }
    for (const DeviceBudget& d : map.used) {
      devices.push_back(JsonObject().text("device", d.device).number("bytes", d.bytes).str());
    }
    fmt::print("{}\n", JsonObject()
                           .raw("device_map", json_array(modules))
                           .raw("devices", json_array(devices))
                           .str());
    return 0;
  }
  for (const DeviceAssignment& a : map.modules) {
    fmt::print("{} -> {} ({})\n", printable(a.module), printable(a.device), human_size(a.bytes));
  }
  for (const DeviceBudget& d : map.used) {
    fmt::print("{}: {}\n", printable(d.device), human_size(d.bytes));
  }
  return 0;
}

}  // namespace

Command add_plan(CLI::App& parent) {
  auto options = std::make_shared<PlanCommandOptions>();
  CLI::App* app = parent.add_subcommand(
      "plan",
      "Plan a device_map under per-device memory budgets\n\n"
      "Assigns the checkpoint's modules (tensor names up to a dot) to devices in order, as "
      "accelerate's infer_auto_device_map does: GPUs by index, then other accelerators, then "
      "cpu, then disk (unbounded). A module goes whole to the current device when it fits in "
      "what is left of its budget, else it is split into its submodules or the next device is "
      "taken. Only the headers are read. Prints each module's device and the bytes per device.");
  app->add_option("PATH", options->input, "A file, checkpoint directory or index")->required();
  app->add_option("--max-memory", options->max_memory,
                  "Budgets as DEVICE=SIZE,...: cuda:0=20GiB,cpu=60GiB")
      ->required();
  app->add_option("--no-split", options->no_split,
                  "Modules never split across devices (layer numbers as *): model.layers.*");
  app->add_option("--dtype", options->dtype,
                  "Count floating-point tensors at this dtype: f32, f16 or bf16");
  app->add_flag("--json", options->json, "Print {device_map: [{module, device, bytes}], devices}");
  return {app, [options] { return run_plan(*options); }};
}

}  // namespace safetensors::cli
