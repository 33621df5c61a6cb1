// Parts of tensors in the loader (TensorSlice, buffer_range), tensor-parallel plans
// (plan_tensor_parallel) and the bytes each source was asked for.
#include "safetensors/parallel.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "expect_error.hpp"
#include "safetensors/cast.hpp"
#include "safetensors/device_map.hpp"
#include "safetensors/error.hpp"
#include "safetensors/loader.hpp"
#include "safetensors/writer.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

namespace fs = std::filesystem;
using Ranges = std::vector<TensorSlice::Range>;

struct Original {
  std::string name;
  Dtype dtype;
  std::vector<std::uint64_t> shape;
  std::vector<std::byte> bytes;
};

std::vector<Original> sample() {
  std::vector<Original> out;
  std::mt19937 random(7);
  auto add = [&](std::string name, Dtype dtype, std::vector<std::uint64_t> shape) {
    std::vector<std::byte> bytes(byte_size(dtype, shape).bytes);
    for (auto& b : bytes) b = static_cast<std::byte>(random() & 0x3f);  // finite floats
    out.push_back({std::move(name), dtype, std::move(shape), std::move(bytes)});
  };
  add("model.embed_tokens.weight", Dtype::F32, {50, 16});
  add("model.layers.0.mlp.down_proj.weight", Dtype::F32, {16, 30});
  add("model.layers.0.mlp.gate_up_proj.weight", Dtype::BF16, {22, 16});
  add("model.layers.0.mlp.up_proj.bias", Dtype::F16, {10});
  add("model.layers.0.mlp.up_proj.weight", Dtype::F32, {10, 16});
  add("model.layers.0.self_attn.o_proj.bias", Dtype::F32, {16});
  add("model.layers.0.self_attn.o_proj.weight", Dtype::F16, {16, 13});
  add("model.layers.1.mlp.up_proj.weight", Dtype::F32, {5, 4, 4});
  add("model.layers.1.self_attn.o_proj.weight", Dtype::I64, {7, 9});
  add("model.norm.weight", Dtype::F32, {16});
  add("model.scale", Dtype::F32, {});
  add("packed", Dtype::F4, {6, 8});
  return out;
}

const Original& by_name(const std::vector<Original>& all, std::string_view name) {
  return *std::find_if(all.begin(), all.end(), [&](const Original& t) { return t.name == name; });
}

// The slice's bytes computed element by element, independently of the loader's runs.
std::vector<std::byte> expected_slice(const Original& t, const TensorSlice& slice) {
  const std::uint64_t bits = dtype_bits(t.dtype);
  std::uint64_t outer = 1, inner = 1;
  for (std::size_t d = 0; d < slice.dim; ++d) outer *= t.shape[d];
  for (std::size_t d = slice.dim + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
  std::vector<bool> bits_out;
  for (std::uint64_t o = 0; o < outer; ++o) {
    for (const auto& r : slice.ranges) {
      for (std::uint64_t i = r.begin; i < r.end; ++i) {
        for (std::uint64_t k = 0; k < inner * bits; ++k) {
          const std::uint64_t bit = ((o * t.shape[slice.dim] + i) * inner) * bits + k;
          bits_out.push_back(((static_cast<unsigned>(t.bytes[bit / 8]) >> (bit % 8)) & 1u) != 0);
        }
      }
    }
  }
  std::vector<std::byte> out(bits_out.size() / 8);
  for (std::size_t i = 0; i < bits_out.size(); ++i) {
    if (bits_out[i]) out[i / 8] |= static_cast<std::byte>(1u << (i % 8));
  }
  return out;
}

class ParallelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tensors_ = sample();
    std::vector<TensorData> data;
    for (const Original& t : tensors_) {
      data.push_back(TensorData::from_bytes(t.name, t.dtype, t.shape, t.bytes));
    }
    path_ = test::unique_path("parallel");
    write_file(path_, data);
    checkpoint_ = Checkpoint::open(path_);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove(path_, ignored);
  }

  std::uint64_t bytes_read() const {
    std::uint64_t n = 0;
    for (const File& f : checkpoint_.files()) n += f.source().bytes_read();
    return n;
  }

  std::vector<Original> tensors_;
  fs::path path_;
  Checkpoint checkpoint_;
};

