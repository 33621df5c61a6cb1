// Tensor-parallel loading: which part of each tensor one rank of a group holds, from a plan in
// the vocabulary of transformers' `tp_plan` (docs/PARALLEL.md). Pure planning from headers:
// nothing here reads a tensor.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/checkpoint.hpp"
#include "safetensors/export.hpp"
#include "safetensors/loader.hpp"

namespace safetensors {

/// One rule of a tensor-parallel plan.
struct SAFETENSORS_API TpRule {
  /// A module or parameter name as transformers writes `tp_plan` keys, layer numbers written
  /// `*` (`model.layers.*.mlp.up_proj`) or as they are. A tensor follows the rule named by
  /// its own name, else by its module's (the name without its last component).
  std::string pattern;
  /// A transformers style: colwise, colwise_rep, colwise_gather_output (weights and biases
  /// split along the output dimension, -2 of the weight), rowwise, rowwise_rep,
  /// rowwise_split_input (weights split along the last dimension, biases replicated),
  /// embedding_rowwise (dimension 0), embedding_colwise (dimension 1), packed_colwise,
  /// packed_rowwise (fused halves, each split), replicate and the styles that replicate
  /// parameters (sequence_parallel, all_reduce, replicated_with_grad_allreduce,
  /// mla_kv_a_proj, local_params); or "split": an explicit split along `dim`.
  std::string style;
  /// style "split": the dimension, negative counting from the end.
  std::int32_t dim = 0;
  /// style "split": elements per rank along `dim`, one per rank, summing to the dimension;
  /// empty splits as torch.chunk and DTensor's Shard do (ceil(size / world) per rank, the
  /// last ranks shorter or empty).
  std::vector<std::uint64_t> sizes;
};

struct SAFETENSORS_API TensorParallelOptions {
  std::vector<TpRule> plan;
  std::uint32_t rank = 0;
  std::uint32_t world_size = 1;
  /// A rule that matches no tensor of the checkpoint is an error (otherwise it is ignored, as
  /// transformers only warns).
  bool strict = false;
};

/// The rule `tensor_name` follows under `plan` (nullptr: none, the tensor is replicated).
[[nodiscard]] SAFETENSORS_API const TpRule* find_tp_rule(std::string_view tensor_name,
                                                         std::span<const TpRule> plan);

/// Each split tensor's part for `options.rank`, by name; tensors absent are replicated (every
/// rank loads them whole). Throws invalid_argument, naming the checkpoint, the rule, the tensor
/// and the values, before anything is read: an unknown style, a rank outside the world, a
/// split dimension the tensor does not have, a world larger than the split dimension, sizes
/// that do not add up, or (when strict) a rule that matches nothing.
[[nodiscard]] SAFETENSORS_API std::map<std::string, TensorSlice, std::less<>> plan_tensor_parallel(
    const Checkpoint& checkpoint, const TensorParallelOptions& options);

}  // namespace safetensors
