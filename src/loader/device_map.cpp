// device_map planning: modules to devices under budgets, from the headers alone.
#include "safetensors/device_map.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <memory>

#include "error/messages.hpp"
#include "loader/parts.hpp"
#include "safetensors/cast.hpp"
#include "safetensors/error.hpp"

namespace safetensors {
namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Natural order: runs of digits compare as numbers (layers.2 before layers.10).
bool natural_less(std::string_view a, std::string_view b) {
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (is_digit(a[i]) && is_digit(b[j])) {
      std::size_t ie = i, je = j;
      while (ie < a.size() && is_digit(a[ie])) ++ie;
      while (je < b.size() && is_digit(b[je])) ++je;
      std::string_view x = a.substr(i, ie - i), y = b.substr(j, je - j);
      while (x.size() > 1 && x[0] == '0') x.remove_prefix(1);
      while (y.size() > 1 && y[0] == '0') y.remove_prefix(1);
      if (x.size() != y.size()) return x.size() < y.size();
      if (x != y) return x < y;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

struct Node {
  std::string name;
  std::uint64_t bytes = 0;
  bool tensor = false;
  std::vector<Node*> children;
};

// 0: GPUs by index ("cuda:N", "N"), 1: other accelerators, 2: cpu, 3: disk.
std::pair<int, long long> device_rank(std::string_view device) {
  if (device == "cpu") return {2, 0};
  if (device == "disk") return {3, 0};
  const std::size_t colon = device.find(':');
  const std::string_view kind = colon == std::string_view::npos ? device : device.substr(0, colon);
  const std::string_view index = colon == std::string_view::npos ? "" : device.substr(colon + 1);
  const auto number = [](std::string_view text) {
    long long n = 0;
    for (char c : text) n = n * 10 + (c - '0');
    return n;
  };
  const auto all_digits = [](std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), is_digit);
  };
  if (all_digits(device)) return {0, number(device)};
  if (kind == "cuda" && all_digits(index)) return {0, number(index)};
  return {1, all_digits(index) ? number(index) : 0};
}

}  // namespace

std::string DeviceMap::device_of(std::string_view tensor_name) const {
  std::string_view name = tensor_name;
  for (;;) {
    for (const DeviceAssignment& a : modules) {
      if (a.module == name) return a.device;
    }
    const std::size_t dot = name.rfind('.');
    if (dot == std::string_view::npos) return {};
    name = name.substr(0, dot);
  }
}

DeviceMap plan_device_map(const Checkpoint& checkpoint, const DeviceMapOptions& options) {
  const std::string where =
      checkpoint.index_path().empty()
          ? (checkpoint.files().empty() ? "checkpoint" : checkpoint.files().front().name())
          : checkpoint.index_path().string();
  std::vector<DeviceBudget> devices = options.max_memory;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    for (std::size_t k = 0; k < i; ++k) {
      if (devices[k].device == devices[i].device) {
        detail::fail(ErrorCode::invalid_argument, where,
                     "device " + detail::quote(devices[i].device) + " has two budgets");
      }
    }
  }
  std::stable_sort(devices.begin(), devices.end(),
                   [](const DeviceBudget& a, const DeviceBudget& b) {
                     return device_rank(a.device) < device_rank(b.device);
                   });
  if (devices.empty() || devices.back().device != "disk") devices.push_back({"disk", 0});

  // The module tree, children in natural order of their first tensor.
  std::vector<const CheckpointTensor*> tensors;
  for (const CheckpointTensor& t : checkpoint.tensors()) tensors.push_back(&t);
  std::stable_sort(tensors.begin(), tensors.end(), [](const auto* a, const auto* b) {
    return natural_less(a->info->name, b->info->name);
  });
  std::deque<Node> storage;
  std::map<std::string, Node*, std::less<>> nodes;
  Node& root = storage.emplace_back();
  for (const CheckpointTensor* t : tensors) {
    const TensorInfo& info = *t->info;
    const Dtype to =
        options.dtype && can_cast(info.dtype, *options.dtype) ? *options.dtype : info.dtype;
    std::uint64_t bytes = info.byte_count();
    if (to != info.dtype) bytes = bytes / (dtype_bits(info.dtype) / 8) * (dtype_bits(to) / 8);
    Node* parent = &root;
    std::size_t at = 0;
    for (;;) {
      const std::size_t dot = info.name.find('.', at);
      const std::string name = info.name.substr(0, dot);
      Node*& node = nodes[name];
      if (!node) {
        node = &storage.emplace_back();
        node->name = name;
        parent->children.push_back(node);
      }
      node->bytes += bytes;
      if (dot == std::string::npos) {
        node->tensor = true;
        break;
      }
      parent = node;
      at = dot + 1;
    }
  }
  const auto unsplittable = [&](const Node& node) {
    const std::string generic = detail::generic_name(node.name);
    return std::any_of(options.no_split.begin(), options.no_split.end(),
                       [&](const std::string& p) { return p == node.name || p == generic; });
  };

  DeviceMap map;
  for (const DeviceBudget& d : devices) map.used.push_back({d.device, 0});
  std::deque<Node*> queue(root.children.begin(), root.children.end());
  std::size_t device = 0;
  while (!queue.empty()) {
    Node* node = queue.front();
    queue.pop_front();
    const bool last = device + 1 == devices.size();
    if (last || map.used[device].bytes + node->bytes <= devices[device].bytes) {
      map.modules.push_back({node->name, devices[device].device, node->bytes});
      map.used[device].bytes += node->bytes;
      continue;
    }
    if (!node->tensor && !node->children.empty() && !unsplittable(*node)) {
      queue.insert(queue.begin(), node->children.begin(), node->children.end());
      continue;
    }
    queue.push_front(node);
    ++device;
  }
  return map;
}

}  // namespace safetensors