TEST_F(ParallelTest, LoadsPartsAlongEveryDimensionWithEveryMethod) {
  struct Case {
    std::string name;
    TensorSlice slice;
  };
  const std::vector<Case> cases = {
      {"model.embed_tokens.weight", {0, {{3, 17}}}},
      {"model.embed_tokens.weight", {1, {{4, 9}}}},
      {"model.embed_tokens.weight", {1, {{0, 2}, {8, 11}}}},
      {"model.layers.0.mlp.down_proj.weight", {1, {{29, 30}}}},
      {"model.layers.0.mlp.gate_up_proj.weight", {0, {{0, 3}, {11, 14}}}},
      {"model.layers.0.mlp.up_proj.bias", {0, {{2, 7}}}},
      {"model.layers.1.mlp.up_proj.weight", {1, {{1, 3}}}},
      {"model.layers.1.mlp.up_proj.weight", {2, {{0, 1}, {3, 4}}}},
      {"model.layers.1.mlp.up_proj.weight", {0, {{5, 5}}}},
      {"model.layers.1.self_attn.o_proj.weight", {1, {{0, 9}}}},
      {"packed", {1, {{2, 6}}}},
      {"packed", {0, {{1, 2}, {4, 6}}}},
  };
  for (const LoadMethod method : {LoadMethod::pread, LoadMethod::mmap, LoadMethod::direct}) {
    for (const Case& c : cases) {
      const std::string what = c.name + " dim " + std::to_string(c.slice.dim);
      LoadOptions options;
      options.method = method;
      options.threads = 3;
      options.names = {c.name};
      options.slices[c.name] = c.slice;
      const std::uint64_t before = bytes_read();
      const LoadedCheckpoint loaded = load(checkpoint_, options);
      ASSERT_EQ(loaded.tensors().size(), 1u);
      const LoadedTensor& t = loaded.tensors()[0];
      const Original& o = by_name(tensors_, c.name);
      std::vector<std::uint64_t> shape = o.shape;
      shape[c.slice.dim] = c.slice.length();
      EXPECT_EQ(t.shape, shape) << what;
      ASSERT_TRUE(t.slice.has_value());
      const auto expected = expected_slice(o, c.slice);
      const auto got = loaded.bytes(t);
      ASSERT_EQ(got.size(), expected.size()) << what;
      EXPECT_TRUE(std::equal(got.begin(), got.end(), expected.begin())) << what;
      // Only the part's bytes were asked of the file (O_DIRECT rounds to blocks).
      if (method != LoadMethod::direct) {
        EXPECT_EQ(bytes_read() - before, expected.size()) << what;
      }
    }
  }
}

TEST_F(ParallelTest, PartsConvertLikeWholeTensors) {
  const std::string name = "model.layers.0.mlp.down_proj.weight";
  const TensorSlice slice{1, {{3, 11}, {20, 25}}};
  LoadOptions options;
  options.names = {name};
  options.slices[name] = slice;
  options.dtype = Dtype::BF16;
  const LoadedCheckpoint loaded = load(checkpoint_, options);
  const auto source = expected_slice(by_name(tensors_, name), slice);
  std::vector<std::byte> expected(source.size() / 2);
  cast(Dtype::F32, source, Dtype::BF16, expected);
  const auto got = loaded.bytes(loaded.tensors()[0]);
  EXPECT_EQ(loaded.tensors()[0].dtype, Dtype::BF16);
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), expected.begin()));
}

TEST_F(ParallelTest, BadPartsFailBeforeReading) {
  const auto plan_with = [&](const std::string& name, TensorSlice slice) {
    LoadOptions options;
    options.slices[name] = std::move(slice);
    return plan_load(checkpoint_, options);
  };
  const std::uint64_t before = bytes_read();
  test::expect_error(
      [&] {
        (void)plan_with("model.norm.weight", {1, {{0, 1}}});
      },
      ErrorCode::invalid_slice, {"no dimension 1"});
  test::expect_error(
      [&] {
        (void)plan_with("model.norm.weight", {0, {{3, 17}}});
      },
      ErrorCode::invalid_slice, {"does not fit dimension 0 of size 16"});
  test::expect_error(
      [&] {
        (void)plan_with("model.scale", {0, {{0, 0}}});
      },
      ErrorCode::invalid_slice, {"no dimension 0"});
  test::expect_error(
      [&] {
        (void)plan_with("packed", {1, {{1, 3}}});
      },
      ErrorCode::invalid_slice, {"on a byte"});
  test::expect_error(
      [&] {
        (void)plan_with("absent", {0, {{0, 1}}});
      },
      ErrorCode::tensor_not_found, {"absent"});
  LoadOptions options;
  options.names = {"model.norm.weight"};
  options.slices["model.scale"] = {0, {}};
  test::expect_error([&] { (void)plan_load(checkpoint_, options); }, ErrorCode::invalid_argument,
                     {"leaves the tensor out"});
  EXPECT_EQ(bytes_read(), before);
}

