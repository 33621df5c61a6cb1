// Tensor-parallel plans: transformers' tp_plan styles turned into per-rank slices
// (docs/PARALLEL.md states the semantics this file follows).
#include "safetensors/parallel.hpp"

#include <algorithm>
#include <array>
#include <optional>

#include "error/messages.hpp"
#include "loader/parts.hpp"
#include "safetensors/error.hpp"

namespace safetensors {
namespace {

std::string origin(const Checkpoint& checkpoint) {
  if (!checkpoint.index_path().empty()) return checkpoint.index_path().string();
  if (!checkpoint.files().empty()) return checkpoint.files().front().name();
  return "checkpoint";
}

std::string_view parent(std::string_view name) {
  const std::size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? std::string_view() : name.substr(0, dot);
}

std::string_view last_component(std::string_view name) {
  const std::size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

// How a style treats one parameter.
struct Placement {
  enum class Kind : std::uint8_t { replicate, shard, strided };
  Kind kind = Kind::replicate;
  std::int64_t dim = 0;  // may be negative until checked against the tensor
  std::uint64_t split_factor = 1;
};

constexpr std::array colwise_styles{"colwise", "colwise_rep", "colwise_gather_output"};
constexpr std::array rowwise_styles{"rowwise", "rowwise_rep", "rowwise_split_input"};
constexpr std::array replicate_styles{"replicate",     "sequence_parallel",
                                      "all_reduce",    "replicated_with_grad_allreduce",
                                      "mla_kv_a_proj", "local_params"};

template <class Names>
bool one_of(const Names& names, std::string_view style) {
  return std::find(names.begin(), names.end(), style) != names.end();
}

// The placement transformers' style gives a parameter of `rank` dimensions named `name`;
// nullopt for a style we do not know.
std::optional<Placement> placement_of(const TpRule& rule, std::string_view name, std::size_t rank) {
  using Kind = Placement::Kind;
  const auto n = static_cast<std::int64_t>(rank);
  const std::string_view style = rule.style;
  if (one_of(colwise_styles, style)) return Placement{Kind::shard, n == 1 ? -1 : n - 2, 1};
  if (one_of(rowwise_styles, style)) {
    if (last_component(name) == "bias") return Placement{};
    return Placement{Kind::shard, -1, 1};
  }
  if (style == "embedding_rowwise") return Placement{Kind::shard, 0, 1};
  if (style == "embedding_colwise") return Placement{Kind::shard, 1, 1};
  if (style == "packed_colwise") {
    if (n == 1) return Placement{Kind::shard, -1, 1};
    return Placement{Kind::strided, n - 2, 2};
  }
  if (style == "packed_rowwise") {
    if (n == 1) return Placement{};
    return Placement{Kind::strided, -1, 2};
  }
  if (style == "split") return Placement{Kind::shard, rule.dim, 1};
  if (one_of(replicate_styles, style)) return Placement{};
  return std::nullopt;
}

// DTensor's Shard: ceil(size / world) per rank, the last ranks shorter or empty.
TensorSlice::Range chunk(std::uint64_t size, std::uint64_t world, std::uint64_t rank) {
  const std::uint64_t per = (size + world - 1) / world;
  const std::uint64_t begin = std::min(per * rank, size);
  return {begin, std::min(begin + per, size)};
}

std::string describe(const TpRule& rule) {
  return "tp_plan rule " + detail::quote(rule.pattern) + ": " + detail::quote(rule.style);
}

}  // namespace

const TpRule* find_tp_rule(std::string_view tensor_name, std::span<const TpRule> plan) {
  const auto find = [&](std::string_view key) -> const TpRule* {
    if (key.empty()) return nullptr;
    for (const TpRule& rule : plan) {
      if (rule.pattern == key) return &rule;
    }
    return nullptr;
  };
  const std::string generic = detail::generic_name(tensor_name);
  for (std::string_view key :
       {std::string_view(generic), parent(generic), tensor_name, parent(tensor_name)}) {
    if (const TpRule* rule = find(key)) return rule;
  }
  return nullptr;
}

std::map<std::string, TensorSlice, std::less<>> plan_tensor_parallel(
    const Checkpoint& checkpoint, const TensorParallelOptions& options) {
  const std::string where = origin(checkpoint);
  const auto bad = [&](const std::string& message) {
    detail::fail(ErrorCode::invalid_argument, where, message);
  };
  if (options.world_size == 0) bad("tensor parallelism needs a world size of at least 1");
  if (options.rank >= options.world_size) {
    bad("rank " + std::to_string(options.rank) + " is outside a world of " +
        std::to_string(options.world_size) + " ranks");
  }
  for (const TpRule& rule : options.plan) {
    if (!placement_of(rule, "", 2)) {
      bad(describe(rule) + " is not a style this loader knows (docs/PARALLEL.md lists them)");
    }
    if (rule.style == "split" && !rule.sizes.empty() && rule.sizes.size() != options.world_size) {
      bad(describe(rule) + " gives " + std::to_string(rule.sizes.size()) + " sizes for " +
          std::to_string(options.world_size) + " ranks");
    }
  }
  std::vector<bool> used(options.plan.size(), false);
  std::map<std::string, TensorSlice, std::less<>> slices;
  const std::uint64_t world = options.world_size;
  for (const CheckpointTensor& tensor : checkpoint.tensors()) {
    const TensorInfo& info = *tensor.info;
    const TpRule* rule = find_tp_rule(info.name, options.plan);
    if (!rule) continue;
    used[static_cast<std::size_t>(rule - options.plan.data())] = true;
    const Placement placement = *placement_of(*rule, info.name, info.shape.size());
    if (placement.kind == Placement::Kind::replicate) continue;
    const auto rank_count = static_cast<std::int64_t>(info.shape.size());
    const std::int64_t dim = placement.dim < 0 ? placement.dim + rank_count : placement.dim;
    const std::string what = describe(*rule) + " splits tensor " + detail::quote(info.name) +
                             " of shape " + detail::format_list(info.shape);
    if (dim < 0 || dim >= rank_count) {
      bad(what + " along dimension " + std::to_string(placement.dim) + ", which it does not have");
    }
    TensorSlice slice;
    slice.dim = static_cast<std::uint32_t>(dim);
    const std::uint64_t size = info.shape[slice.dim];
    if (!rule->sizes.empty()) {
      std::uint64_t total = 0, begin = 0;
      for (std::size_t r = 0; r < rule->sizes.size(); ++r) {
        if (r == options.rank) begin = total;
        total += rule->sizes[r];
      }
      if (total != size) {
        bad(what + ": its sizes add up to " + std::to_string(total) + ", dimension " +
            std::to_string(slice.dim) + " has " + std::to_string(size));
      }
      slice.ranges.push_back({begin, begin + rule->sizes[options.rank]});
    } else {
      if (size < world) {
        bad(what + " along dimension " + std::to_string(slice.dim) + " of size " +
            std::to_string(size) + " over " + std::to_string(world) +
            " ranks: the world is larger than the dimension");
      }
      if (placement.kind == Placement::Kind::shard) {
        slice.ranges.push_back(chunk(size, world, options.rank));
      } else {
        // _StridedShard as transformers reads it: the dimension cut into split_factor groups
        // of ceil(size / split_factor), each group split like Shard, this rank's parts joined.
        const std::uint64_t group = (size + placement.split_factor - 1) / placement.split_factor;
        for (std::uint64_t g = 0; g < placement.split_factor; ++g) {
          const std::uint64_t first = std::min(g * group, size);
          const std::uint64_t length = std::min(first + group, size) - first;
          const TensorSlice::Range part = chunk(length, world, options.rank);
          slice.ranges.push_back({first + part.begin, first + part.end});
        }
      }
    }
    std::erase_if(slice.ranges, [](const TensorSlice::Range& r) { return r.begin == r.end; });
    slices.emplace(info.name, std::move(slice));
  }
  if (options.strict) {
    for (std::size_t i = 0; i < used.size(); ++i) {
      if (!used[i]) bad(describe(options.plan[i]) + " matches no tensor (strict plan)");
    }
  }
  return slices;
}

}  // namespace safetensors
