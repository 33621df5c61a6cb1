// convert_file / convert_directory on fixtures made by torch and numpy at test time; every
// output is checked tensor by tensor against torch.load by check_conversion.py.
#include "safetensors/convert.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "../../src/convert/copy.hpp"
#include "../../src/convert/write.hpp"
#include "../fixtures/torch/fixtures.hpp"
#include "python_fixtures.hpp"
#include "safetensors/error.hpp"
#include "safetensors/file.hpp"

namespace safetensors {
namespace {

namespace fs = std::filesystem;
using test::shell_quote;

class Convert : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::have_torch()) GTEST_SKIP() << test::python_interpreter() << " has no torch or numpy";
  }
  void TearDown() override {
    std::error_code ignored;
    for (const fs::path& p : cleanup_) fs::remove_all(p, ignored);
  }

  fs::path fixture(const std::string& name) { return test::torch_fixtures() / name; }
  fs::path output(const std::string& stem) {
    cleanup_.push_back(test::unique_path(stem));
    return cleanup_.back();
  }
  fs::path private_dir(const std::string& name) {
    cleanup_.push_back(test::copy_fixture_dir(name));
    return cleanup_.back();
  }

  std::vector<fs::path> cleanup_;
};

TEST_F(Convert, TiedWeightsAreStoredOnce) {
  const fs::path out = output("tied");
  const ConvertReport report = convert_file(fixture("tied.pt"), out);
  EXPECT_EQ(report.input_format, "torch-zip");
  ASSERT_EQ(report.deduplicated.size(), 1u);
  EXPECT_EQ(report.deduplicated[0],
            (std::pair<std::string, std::string>{"head.weight", "embed.weight"}));
  EXPECT_EQ(report.tensors,
            (std::vector<std::string>{"embed.weight", "head.bias", "norm.bias", "norm.weight"}));
  const File file = File::open(out);
  ASSERT_TRUE(file.metadata());
  EXPECT_EQ(file.metadata()->at("format"), "pt");
  EXPECT_EQ(file.metadata()->at("head.weight"), "embed.weight");
  EXPECT_EQ(report.bytes_written, fs::file_size(out));
  EXPECT_EQ(test::check_conversion(shell_quote(fixture("tied.pt")) + " " + shell_quote(out)), 0);
}

TEST_F(Convert, ViewsBecomeContiguousCopies) {
  const fs::path out = output("views");
  const ConvertReport report = convert_file(fixture("views.pt"), out);
  // Only a name with the whole storage and the same shape is a tie; other views are copies.
  EXPECT_EQ(report.deduplicated,
            (std::vector<std::pair<std::string, std::string>>{{"same_as_base", "base"}}));
  EXPECT_EQ(File::open(out).info("transposed").shape, (std::vector<std::uint64_t>{8, 6}));
  EXPECT_EQ(test::check_conversion(shell_quote(fixture("views.pt")) + " " + shell_quote(out)), 0);
}