TEST_F(ParallelTest, BufferRangesTogetherFillTheWholeLoad) {
  for (const std::optional<Dtype> dtype : {std::optional<Dtype>(), std::optional(Dtype::F16)}) {
    LoadOptions options;
    options.dtype = dtype;
    const LoadedCheckpoint whole = load(checkpoint_, options);
    const LoadPlan plan = plan_load(checkpoint_, options);
    std::vector<std::byte> buffer(plan.buffer_size, std::byte{0xee});
    const std::uint64_t parts = 4;
    const std::uint64_t step = (plan.buffer_size / parts + 7) / 8 * 8;
    std::uint64_t read = 0;
    for (std::uint64_t p = 0; p < parts; ++p) {
      const std::uint64_t before = bytes_read();
      LoadOptions part = options;
      part.buffer_range = {std::min(p * step, plan.buffer_size),
                           std::min((p + 1) * step, plan.buffer_size)};
      load_into(checkpoint_, plan, buffer, part);
      read += bytes_read() - before;
    }
    for (const LoadedTensor& t : whole.tensors()) {
      const auto got = std::span(buffer).subspan(t.offset, t.byte_count);
      const auto want = whole.bytes(t);
      EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin())) << t.name;
    }
    if (!dtype) {
      EXPECT_EQ(read, plan.buffer_size);
    }
  }
  LoadOptions bad;
  const LoadPlan plan = plan_load(checkpoint_, bad);
  std::vector<std::byte> buffer(plan.buffer_size);
  bad.buffer_range = {8, plan.buffer_size + 8};
  test::expect_error([&] { (void)load_into(checkpoint_, plan, buffer, bad); },
                     ErrorCode::invalid_argument, {"is not a range of the plan"});
}

TensorParallelOptions tp(std::vector<TpRule> plan, std::uint32_t rank, std::uint32_t world,
                         bool strict = false) {
  TensorParallelOptions options;
  options.plan = std::move(plan);
  options.rank = rank;
  options.world_size = world;
  options.strict = strict;
  return options;
}

Ranges ranges_of(const std::map<std::string, TensorSlice, std::less<>>& slices,
                 const std::string& name, std::uint32_t dim) {
  const auto it = slices.find(name);
  if (it == slices.end()) return {{999, 999}};
  EXPECT_EQ(it->second.dim, dim) << name;
  return it->second.ranges;
}

TEST_F(ParallelTest, StylesSplitAsTransformersDoes) {
  const std::vector<TpRule> plan = {
      {"model.embed_tokens", "embedding_rowwise", 0, {}},
      {"model.layers.*.mlp.up_proj", "colwise", 0, {}},
      {"model.layers.*.mlp.down_proj", "rowwise", 0, {}},
      {"model.layers.*.self_attn.o_proj", "rowwise", 0, {}},
      {"model.layers.*.mlp.gate_up_proj", "packed_colwise", 0, {}},
      {"model.norm", "replicate", 0, {}},
  };
  // torch.chunk: ceil(size / world) per rank; 10 rows over 4 ranks are 3, 3, 3, 1.
  const std::vector<std::vector<std::uint64_t>> up_rows = {{0, 3}, {3, 6}, {6, 9}, {9, 10}};
  for (std::uint32_t r = 0; r < 4; ++r) {
    const auto slices = plan_tensor_parallel(checkpoint_, tp(plan, r, 4));
    const std::string layer0 = "model.layers.0.";
    EXPECT_EQ(ranges_of(slices, "model.embed_tokens.weight", 0),
              (Ranges{{std::min(13u * r, 50u), std::min(13u * r + 13, 50u)}}));
    EXPECT_EQ(ranges_of(slices, layer0 + "mlp.up_proj.weight", 0),
              (Ranges{{up_rows[r][0], up_rows[r][1]}}));
    EXPECT_EQ(ranges_of(slices, layer0 + "mlp.up_proj.bias", 0),
              (Ranges{{up_rows[r][0], up_rows[r][1]}}));
    // colwise on a 3-d weight splits dimension -2.
    EXPECT_EQ(ranges_of(slices, "model.layers.1.mlp.up_proj.weight", 1), (Ranges{{r, r + 1}}));
    EXPECT_EQ(ranges_of(slices, layer0 + "mlp.down_proj.weight", 1),
              (Ranges{{std::min(8u * r, 30u), std::min(8u * r + 8, 30u)}}));
    EXPECT_EQ(ranges_of(slices, layer0 + "self_attn.o_proj.weight", 1),
              (Ranges{{4u * r, std::min(4u * r + 4, 13u)}}));
    EXPECT_FALSE(slices.contains(layer0 + "self_attn.o_proj.bias"));  // rowwise bias
    EXPECT_FALSE(slices.contains("model.norm.weight"));
    EXPECT_FALSE(slices.contains("model.scale"));
    EXPECT_FALSE(slices.contains("packed"));
    // packed_colwise: two groups of 11 rows, each cut 3, 3, 3, 2.
    const std::uint64_t b = 3 * r, e = std::min<std::uint64_t>(3 * r + 3, 11);
    EXPECT_EQ(ranges_of(slices, layer0 + "mlp.gate_up_proj.weight", 0),
              (Ranges{{b, e}, {11 + b, 11 + e}}));
  }
}

