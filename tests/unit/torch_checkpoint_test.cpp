// read_checkpoint on checkpoints torch.save wrote at test time, and on hand-made hostile ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../../src/torch/checkpoint.hpp"
#include "../fixtures/torch/fixtures.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail {
namespace {

class TorchCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::have_torch()) GTEST_SKIP() << test::python_interpreter() << " has no torch or numpy";
  }

  torch::SavedModel read(const std::string& name, const torch::ReadOptions& options = {}) {
    source_ = open_pread_source(test::torch_fixtures() / name);
    return torch::read_checkpoint(*source_, options);
  }

  std::unique_ptr<Source> source_;
};

const torch::TensorRef& find(const torch::SavedModel& c, const std::string& name) {
  const auto it = std::find_if(c.tensors.begin(), c.tensors.end(),
                               [&](const torch::TensorRef& t) { return t.name == name; });
  if (it == c.tensors.end()) throw std::runtime_error("no tensor " + name);
  return *it;
}

std::vector<float> floats(const detail::StorageBytes& storage) {
  std::vector<float> out(storage.size() / 4);
  std::memcpy(out.data(), storage.bytes().data(), out.size() * 4);
  return out;
}

TEST_F(TorchCheckpoint, TiedWeightsShareOneStorage) {
  const torch::SavedModel c = read("tied.pt");
  EXPECT_EQ(c.format, torch::Format::zip);
  ASSERT_EQ(c.tensors.size(), 5u);
  const auto& embed = find(c, "embed.weight");
  const auto& head = find(c, "head.weight");
  EXPECT_EQ(embed.storage_key, head.storage_key);
  EXPECT_EQ(embed.dtype, Dtype::F32);
  EXPECT_EQ(embed.shape, (std::vector<std::uint64_t>{10, 4}));
  EXPECT_EQ(embed.stride, (std::vector<std::uint64_t>{4, 1}));
  EXPECT_EQ(c.storages.at(embed.storage_key).byte_size, 160u);
  EXPECT_TRUE(c.dropped.empty());
}

TEST_F(TorchCheckpoint, ViewsKeepTheirGeometry) {
  const torch::SavedModel c = read("views.pt");
  const auto& base = find(c, "base");
  const auto& t = find(c, "transposed");
  EXPECT_EQ(t.storage_key, base.storage_key);
  EXPECT_EQ(t.shape, (std::vector<std::uint64_t>{8, 6}));
  EXPECT_EQ(t.stride, (std::vector<std::uint64_t>{1, 8}));
  EXPECT_EQ(find(c, "strided").stride, (std::vector<std::uint64_t>{8, 2}));
  EXPECT_EQ(find(c, "row").storage_offset, 24u);
  EXPECT_EQ(find(c, "middle").storage_offset, 10u);
  EXPECT_EQ(find(c, "middle").dtype, Dtype::F64);
  EXPECT_EQ(find(c, "expanded").stride, (std::vector<std::uint64_t>{0, 1}));

  const std::vector<float> values = floats(c.read_storage(c.storages.at(base.storage_key)));
  ASSERT_EQ(values.size(), 48u);
  for (std::size_t i = 0; i < values.size(); ++i) EXPECT_EQ(values[i], static_cast<float>(i));
}

TEST_F(TorchCheckpoint, EveryDtypeAndProtocol) {
  for (const char* name : {"dtypes.pt", "proto4.pt", "legacy.pt"}) {
    SCOPED_TRACE(name);
    const torch::SavedModel c = read(name);
    EXPECT_EQ(find(c, "bf16").dtype, Dtype::BF16);
    EXPECT_EQ(find(c, "c64").dtype, Dtype::C64);
    EXPECT_EQ(find(c, "bool").dtype, Dtype::BOOL);
    EXPECT_EQ(find(c, "u8").dtype, Dtype::U8);
    EXPECT_EQ(find(c, "i16").dtype, Dtype::I16);
    EXPECT_EQ(find(c, "param").shape, (std::vector<std::uint64_t>{2, 3}));
    EXPECT_TRUE(find(c, "scalar").shape.empty());
    EXPECT_EQ(find(c, "empty").shape, (std::vector<std::uint64_t>{0, 3}));
    for (const auto& [key, storage] : c.storages) {
      EXPECT_EQ(c.read_storage(storage).size(), storage.byte_size) << key;
    }
  }
  EXPECT_EQ(read("legacy.pt").format, torch::Format::legacy);
}

// torch 2 writes dtypes added after 1.13 with _rebuild_tensor_v3 over an UntypedStorage.
TEST_F(TorchCheckpoint, UntypedStoragesTakeTheRebuildDtype) {
  const torch::SavedModel c = read("torch2_v3.pt");
  const auto& f8 = find(c, "f8");
  EXPECT_EQ(f8.dtype, Dtype::F8_E4M3);
  EXPECT_EQ(f8.shape, (std::vector<std::uint64_t>{2, 3}));
  EXPECT_EQ(c.storages.at(f8.storage_key).byte_size, 6u);
  const auto& u16 = find(c, "u16");
  EXPECT_EQ(u16.dtype, Dtype::U16);
  EXPECT_EQ(u16.storage_offset, 1u);
  EXPECT_EQ(c.storages.at(u16.storage_key).byte_size, 8u);
  EXPECT_EQ(c.read_storage(c.storages.at(u16.storage_key)).size(), 8u);
}