// torch 1.13 cannot load these dtypes, so the expected bytes are spelled out here.
TEST_F(Convert, Torch2DtypesAndStridedGather) {
  const fs::path out = output("torch2");
  convert_file(fixture("torch2_v3.pt"), out);
  const File file = File::open(out);
  const auto bytes = [&](const char* name) {
    std::vector<int> values;
    for (std::byte b : file.read(name)) values.push_back(std::to_integer<int>(b));
    return values;
  };
  EXPECT_EQ(file.info("f8").dtype, Dtype::F8_E4M3);
  EXPECT_EQ(bytes("f8"), (std::vector<int>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(file.info("f8_t").shape, (std::vector<std::uint64_t>{3, 2}));
  EXPECT_EQ(bytes("f8_t"), (std::vector<int>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(file.info("u16").dtype, Dtype::U16);
  EXPECT_EQ(bytes("u16"), (std::vector<int>{12, 13, 14, 15, 16, 17}));
}

class ConvertMatchesTorch : public Convert, public ::testing::WithParamInterface<const char*> {};

TEST_P(ConvertMatchesTorch, EveryTensor) {
  const fs::path out = output("match");
  const ConvertReport report = convert_file(fixture(GetParam()), out);
  EXPECT_FALSE(report.tensors.empty());
  EXPECT_EQ(test::check_conversion(shell_quote(fixture(GetParam())) + " " + shell_quote(out)), 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ConvertMatchesTorch,
                         ::testing::Values("dtypes.pt", "proto4.pt", "views_proto4.pt",
                                           "views_proto1.pt", "proto5.pt", "legacy_proto1.pt",
                                           "legacy_proto5.pt", "legacy.pt", "legacy_big_pickle.pt",
                                           "lightning.ckpt", "legacy_lightning.ckpt", "nested.pth",
                                           "plain.npy", "fortran.npy", "bigendian.npy",
                                           "arrays.npz", "compressed.npz"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '.', '_');
                           return name;
                         });

TEST_F(Convert, FormatComesFromTheBytes) {
  const fs::path misnamed = output("misnamed.npy");
  fs::copy_file(fixture("tied.pt"), misnamed);
  EXPECT_EQ(convert_file(misnamed, output("from-misnamed")).input_format, "torch-zip");
  EXPECT_EQ(convert_file(fixture("legacy.pt"), output("legacy")).input_format, "torch-legacy");
  EXPECT_EQ(convert_file(fixture("arrays.npz"), output("npz")).input_format, "npz");
  const fs::path npy = output("npy");
  EXPECT_EQ(convert_file(fixture("plain.npy"), npy).input_format, "npy");
  EXPECT_EQ(File::open(npy).metadata()->at("format"), "np");
  EXPECT_NE(File::open(npy).find("plain"), nullptr);
}

TEST_F(Convert, TrainingCheckpointReportsDroppedValues) {
  const ConvertReport report = convert_file(fixture("lightning.ckpt"), output("lightning"));
  EXPECT_EQ(report.tensors.size(), 4u);  // 5 names, one tied
  EXPECT_TRUE(std::any_of(report.dropped.begin(), report.dropped.end(), [](const auto& d) {
    return d.find("global_step") == 0;
  })) << testing::PrintToString(report.dropped);
}

TEST_F(Convert, KeyOptionAndMissingKey) {
  ConvertOptions options;
  options.state_dict_key = "model";
  const fs::path out = output("nested");
  EXPECT_EQ(convert_file(fixture("nested.pth"), out, options).tensors.size(), 4u);
  EXPECT_EQ(test::check_conversion(shell_quote(fixture("nested.pth")) + " " + shell_quote(out) +
                                   " --key model"),
            0);
  options.state_dict_key = "absent";
  const fs::path none = output("absent");
  EXPECT_THROW(convert_file(fixture("nested.pth"), none, options), Error);
  EXPECT_FALSE(fs::exists(none));
}

TEST_F(Convert, ProgressReachesTheTotal) {
  std::uint64_t last_done = 0, last_total = 0, calls = 0;
  bool monotonic = true;
  ConvertOptions options;
  options.progress = [&](std::uint64_t done, std::uint64_t total) {
    monotonic = monotonic && done >= last_done && done <= total;
    last_done = done;
    last_total = total;
    ++calls;
  };
  convert_file(fixture("dtypes.pt"), output("progress"), options);
  EXPECT_GT(calls, 0u);
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(last_done, last_total);
}

TEST_F(Convert, OutputIsDeterministic) {
  const fs::path a = output("det-a"), b = output("det-b");
  convert_file(fixture("views.pt"), a);
  convert_file(fixture("views.pt"), b);
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  const std::string sa((std::istreambuf_iterator<char>(fa)), {});
  const std::string sb((std::istreambuf_iterator<char>(fb)), {});
  EXPECT_EQ(sa, sb);
}

TEST_F(Convert, ModelDirectory) {
  const fs::path dir = private_dir("model_dir");
  const ConvertReport report = convert_directory(dir);
  EXPECT_EQ(report.outputs, (std::vector<fs::path>{dir / "model.safetensors"}));
  EXPECT_EQ(test::check_conversion("--dir " + shell_quote(dir)), 0);
}

TEST_F(Convert, ShardedDirectory) {
  const fs::path dir = private_dir("sharded_dir");
  const ConvertReport report = convert_directory(dir);
  EXPECT_EQ(report.input_format, "torch-sharded");
  EXPECT_EQ(report.outputs, (std::vector<fs::path>{dir / "model-00001-of-00002.safetensors",
                                                   dir / "model-00002-of-00002.safetensors",
                                                   dir / "model.safetensors.index.json"}));
  EXPECT_EQ(test::check_conversion("--dir " + shell_quote(dir)), 0);
}

// An index that names a tensor its shard lacks is the index's fault (invalid_index), not a
// malformed torch checkpoint's (invalid_checkpoint).
TEST_F(Convert, ShardedDirectoryWhoseIndexDisagreesIsAnInvalidIndex) {
  const fs::path dir = private_dir("sharded_dir");
  const fs::path index = dir / "pytorch_model.bin.index.json";
  std::string json;
  {
    std::ifstream in(index, std::ios::binary);
    json.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string map_key = "\"weight_map\": {";
  const std::size_t at = json.find(map_key);
  ASSERT_NE(at, std::string::npos) << json;
  json.insert(at + map_key.size(), "\"ghost\": \"pytorch_model-00001-of-00002.bin\", ");
  std::ofstream(index, std::ios::binary | std::ios::trunc) << json;
  try {
    convert_directory(dir);
    FAIL() << "converted a directory whose index names a missing tensor";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_index) << e.what();
    EXPECT_NE(std::string(e.what()).find("`ghost`"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
}

TEST_F(Convert, ShardedDirectoryWithAMissingShardLeavesNothing) {
  const fs::path dir = private_dir("sharded_dir");
  fs::remove(dir / "pytorch_model-00002-of-00002.bin");
  EXPECT_THROW(convert_directory(dir), Error);
  EXPECT_FALSE(fs::exists(dir / "model-00001-of-00002.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
}

TEST_F(Convert, DirectoryWithoutCheckpoint) {
  const fs::path dir = output("empty-dir");
  fs::create_directories(dir);
  try {
    convert_directory(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("pytorch_model.bin"), std::string::npos);
  }
}

// No torch needed: the copy and cache helpers on hand-made storages.
TEST(ConvertCopy, GatherMatchesElementPositionsForAnyChunking) {
  detail::ConvertItem item;
  item.dtype = Dtype::I16;
  item.shape = {3, 4};
  item.stride = {1, 5};  // a transposed view with a gap
  item.offset = 2;
  item.bytes = 24;
  item.contiguous = false;
  std::vector<std::byte> storage(64);
  for (std::size_t i = 0; i < storage.size(); ++i) storage[i] = static_cast<std::byte>(i);
  std::vector<std::byte> expected;
  for (std::uint64_t e = 0; e < 12; ++e) {
    const std::uint64_t at = detail::element_position(item, e) * 2;
    expected.push_back(storage[at]);
    expected.push_back(storage[at + 1]);
  }
  for (std::size_t chunk : {1u, 3u, 5u, 24u}) {
    std::vector<std::byte> out(24);
    for (std::size_t off = 0; off < out.size(); off += chunk) {
      const std::size_t n = std::min(chunk, out.size() - off);
      detail::gather(item, storage, off, std::span(out).subspan(off, n));
    }
    EXPECT_EQ(out, expected) << "chunk " << chunk;
  }
}

TEST(ConvertCopy, CacheReadsEachStorageOnceWhenItFits) {
  for (const auto& [budget, loads] : {std::pair<std::uint64_t, std::uint64_t>{10, 4}, {20, 2}}) {
    std::uint64_t calls = 0;
    detail::StorageCache cache(
        [&](const std::string&) {
          ++calls;
          return detail::StorageBytes(std::vector<std::byte>(10));
        },
        {"a", "b", "a", "b"}, {{"a", 10}, {"b", 10}}, budget);
    for (std::size_t use = 0; use < 4; ++use) {
      EXPECT_EQ(cache.acquire(use).size(), 10u);
      cache.release(use);
    }
    EXPECT_EQ(calls, loads) << "budget " << budget;
    EXPECT_EQ(cache.loads(), loads);
  }
}

// Uses that alternate between storages the cache cannot hold together copy them again and
// again; past four times their total (plus 64 MiB) that is refused, naming the input. Views
// of a mapping cost no copy and are not counted.
TEST(ConvertCopy, CacheRefusesToCopyStoragesOverAndOver) {
  constexpr std::uint64_t mib = std::uint64_t{1} << 20;
  std::vector<std::string> uses;
  for (int i = 0; i < 100; ++i) uses.push_back(i % 2 == 0 ? "a" : "b");
  detail::StorageCache copying(
      [](const std::string&) { return detail::StorageBytes(std::vector<std::byte>(mib)); }, uses,
      {{"a", mib}, {"b", mib}}, mib, "alternating.pt");
  try {
    for (std::size_t use = 0; use < uses.size(); ++use) {
      copying.acquire(use);
      copying.release(use);
    }
    FAIL() << "expected the copies to be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_checkpoint);
    EXPECT_NE(std::string(e.what()).find("alternating.pt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("again and again"), std::string::npos) << e.what();
  }
  EXPECT_EQ(copying.loads(), 73u);  // 72 MiB are allowed, the 73rd copy is one too many

  std::vector<std::byte> file(2 * mib);
  const auto source = make_memory_source(file, "mapped");
  detail::StorageCache viewing(
      [&](const std::string& key) {
        return detail::StorageBytes(*source, key == "a" ? 0 : mib, mib);
      },
      uses, {{"a", mib}, {"b", mib}}, mib, "mapped");
  for (std::size_t use = 0; use < uses.size(); ++use) {
    EXPECT_EQ(viewing.acquire(use).size(), mib);
    viewing.release(use);
  }
  EXPECT_EQ(viewing.loads(), 100u);
}

// A mapped storage's pages are handed back once no later use needs it, and only then.
TEST(ConvertCopy, CacheReleasesMappedStoragesAfterTheirLastUse) {
  class RecordingSource final : public Source {
   public:
    std::vector<std::pair<std::uint64_t, std::uint64_t>> released;
    std::uint64_t size() const noexcept override { return bytes_.size(); }
    void read_at(std::uint64_t, std::span<std::byte>) const override {}
    std::span<const std::byte> mapped() const noexcept override { return bytes_; }
    const std::string& name() const noexcept override { return name_; }
    void release(std::uint64_t offset, std::uint64_t size) const noexcept override {
      const_cast<RecordingSource*>(this)->released.emplace_back(offset, size);
    }

   private:
    std::vector<std::byte> bytes_ = std::vector<std::byte>(30);
    std::string name_ = "recording";
  };
  RecordingSource source;
  const std::map<std::string, std::uint64_t> offsets{{"a", 0}, {"b", 10}, {"c", 20}};
  detail::StorageCache cache(
      [&](const std::string& key) { return detail::StorageBytes(source, offsets.at(key), 10); },
      {"a", "b", "a", "c"}, {{"a", 10}, {"b", 10}, {"c", 10}}, 30);
  const std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> after_use{
      {}, {{10, 10}}, {{10, 10}, {0, 10}}, {{10, 10}, {0, 10}, {20, 10}}};
  for (std::size_t use = 0; use < 4; ++use) {
    EXPECT_EQ(cache.acquire(use).data(), source.mapped().data() + offsets.at(use == 3   ? "c"
                                                                             : use == 1 ? "b"
                                                                                        : "a"));
    cache.release(use);
    EXPECT_EQ(source.released, after_use[use]) << "after use " << use;
  }
}

// A plan of one U8 tensor "t": the whole of `source`, viewed in place.
detail::ConvertPlan whole_source_plan(const Source& source) {
  detail::ConvertPlan plan;
  detail::ConvertItem item;
  item.name = "t";
  item.dtype = Dtype::U8;
  item.shape = {source.size()};
  item.stride = {1};
  item.storage = "s";
  item.bytes = source.size();
  plan.items.push_back(item);
  plan.storage_bytes.emplace("s", source.size());
  plan.load = [&source](const std::string&) {
    return detail::StorageBytes(source, 0, source.size());
  };
  return plan;
}

// The read-back check is real: a source that changes after its tensor was written (here,
// from the progress callback) is caught, and nothing is left behind.
TEST(ConvertWrite, VerificationCatchesBytesThatDifferFromTheSource) {
  std::vector<std::byte> data(4096, std::byte{7});
  const auto source = make_memory_source(data, "changing");
  const detail::ConvertPlan plan = whole_source_plan(*source);
  ConvertOptions options;
  bool changed = false;
  options.progress = [&](std::uint64_t done, std::uint64_t) {
    // Past the header and the tensor: the file holds the old bytes, the source the new.
    if (!changed && done > data.size()) {
      data[100] = std::byte{8};
      changed = true;
    }
  };
  const fs::path dir = test::unique_path("verify-dir");
  fs::create_directories(dir);
  try {
    detail::write_verified(plan, dir / "out.safetensors", options);
    FAIL() << "expected a verification error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_NE(std::string(e.what()).find("tensor `t` differs from the source"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(changed);
  EXPECT_TRUE(fs::is_empty(dir));
  fs::remove_all(dir);
}

// Unchanged, the same plan writes a file holding exactly the source bytes.
TEST(ConvertWrite, WritesThePlannedBytes) {
  std::vector<std::byte> data(4096);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i * 7);
  const auto source = make_memory_source(data, "steady");
  const detail::ConvertPlan plan = whole_source_plan(*source);
  const fs::path out = test::unique_path("verify-ok");
  detail::write_verified(plan, out, {});
  const File file = File::open(out);
  const auto view = file.view("t").data;
  EXPECT_TRUE(std::equal(view.begin(), view.end(), data.begin(), data.end()));
  fs::remove(out);
}

class ConvertRefuses : public Convert, public ::testing::WithParamInterface<const char*> {};

// Each hostile input is refused and leaves its (otherwise empty) output directory empty:
// no output, no temporary file, and nothing the pickle asked to run has run.
TEST_P(ConvertRefuses, AndLeavesNoFile) {
  const fs::path dir = output("refused-dir");
  fs::create_directories(dir);
  const fs::path out = dir / "out.safetensors";
  try {
    convert_file(fixture(GetParam()), out);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(GetParam()), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_empty(dir));
  EXPECT_FALSE(fs::exists("/tmp/safetensors-pwned"));
}

INSTANTIATE_TEST_SUITE_P(
    Hostile, ConvertRefuses,
    ::testing::Values("bad_numel_larger_than_record.pt", "bad_view_beyond_storage.pt",
                      "bad_view_beyond_storage_2d.pt", "bad_negative_stride.pt",
                      "bad_negative_offset.pt", "bad_negative_size.pt", "bad_same_key_two_types.pt",
                      "bad_same_key_two_sizes.pt", "bad_expansion_bomb.pt", "bad_size_overflow.pt",
                      "bad_missing_record.pt", "bad_rank_mismatch.pt", "bad_complex128.pt",
                      "bad_os_system.pt", "bad_os_system_list.pt", "bad_builtins_eval.pt",
                      "bad_nested_pickle.pt", "bad_quantized.pt", "bad_torchscript.pt",
                      "bad_legacy_count.pt", "bad_legacy_trailing.pt", "bad_legacy_truncated.pt",
                      "legacy_proto0.pt", "bad_plain_pickle.pt", "bad_text.pt", "bad_object.npy"),
    [](const ::testing::TestParamInfo<const char*>& info) {
      std::string name = info.param;
      std::replace(name.begin(), name.end(), '.', '_');
      return name;
    });

// Every dangerous global of make_hostile_pickles.py, called from the data.pkl of a torch zip
// archive and from the main pickle of a legacy torch file: refused as forbidden, named, and
// nothing written. The files are made with the standard library alone: this needs no torch.
TEST(ConvertHostileGlobals, AreRefusedNamedAndWriteNothing) {
  const test::Generated generated = test::run_fixture_script("make_hostile_pickles.py");
  if (generated.status == -1) GTEST_SKIP() << "no " << test::python_interpreter();
  ASSERT_EQ(generated.status, 0) << "make_hostile_pickles.py failed";
  const auto rows = test::read_manifest(generated.dir, "convert.txt");
  ASSERT_GE(rows.size(), 400u);
  const fs::path dir = test::unique_path("hostile-globals");
  fs::create_directories(dir);
  for (const auto& row : rows) {
    ASSERT_EQ(row.size(), 2u);
    SCOPED_TRACE(row[0]);
    try {
      convert_file(generated.dir / row[0], dir / "out.safetensors");
      ADD_FAILURE() << "converted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::forbidden_pickle) << e.what();
      EXPECT_NE(std::string(e.what()).find("`" + row[1] + "`"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(fs::is_empty(dir));
  }
  fs::remove_all(dir);
  fs::remove_all(generated.dir);
}

}  // namespace
}  // namespace safetensors