TEST_F(ParallelTest, EveryRanksPartsJoinIntoTheWholeTensor) {
  const std::vector<TpRule> plan = {
      {"model.embed_tokens", "embedding_colwise", 0, {}},
      {"model.layers.*.mlp.up_proj", "colwise", 0, {}},
      {"model.layers.*.mlp.down_proj", "split", 1, {1, 20, 0, 9}},
      {"model.layers.*.self_attn.o_proj", "rowwise", 0, {}},
      {"model.layers.*.mlp.gate_up_proj", "packed_rowwise", 0, {}},
      {"packed", "split", -1, {2, 2, 2, 2}},
  };
  const std::uint32_t world = 4;
  std::map<std::string, std::vector<std::vector<std::byte>>> parts;
  std::uint64_t total_read = 0, total_bytes = 0;
  for (const File& f : checkpoint_.files()) total_bytes += f.header().data_size;
  for (std::uint32_t r = 0; r < world; ++r) {
    LoadOptions options;
    options.tensor_parallel = std::make_shared<TensorParallelOptions>(tp(plan, r, world, true));
    const std::uint64_t before = bytes_read();
    const LoadedCheckpoint loaded = load(checkpoint_, options);
    total_read += bytes_read() - before;
    for (const LoadedTensor& t : loaded.tensors()) {
      const Original& o = by_name(tensors_, t.name);
      const auto got = loaded.bytes(t);
      if (!t.slice) {
        EXPECT_TRUE(std::equal(got.begin(), got.end(), o.bytes.begin())) << t.name;
        continue;
      }
      EXPECT_EQ(std::vector<std::byte>(got.begin(), got.end()), expected_slice(o, *t.slice))
          << t.name << " rank " << r;
      parts[t.name].emplace_back(got.begin(), got.end());
    }
  }
  // The split tensors are read once over all ranks, the others once per rank.
  std::uint64_t split_bytes = 0;
  for (const auto& [name, pieces] : parts) {
    std::uint64_t sum = 0;
    for (const auto& p : pieces) sum += p.size();
    EXPECT_EQ(sum, by_name(tensors_, name).bytes.size()) << name;
    split_bytes += sum;
  }
  EXPECT_EQ(total_read, split_bytes + world * (total_bytes - split_bytes));
}

TEST_F(ParallelTest, BadPlansAreClearErrorsBeforeAnyRead) {
  const std::uint64_t before = bytes_read();
  const auto plan = [&](std::vector<TpRule> rules, std::uint32_t rank, std::uint32_t world,
                        bool strict = false) {
    return plan_tensor_parallel(checkpoint_, tp(std::move(rules), rank, world, strict));
  };
  test::expect_error(
      [&] {
        (void)plan({{"model.norm", "embedding_colwise", 0, {}}}, 0, 2);
      },
      ErrorCode::invalid_argument,
      {"splits tensor `model.norm.weight` of shape [16] along dimension 1, which it "
       "does not have"});
  test::expect_error(
      [&] {
        (void)plan({{"model.scale", "colwise", 0, {}}}, 0, 2);
      },
      ErrorCode::invalid_argument, {"which it does not have"});
  test::expect_error(
      [&] {
        (void)plan({{"model.layers.*.mlp.up_proj", "colwise", 0, {}}}, 0, 6);
      },
      ErrorCode::invalid_argument,
      {"along dimension 1 of size 4 over 6 ranks: the world is larger"});
  test::expect_error(
      [&] {
        (void)plan({{"model.nothing", "colwise", 0, {}}}, 0, 2, true);
      },
      ErrorCode::invalid_argument, {"`model.nothing`: `colwise` matches no tensor"});
  EXPECT_TRUE(plan({{"model.nothing", "colwise", 0, {}}}, 0, 2).empty());
  test::expect_error(
      [&] {
        (void)plan({{"model.norm", "unit_colwise", 0, {}}}, 0, 2);
      },
      ErrorCode::invalid_argument, {"is not a style this loader knows"});
  test::expect_error([&] { (void)plan({}, 2, 2); }, ErrorCode::invalid_argument,
                     {"rank 2 is outside a world of 2"});
  test::expect_error(
      [&] {
        (void)plan({{"model.norm", "split", 0, {1, 2}}}, 0, 2);
      },
      ErrorCode::invalid_argument, {"its sizes add up to 3, dimension 0 has 16"});
  test::expect_error(
      [&] {
        (void)plan({{"model.norm", "split", 0, {16}}}, 0, 2);
      },
      ErrorCode::invalid_argument, {"gives 1 sizes for 2 ranks"});
  EXPECT_EQ(bytes_read(), before);
}