TEST_F(TorchCheckpoint, TrainingCheckpointTakesTheStateDict) {
  for (const char* name : {"lightning.ckpt", "legacy_lightning.ckpt"}) {
    SCOPED_TRACE(name);
    const torch::SavedModel c = read(name);
    EXPECT_EQ(c.tensors.size(), 5u);
    const auto has_note = [&](const std::string& start) {
      return std::any_of(c.dropped.begin(), c.dropped.end(),
                         [&](const std::string& d) { return d.rfind(start, 0) == 0; });
    };
    EXPECT_TRUE(has_note("epoch: int 3")) << testing::PrintToString(c.dropped);
    EXPECT_TRUE(has_note("optimizer_states: list"));
    EXPECT_TRUE(has_note("np_scalar: numpy scalar"));
    EXPECT_TRUE(has_note("np_array: numpy array"));
  }
}

TEST_F(TorchCheckpoint, KeyOptionPicksAnotherDict) {
  const torch::SavedModel nested = read("nested.pth");  // weights under "model"
  EXPECT_EQ(nested.tensors.size(), 5u);
  torch::ReadOptions options;
  options.state_dict_key = "no_such_key";
  try {
    read("lightning.ckpt", options);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("no_such_key"), std::string::npos);
  }
  options.state_dict_key = "hyper_parameters";
  EXPECT_EQ(read("lightning.ckpt", options).tensors.size(), 0u);
}

struct Refusal {
  const char* file;
  ErrorCode code;
  const char* says;  // a part of the message
};

class TorchCheckpointRefuses : public TorchCheckpoint,
                               public ::testing::WithParamInterface<Refusal> {};

TEST_P(TorchCheckpointRefuses, WithAClearMessage) {
  const Refusal& r = GetParam();
  try {
    read(r.file);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), r.code) << e.what();
    EXPECT_NE(std::string(e.what()).find(r.says), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(r.file), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Hostile, TorchCheckpointRefuses,
    ::testing::Values(
        Refusal{"bad_numel_larger_than_record.pt", ErrorCode::invalid_checkpoint, "record holds"},
        Refusal{"bad_view_beyond_storage.pt", ErrorCode::invalid_checkpoint, "reaches byte"},
        Refusal{"bad_view_beyond_storage_2d.pt", ErrorCode::invalid_checkpoint, "reaches byte"},
        Refusal{"bad_negative_stride.pt", ErrorCode::invalid_checkpoint, "negative"},
        Refusal{"bad_negative_offset.pt", ErrorCode::invalid_checkpoint, "negative"},
        Refusal{"bad_negative_size.pt", ErrorCode::invalid_checkpoint, "negative"},
        Refusal{"bad_same_key_two_types.pt", ErrorCode::invalid_checkpoint, "appears as"},
        Refusal{"bad_same_key_two_sizes.pt", ErrorCode::invalid_checkpoint, "appears as"},
        Refusal{"bad_expansion_bomb.pt", ErrorCode::invalid_checkpoint, "expands"},
        Refusal{"bad_size_overflow.pt", ErrorCode::invalid_checkpoint, "overflows"},
        Refusal{"bad_missing_record.pt", ErrorCode::invalid_checkpoint, "no data record"},
        Refusal{"bad_rank_mismatch.pt", ErrorCode::invalid_checkpoint, "stride"},
        Refusal{"bad_complex128.pt", ErrorCode::unsupported_checkpoint, "complex128"},
        Refusal{"bad_os_system.pt", ErrorCode::forbidden_pickle, "system"},
        Refusal{"bad_os_system_list.pt", ErrorCode::forbidden_pickle, "system"},
        Refusal{"bad_builtins_eval.pt", ErrorCode::forbidden_pickle, "eval"},
        Refusal{"bad_nested_pickle.pt", ErrorCode::forbidden_pickle, "loads"},
        Refusal{"bad_quantized.pt", ErrorCode::unsupported_checkpoint, "quantized"},
        Refusal{"bad_torchscript.pt", ErrorCode::unsupported_checkpoint, "TorchScript"},
        Refusal{"bad_legacy_count.pt", ErrorCode::invalid_checkpoint, "elements"},
        Refusal{"bad_legacy_trailing.pt", ErrorCode::invalid_checkpoint, "follow"},
        Refusal{"bad_legacy_truncated.pt", ErrorCode::invalid_checkpoint, "bytes"},
        Refusal{"bad_plain_pickle.pt", ErrorCode::invalid_checkpoint, "not a PyTorch"},
        Refusal{"bad_text.pt", ErrorCode::invalid_checkpoint, "not a PyTorch"}),
    [](const ::testing::TestParamInfo<Refusal>& info) {
      std::string name = info.param.file;
      name = name.substr(4, name.size() - 7);  // "bad_" ... ".pt"
      return name;
    });

}  // namespace
}  // namespace safetensors::detail