TEST(ParallelMatch, FollowsTransformersLookup) {
  const std::vector<TpRule> plan = {
      {"layers.*.mlp", "colwise", 0, {}},
      {"layers.*.mlp.w2", "rowwise", 0, {}},
      {"lm_head.weight", "colwise", 0, {}},
      {"layers.3.attn", "rowwise", 0, {}},
  };
  EXPECT_EQ(find_tp_rule("layers.12.mlp.weight", plan), &plan[0]);
  EXPECT_EQ(find_tp_rule("layers.12.mlp.w2", plan), &plan[1]);  // the parameter's own rule
  EXPECT_EQ(find_tp_rule("layers.12.mlp.w2.bias", plan), &plan[1]);
  EXPECT_EQ(find_tp_rule("lm_head.weight", plan), &plan[2]);
  EXPECT_EQ(find_tp_rule("layers.3.attn.weight", plan), &plan[3]);  // numbers as they are
  EXPECT_EQ(find_tp_rule("layers.4.attn.weight", plan), nullptr);
  EXPECT_EQ(find_tp_rule("layers.12.mlp.sub.weight", plan), nullptr);  // no deeper match
  EXPECT_EQ(find_tp_rule("layers2.mlp.weight", plan), nullptr);
}

}  // namespace
}  // namespace safetensors

namespace safetensors {
namespace {

TEST_F(ParallelTest, DeviceMapFillsDevicesInOrderFromHeadersAlone) {
  const std::uint64_t before = bytes_read();
  DeviceMapOptions options;
  // Given out of order: GPUs come first, then cpu, then disk.
  options.max_memory = {{"cpu", 4000}, {"cuda:0", 3300}};
  options.no_split = {"model.layers.*"};
  const DeviceMap map = plan_device_map(checkpoint_, options);
  ASSERT_EQ(map.used.size(), 3u);
  EXPECT_EQ(map.used[0].device, "cuda:0");
  EXPECT_EQ(map.used[1].device, "cpu");
  EXPECT_EQ(map.used[2].device, "disk");
  std::uint64_t total = 0;
  for (const DeviceBudget& d : map.used) total += d.bytes;
  std::uint64_t stored = 0;
  for (const Original& t : tensors_) stored += t.bytes.size();
  EXPECT_EQ(total, stored);
  EXPECT_LE(map.used[0].bytes, 3300u);
  EXPECT_LE(map.used[1].bytes, 4000u);
  // Every tensor has a device; layers are never split.
  for (const Original& t : tensors_) EXPECT_FALSE(map.device_of(t.name).empty()) << t.name;
  for (const DeviceAssignment& a : map.modules) {
    EXPECT_FALSE(a.module.starts_with("model.layers.0.")) << a.module;
  }
  // The embedding (3200 bytes) is first in natural order and fits the GPU; the layers follow.
  EXPECT_EQ(map.device_of("model.embed_tokens.weight"), "cuda:0");
  EXPECT_EQ(map.device_of("model.layers.0.mlp.up_proj.weight"), "cpu");
  // Counting at BF16 halves the F32 tensors.
  options.dtype = Dtype::BF16;
  const DeviceMap half = plan_device_map(checkpoint_, options);
  EXPECT_LT(half.used[0].bytes + half.used[1].bytes + half.used[2].bytes, total);
  EXPECT_EQ(bytes_read(), before);
  options.max_memory.push_back({"cpu", 1});
  test::expect_error([&] { (void)plan_device_map(checkpoint_, options); },
                     ErrorCode::invalid_argument, {"`cpu` has two budgets"});
}

}  // namespace
}  // namespace safetensors
