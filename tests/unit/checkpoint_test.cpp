// Sharded checkpoints: write_sharded's layout and index bytes, opening directories, indexes
// and single files, parse_size, and every way an index and its shards can disagree.
#include "safetensors/checkpoint.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../../src/checkpoint/index.hpp"
#include "expect_error.hpp"
#include "python_fixtures.hpp"
#include "safetensors/error.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

namespace fs = std::filesystem;

// A unique scratch directory removed with everything in it.
class ScratchDir {
 public:
  ScratchDir() {
    static std::atomic<unsigned> counter{0};
    path_ = test::scratch_dir() /
            ("checkpoint-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const fs::path& path() const noexcept { return path_; }
  fs::path operator/(std::string_view name) const { return path_ / name; }

 private:
  fs::path path_;
};

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_text(const fs::path& path, std::string_view text) {
  test::write_file(path, std::as_bytes(std::span(text)));
}

using test::expect_error;

// U8 tensors `name -> bytes`, the bytes owned here.
class Tensors {
 public:
  Tensors& add(std::string name, std::size_t size, Dtype dtype = Dtype::U8) {
    const std::size_t element = dtype == Dtype::U8 ? 1 : dtype == Dtype::I64 ? 8 : 4;
    auto& bytes = storage_[name];
    bytes.resize(size);
    for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(name.size() + i);
    data_.push_back(TensorData::from_bytes(std::move(name), dtype, {size / element}, bytes));
    return *this;
  }
  std::span<const TensorData> span() const { return data_; }
  const std::vector<std::byte>& bytes(const std::string& name) const { return storage_.at(name); }

 private:
  std::map<std::string, std::vector<std::byte>> storage_;
  std::vector<TensorData> data_;
};

std::vector<std::string> filenames(const std::vector<fs::path>& paths) {
  std::vector<std::string> out;
  for (const fs::path& p : paths) out.push_back(p.filename().string());
  return out;
}

std::vector<std::string> shard_contents(const fs::path& shard) {
  std::vector<std::string> out;
  const File file = File::open(shard);
  for (const TensorInfo& t : file.tensors()) out.push_back(t.name);
  return out;
}

std::vector<std::string> names_of(const Checkpoint& checkpoint) {
  std::vector<std::string> out;
  for (const CheckpointTensor& t : checkpoint.tensors()) out.push_back(t.info->name);
  return out;
}

constexpr std::string_view shard1 = "model-00001-of-00002.safetensors";
constexpr std::string_view shard2 = "model-00002-of-00002.safetensors";

// Two shards: a, b (16 bytes each) in the first, c, d in the second.
struct TwoShards {
  ScratchDir dir;
  Tensors tensors;
  std::vector<fs::path> written;
  TwoShards() {
    tensors.add("d", 16).add("c", 16).add("b", 16).add("a", 16);
    ShardOptions options;
    options.max_shard_size = 32;
    options.write.metadata = Metadata{{"format", "pt"}};
    written = write_sharded(dir.path(), tensors.span(), options);
  }
  fs::path index() const { return dir / index_file_name; }
  void rewrite_index(std::string_view text) const { write_text(index(), text); }
};

std::string index_text(std::string_view weight_map, std::string_view metadata = "") {
  return "{\"metadata\": {" + std::string(metadata) + "}, \"weight_map\": {" +
         std::string(weight_map) + "}}";
}

const std::string good_map = "\"a\": \"" + std::string(shard1) + "\", \"b\": \"" +
                             std::string(shard1) + "\", \"c\": \"" + std::string(shard2) +
                             "\", \"d\": \"" + std::string(shard2) + "\"";

TEST(WriteSharded, WritesShardsAndTransformersIndex) {
  TwoShards s;
  EXPECT_EQ(filenames(s.written),
            (std::vector<std::string>{std::string(shard1), std::string(shard2),
                                      std::string(index_file_name)}));
  EXPECT_EQ(shard_contents(s.dir / shard1), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(shard_contents(s.dir / shard2), (std::vector<std::string>{"c", "d"}));
  EXPECT_EQ(File::open(s.dir / shard2).metadata(), (Metadata{{"format", "pt"}}));
  EXPECT_EQ(read_text(s.index()),
            "{\n"
            "  \"metadata\": {\n"
            "    \"format\": \"pt\",\n"
            "    \"total_size\": 64\n"
            "  },\n"
            "  \"weight_map\": {\n"
            "    \"a\": \"model-00001-of-00002.safetensors\",\n"
            "    \"b\": \"model-00001-of-00002.safetensors\",\n"
            "    \"c\": \"model-00002-of-00002.safetensors\",\n"
            "    \"d\": \"model-00002-of-00002.safetensors\"\n"
            "  }\n"
            "}\n");
}

void expect_two_shards(const Checkpoint& c, const TwoShards& s) {
  ASSERT_EQ(c.files().size(), 2u);
  EXPECT_EQ(names_of(c), (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(c.total_bytes(), 64u);
  EXPECT_EQ(c.metadata(), (Metadata{{"format", "pt"}}));
  EXPECT_EQ(c.index_path(), s.index());
  const CheckpointTensor* found = c.find("c");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->file, &c.files()[1]);
  EXPECT_EQ(found->file->read("c"), s.tensors.bytes("c"));
  EXPECT_EQ(c.find("a")->file, &c.files()[0]);
  EXPECT_EQ(c.find("e"), nullptr);
  EXPECT_EQ(c.find(""), nullptr);
}

TEST(Checkpoint, OpensDirectoryAndIndex) {
  TwoShards s;
  expect_two_shards(Checkpoint::open(s.dir.path()), s);
  expect_two_shards(Checkpoint::open(s.index()), s);
  const Checkpoint pread = Checkpoint::open(s.index(), Backend::pread);
  EXPECT_FALSE(pread.files()[0].zero_copy());
  EXPECT_EQ(pread.find("d")->file->read("d"), s.tensors.bytes("d"));
}

TEST(Checkpoint, CopyPointsAtItsOwnFiles) {
  TwoShards s;
  Checkpoint copy;
  {
    const Checkpoint original = Checkpoint::open(s.dir.path());
    copy = original;
    const Checkpoint constructed(original);
    EXPECT_EQ(constructed.find("d")->file, &constructed.files()[1]);
  }
  expect_two_shards(copy, s);
  Checkpoint moved = std::move(copy);
  expect_two_shards(moved, s);
}

TEST(Checkpoint, OpensSingleFileAndDirectoryOfOne) {
  ScratchDir dir;
  Tensors tensors;
  tensors.add("w", 8, Dtype::F32).add("s", 8, Dtype::I64);
  ShardOptions options;
  options.write.metadata = Metadata{{"k", "v"}};
  const auto written = write_sharded(dir.path(), tensors.span(), options);
  EXPECT_EQ(filenames(written), std::vector<std::string>{"model.safetensors"});
  EXPECT_FALSE(fs::exists(dir / index_file_name));
  for (const fs::path& path : {dir.path(), dir / "model.safetensors"}) {
    const Checkpoint c = Checkpoint::open(path);
    EXPECT_EQ(c.files().size(), 1u);
    EXPECT_EQ(names_of(c), (std::vector<std::string>{"s", "w"}));
    EXPECT_TRUE(c.index_path().empty());
    EXPECT_EQ(c.metadata(), (Metadata{{"k", "v"}}));
    EXPECT_EQ(c.total_bytes(), 16u);
    EXPECT_EQ(c.find("w")->file, &c.files()[0]);
  }
}

TEST(WriteSharded, FillsInTheSingleFileOrder) {
  ScratchDir dir;
  Tensors tensors;
  // Single-file order: I64 before F32 before U8, then by name.
  tensors.add("u", 8).add("f", 8, Dtype::F32).add("i", 8, Dtype::I64).add("e", 8, Dtype::F32);
  ShardOptions options;
  options.max_shard_size = 16;
  options.prefix = "weights";
  const auto written = write_sharded(dir.path(), tensors.span(), options);
  EXPECT_EQ(filenames(written), (std::vector<std::string>{"weights-00001-of-00002.safetensors",
                                                          "weights-00002-of-00002.safetensors",
                                                          std::string(index_file_name)}));
  EXPECT_EQ(shard_contents(written[0]), (std::vector<std::string>{"i", "e"}));
  EXPECT_EQ(shard_contents(written[1]), (std::vector<std::string>{"f", "u"}));
  EXPECT_FALSE(File::open(written[0]).metadata().has_value());
  const Checkpoint c = Checkpoint::open(dir.path());
  EXPECT_FALSE(c.metadata().has_value());
  EXPECT_EQ(names_of(c), (std::vector<std::string>{"e", "f", "i", "u"}));
}

std::vector<std::vector<std::string>> layout(const Tensors& tensors, std::uint64_t limit) {
  ScratchDir dir;
  ShardOptions options;
  options.max_shard_size = limit;
  std::vector<std::vector<std::string>> out;
  for (const fs::path& p : write_sharded(dir.path(), tensors.span(), options)) {
    if (p.extension() == ".safetensors") out.push_back(shard_contents(p));
  }
  return out;
}

TEST(WriteSharded, ShardSizeBoundaries) {
  using Layout = std::vector<std::vector<std::string>>;
  Tensors tens;
  tens.add("a", 10).add("b", 10).add("c", 10);
  EXPECT_EQ(layout(tens, 20), (Layout{{"a", "b"}, {"c"}})) << "exactly at the limit";
  EXPECT_EQ(layout(tens, 19), (Layout{{"a"}, {"b"}, {"c"}})) << "one byte over";
  EXPECT_EQ(layout(tens, 30), (Layout{{"a", "b", "c"}})) << "all in one";
  EXPECT_EQ(layout(tens, 0), (Layout{{"a"}, {"b"}, {"c"}}));
  Tensors big;
  big.add("a", 5).add("big", 50).add("c", 5).add("d", 5);
  EXPECT_EQ(layout(big, 20), (Layout{{"a"}, {"big"}, {"c", "d"}})) << "too large: alone";
  Tensors empty;
  empty.add("a", 20).add("b", 0).add("c", 1);
  EXPECT_EQ(layout(empty, 20), (Layout{{"a", "b"}, {"c"}})) << "empty tensors add nothing";
}

TEST(WriteSharded, NoTensorsGiveOneEmptyFile) {
  ScratchDir dir;
  const auto written = write_sharded(dir.path(), {});
  EXPECT_EQ(filenames(written), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(Checkpoint::open(dir.path()).tensors().size(), 0u);
}

TEST(WriteSharded, CreatesTheDirectory) {
  ScratchDir dir;
  Tensors tensors;
  tensors.add("a", 4);
  write_sharded(dir / "x" / "y", tensors.span());
  EXPECT_TRUE(fs::exists(dir / "x" / "y" / "model.safetensors"));
}

TEST(WriteSharded, RefusesLeftoversOfAnotherShardCount) {
  ScratchDir dir;
  Tensors tensors;
  tensors.add("a", 10).add("b", 10).add("c", 10);
  ShardOptions options;
  options.max_shard_size = 10;
  write_sharded(dir.path(), tensors.span(), options);  // 3 shards
  write_sharded(dir.path(), tensors.span(), options);  // same names: replaced in place
  options.max_shard_size = 20;
  expect_error([&] { write_sharded(dir.path(), tensors.span(), options); },
               ErrorCode::invalid_argument,
               {dir.path().native(), "model-00001-of-00003.safetensors",
                "model-00003-of-00003.safetensors", "Remove them"});
  EXPECT_FALSE(fs::exists(dir / "model-00001-of-00002.safetensors")) << "nothing written";
  options.max_shard_size = 100;
  expect_error([&] { write_sharded(dir.path(), tensors.span(), options); },
               ErrorCode::invalid_argument, {std::string(index_file_name)});
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  options.prefix = "other";  // other prefixes' shards are not ours to judge
  options.max_shard_size = 10;
  EXPECT_NO_THROW(write_sharded(dir.path(), tensors.span(), options));

  ScratchDir single;
  write_sharded(single.path(), tensors.span());
  options.prefix = "model";
  expect_error([&] { write_sharded(single.path(), tensors.span(), options); },
               ErrorCode::invalid_argument, {"`model.safetensors`"});
}

TEST(WriteSharded, RefusesBadInput) {
  ScratchDir dir;
  Tensors tensors;
  tensors.add("a", 4).add("a", 4);
  expect_error([&] { write_sharded(dir.path(), tensors.span()); }, ErrorCode::duplicate_key, {"a"});
  Tensors ok;
  ok.add("a", 4).add("b", 4);
  for (std::string prefix : {"", "a/b", "..", "x\\y"}) {
    ShardOptions options;
    options.prefix = prefix;
    expect_error([&] { write_sharded(dir.path(), ok.span(), options); },
                 ErrorCode::invalid_argument, {"prefix"});
  }
  ShardOptions options;
  options.max_shard_size = 4;
  options.write.metadata = Metadata{{"total_size", "1"}};
  expect_error([&] { write_sharded(dir.path(), ok.span(), options); }, ErrorCode::invalid_argument,
               {"total_size"});
  Tensors bad_utf8;
  bad_utf8.add("a\xff", 4).add("b", 4);
  options.write.metadata.reset();
  expect_error([&] { write_sharded(dir.path(), bad_utf8.span(), options); },
               ErrorCode::invalid_argument, {"UTF-8"});
  EXPECT_TRUE(fs::is_empty(dir.path())) << "refused before writing";
}

// Byte sequences that are not UTF-8: surrogate code points (which CESU-8 and careless
// encoders produce, and which Python's json cannot write as one character), overlong forms,
// code points past U+10FFFF, truncated and stray bytes.
const std::vector<std::string> not_utf8 = {
    "\xed\xa0\x80",              // U+D800, first high surrogate
    "\xed\xaf\xbf",              // U+DBFF, last high surrogate
    "\xed\xb0\x80",              // U+DC00, first low surrogate
    "\xed\xbf\xbf",              // U+DFFF, last low surrogate
    "\xed\xa0\xbd\xed\xb8\x80",  // U+1F600 as a CESU-8 surrogate pair
    "\xc0\x80",                  // overlong NUL
    "\xc1\xbf",                  // overlong U+007F
    "\xe0\x9f\xbf",              // overlong U+07FF
    "\xf0\x8f\xbf\xbf",          // overlong U+FFFF
    "\xf4\x90\x80\x80",          // U+110000
    "\xf5\x80\x80\x80",
    "\xff",
    "\x80",
    "\xe2\x82",
    "\xf0\x9f\x98",
};

// checkpoint_index_json writes what Python's json.dumps writes, which has no spelling for
// these: every place a string goes (tensor name, shard name, metadata key and value) refuses.
TEST(IndexJson, RefusesWhatIsNotUtf8) {
  for (const std::string& bad : not_utf8) {
    SCOPED_TRACE(::testing::PrintToString(bad));
    const std::string text = "a" + bad + "z";
    const auto refuses = [&](const std::vector<std::pair<std::string, std::string>>& weight_map,
                             const std::optional<Metadata>& metadata) {
      expect_error([&] { (void)detail::checkpoint_index_json(weight_map, 4, metadata); },
                   ErrorCode::invalid_argument, {"not valid UTF-8"});
    };
    refuses({{text, "model-00001-of-00001.safetensors"}}, std::nullopt);
    refuses({{"t", text}}, std::nullopt);
    refuses({{"t", "s"}}, Metadata{{text, "v"}});
    refuses({{"t", "s"}}, Metadata{{"k", text}});
  }
}

// The code points next to the refused ranges are written, as json.dumps escapes them.
TEST(IndexJson, WritesTheCodePointsAroundTheRefusedOnes) {
  const std::vector<std::pair<std::string, std::string>> table = {
      {"\xed\x9f\xbf", "\\ud7ff"},             // U+D7FF, below the surrogates
      {"\xee\x80\x80", "\\ue000"},             // U+E000, above them
      {"\xc2\x80", "\\u0080"},                 // smallest two-byte form
      {"\xe0\xa0\x80", "\\u0800"},             // smallest three-byte form
      {"\xf0\x90\x80\x80", "\\ud800\\udc00"},  // U+10000, smallest four-byte form
      {"\xf4\x8f\xbf\xbf", "\\udbff\\udfff"},  // U+10FFFF, the last code point
  };
  for (const auto& [utf8, escaped] : table) {
    const std::string json = detail::checkpoint_index_json({{"t" + utf8, "s" + utf8}}, 4,
                                                           Metadata{{"k" + utf8, "v" + utf8}});
    for (const char* prefix : {"\"t", "\"s", "\"k", "\"v"}) {
      EXPECT_NE(json.find(prefix + escaped + "\""), std::string::npos)
          << prefix << escaped << " in\n"
          << json;
    }
  }
}

// The public writer refuses a surrogate in a tensor name before writing anything.
TEST(WriteSharded, RefusesSurrogatesInNames) {
  ScratchDir dir;
  ShardOptions options;
  options.max_shard_size = 4;
  for (const std::string& bad : {std::string("\xed\xa0\x80"), std::string("\xed\xbf\xbf")}) {
    Tensors tensors;
    tensors.add("a" + bad, 4).add("b", 4);
    expect_error([&] { write_sharded(dir.path(), tensors.span(), options); },
                 ErrorCode::invalid_argument, {"UTF-8"});
    EXPECT_TRUE(fs::is_empty(dir.path())) << "refused before writing";
  }
}

TEST(ParseSize, Table) {
  const std::vector<std::pair<std::string_view, std::uint64_t>> table = {
      {"0", 0},
      {"123", 123},
      {"123B", 123},
      {"5GB", 5'000'000'000},
      {"5gb", 5'000'000'000},
      {"500MB", 500'000'000},
      {"500mB", 500'000'000},
      {"10KB", 10'000},
      {"2TB", 2'000'000'000'000},
      {"2GiB", std::uint64_t{2} << 30},
      {"2gib", std::uint64_t{2} << 30},
      {"3KiB", 3072},
      {"7MiB", 7 << 20},
      {"1TiB", std::uint64_t{1} << 40},
      {"1.5GB", 1'500'000'000},
      {"0.5KiB", 512},
      {"1.0001KB", 1000},
      {"5 GB", 5'000'000'000},
      {"18446744073709551615", 18446744073709551615u},
  };
  for (const auto& [text, bytes] : table) {
    EXPECT_EQ(parse_size(text), bytes) << text;
  }
}

TEST(ParseSize, Refusals) {
  for (std::string_view text : {"", "GB", "-5GB", "5XB", "5 G B", "5  GB", "5.GB", " 5GB", "5GB ",
                                "1e3", "0x10", "18446744073709551616", "20000000000GB", "5iB"}) {
    std::string quoted = "`";  // built in steps: g++ 12 misreports `"`" + string` (-Wrestrict)
    quoted.append(text).push_back('`');
    expect_error([&] { (void)parse_size(text); }, ErrorCode::invalid_argument, {quoted});
  }
}

TEST(CheckpointIndex, AcceptsExtraMetadataAndNoTotalSize) {
  TwoShards s;
  s.rewrite_index(index_text(good_map, "\"total_parameters\": 64, \"note\": \"x\", \"n\": null"));
  EXPECT_EQ(Checkpoint::open(s.index()).metadata(), (Metadata{{"note", "x"}}));
  s.rewrite_index("{\"weight_map\": {" + good_map + "}, \"other\": [1, {\"deep\": true}]}");
  const Checkpoint c = Checkpoint::open(s.index());
  EXPECT_FALSE(c.metadata().has_value());
  EXPECT_EQ(c.total_bytes(), 64u);
  // Two spellings of one shard are one file.
  s.rewrite_index(index_text("\"a\": \"./" + std::string(shard1) + "\", \"b\": \"" +
                             std::string(shard1) + "\", \"c\": \"" + std::string(shard2) +
                             "\", \"d\": \"" + std::string(shard2) + "\""));
  EXPECT_EQ(Checkpoint::open(s.index()).files().size(), 2u);
}

// mlx-lm writes the shards' file sizes as total_size, and scripts that drop tensors leave it
// as it was: the checkpoint still opens, keeping the number as written.
TEST(CheckpointIndex, TotalSizeIsKeptNotChecked) {
  TwoShards s;
  s.rewrite_index(index_text(good_map, "\"total_size\": 100"));
  const Checkpoint wrong = Checkpoint::open(s.index());
  EXPECT_EQ(wrong.declared_total_size(), std::optional<std::uint64_t>{100});
  EXPECT_EQ(wrong.total_bytes(), 64u);
  EXPECT_EQ(wrong.tensors().size(), 4u);
  s.rewrite_index(index_text(good_map, "\"total_size\": 64"));
  EXPECT_EQ(Checkpoint::open(s.index()).declared_total_size(), std::optional<std::uint64_t>{64});
  s.rewrite_index(index_text(good_map));
  EXPECT_FALSE(Checkpoint::open(s.index()).declared_total_size().has_value());
  EXPECT_FALSE(Checkpoint::open(s.dir / shard1).declared_total_size().has_value());
}

TEST(CheckpointIndex, IndexWrittenByPythonJson) {
  if (!test::have_python()) GTEST_SKIP() << "no " << test::python_interpreter();
  ScratchDir dir;
  Tensors tensors;
  tensors.add("emb\xc3\xa9", 16).add("w\xf0\x9f\x98\x80", 16).add("q\"\\\n", 16).add("z", 16);
  ShardOptions options;
  options.max_shard_size = 32;
  options.write.metadata = Metadata{{"format", "pt"}};
  write_sharded(dir.path(), tensors.span(), options);
  const std::string ours = read_text(dir / index_file_name);
  // transformers: json.dumps(index, indent=2, sort_keys=True) + "\n", from the shards' headers.
  const fs::path script = dir / "index.py";
  write_text(
      script,
      "import json, os, struct, sys\n"
      "d = sys.argv[1]\n"
      "weight_map, total = {}, 0\n"
      "for name in sorted(os.listdir(d)):\n"
      "    if not name.endswith('.safetensors'): continue\n"
      "    with open(os.path.join(d, name), 'rb') as f:\n"
      "        n = struct.unpack('<Q', f.read(8))[0]\n"
      "        header = json.loads(f.read(n))\n"
      "    for key, value in header.items():\n"
      "        if key == '__metadata__': continue\n"
      "        weight_map[key] = name\n"
      "        total += value['data_offsets'][1] - value['data_offsets'][0]\n"
      "index = {'metadata': {'total_size': total, 'format': 'pt'}, 'weight_map': weight_map}\n"
      "with open(os.path.join(d, 'py.index.json'), 'w') as f:\n"
      "    f.write(json.dumps(index, indent=2, sort_keys=True) + '\\n')\n"
      "with open(os.path.join(d, 'dump.index.json'), 'w') as f:\n"
      "    json.dump(index, f, indent=2)\n");
  const std::string command = test::python_command() + " " + test::shell_quote(script.native()) +
                              " " + test::shell_quote(dir.path().native());
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  EXPECT_EQ(ours, read_text(dir / "py.index.json"));
  for (std::string_view name : {"py.index.json", "dump.index.json"}) {
    const Checkpoint c = Checkpoint::open(dir / name);
    EXPECT_EQ(c.files().size(), 2u) << name;
    EXPECT_EQ(c.total_bytes(), 64u) << name;
    ASSERT_NE(c.find("w\xf0\x9f\x98\x80"), nullptr) << name;
    EXPECT_EQ(c.find("q\"\\\n")->file->read("q\"\\\n"), tensors.bytes("q\"\\\n"));
  }
}

struct Refusal {
  std::string_view label;
  std::string index;
  std::vector<std::string> parts;
};

TEST(CheckpointIndex, RefusesDisagreement) {
  const std::string s1(shard1), s2(shard2);
  const std::string map_bc = "\"b\": \"" + s1 + "\", \"c\": \"" + s2 + "\", \"d\": \"" + s2 + "\"";
  const std::vector<Refusal> refusals = {
      {"missing tensor",
       index_text(good_map + ", \"ghost\": \"" + s2 + "\""),
       {"tensor `ghost` is mapped to `" + s2 + "` but no shard has it"}},
      {"wrong shard",
       index_text("\"a\": \"" + s2 + "\", " + map_bc),
       {"tensor `a` is mapped to `" + s2 + "` but only `" + s1 + "` has it"}},
      {"unmapped shard tensor",
       index_text(map_bc),
       {"tensor `a` is in shard `" + s1 + "` but the index does not map it"}},
      {"float total_size",
       index_text(good_map, "\"total_size\": 64.0"),
       {"total_size", "non-negative integer", "64"}},
      {"negative total_size",
       index_text(good_map, "\"total_size\": -64"),
       {"total_size", "negative"}},
      {"string total_size",
       index_text(good_map, "\"total_size\": \"64\""),
       {"total_size", "a string"}},
      {"malformed JSON", index_text(good_map) + ",", {"not valid JSON"}},
      {"truncated JSON", "{\"weight_map\": {\"a\": ", {"not valid JSON"}},
      {"not an object", "[1]", {"must be a JSON object, got an array"}},
      {"duplicate key",
       index_text(good_map + ", \"a\": \"" + s1 + "\""),
       {"`weight_map` maps tensor `a` twice"}},
      {"duplicate weight_map",
       "{\"weight_map\": {" + good_map + "}, \"weight_map\": {}}",
       {"`weight_map`", "appears twice"}},
      {"duplicate metadata key",
       index_text(good_map, "\"x\": \"1\", \"x\": \"2\""),
       {"`x` appears twice"}},
      {"no weight_map", "{\"metadata\": {}}", {"no `weight_map`"}},
      {"weight_map not an object", "{\"weight_map\": []}", {"`weight_map` must be an object"}},
      {"shard not a string", index_text("\"a\": 1"), {"tensor `a`", "an integer"}},
      {"metadata not an object",
       "{\"metadata\": 1, \"weight_map\": {" + good_map + "}}",
       {"`metadata` must be an object"}},
      {"parent shard name",
       index_text(good_map + ", \"e\": \"../x.safetensors\""),
       {"shard name `../x.safetensors` leaves the directory"}},
      {"inner parent",
       index_text("\"e\": \"sub/../../x.safetensors\""),
       {"`sub/../../x.safetensors` leaves the directory"}},
      {"absolute shard name",
       index_text("\"e\": \"/etc/x.safetensors\""),
       {"shard name `/etc/x.safetensors` is an absolute path"}},
      {"backslash", index_text("\"e\": \"..\\\\x.safetensors\""), {"backslash"}},
      {"NUL", index_text("\"e\": \"x\\u0000.safetensors\""), {"NUL"}},
      {"empty shard name", index_text("\"e\": \"\""), {"is empty"}},
      {"shard file missing",
       index_text(good_map + ", \"e\": \"model-00003.safetensors\""),
       {"shard `model-00003.safetensors` does not exist"}},
  };
  TwoShards s;
  for (const Refusal& r : refusals) {
    SCOPED_TRACE(std::string(r.label));
    s.rewrite_index(r.index);
    const fs::path index = s.index();
    std::vector<std::string_view> parts = {index.native()};
    parts.insert(parts.end(), r.parts.begin(), r.parts.end());
    try {
      (void)Checkpoint::open(s.dir.path());
      ADD_FAILURE() << "opened";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_index) << e.what();
      for (std::string_view part : parts) {
        EXPECT_NE(std::string_view(e.what()).find(part), std::string_view::npos)
            << "'" << e.what() << "' lacks '" << part << "'";
      }
    }
  }
}

TEST(CheckpointIndex, RefusesTensorInTwoShards) {
  ScratchDir dir;
  const std::string header = R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  const std::vector<std::byte> data(2);
  test::write_file(dir / "one.safetensors", test::file_bytes(header, data));
  test::write_file(dir / "two.safetensors", test::file_bytes(header, data));
  write_text(dir / index_file_name, index_text("\"x\": \"one.safetensors\""));
  // two.safetensors is not named by the index, so it is no part of the checkpoint.
  EXPECT_EQ(Checkpoint::open(dir.path()).files().size(), 1u);
  write_text(dir / "both.json",
             index_text("\"x\": \"one.safetensors\", \"y\": \"two.safetensors\""));
  expect_error([&] { (void)Checkpoint::open(dir / "both.json"); }, ErrorCode::invalid_index,
               {(dir / "both.json").native(),
                "tensor `x` is in both `one.safetensors` and `two.safetensors`"});
}

TEST(CheckpointIndex, RefusesSymlinkLeavingTheDirectory) {
  ScratchDir outside;
  Tensors tensors;
  tensors.add("a", 4);
  write_sharded(outside.path(), tensors.span());
  ScratchDir dir;
  fs::create_directory(dir / "sub");
  fs::create_symlink(outside / "model.safetensors", dir / "evil.safetensors");
  fs::create_directory_symlink(outside.path(), dir / "sub" / "link");
  write_text(dir / index_file_name, index_text("\"a\": \"evil.safetensors\""));
  expect_error([&] { (void)Checkpoint::open(dir.path()); }, ErrorCode::invalid_index,
               {"`evil.safetensors` leaves the directory", fs::canonical(outside.path()).native()});
  write_text(dir / index_file_name, index_text("\"a\": \"sub/link/model.safetensors\""));
  expect_error([&] { (void)Checkpoint::open(dir.path()); }, ErrorCode::invalid_index,
               {"`sub/link/model.safetensors` leaves the directory"});
  // A link that stays inside is fine, as is a shard in a subdirectory.
  fs::copy_file(outside / "model.safetensors", dir / "sub" / "real.safetensors");
  fs::create_symlink("sub/real.safetensors", dir / "inside.safetensors");
  write_text(dir / index_file_name, index_text("\"a\": \"inside.safetensors\""));
  EXPECT_EQ(Checkpoint::open(dir.path()).tensors().size(), 1u);
  write_text(dir / index_file_name, index_text("\"a\": \"sub/real.safetensors\""));
  EXPECT_EQ(Checkpoint::open(dir.path()).tensors().size(), 1u);
}

TEST(CheckpointIndex, InvalidShardKeepsItsCodeAndNamesTheIndex) {
  TwoShards s;
  const std::vector<std::byte> bytes = test::file_bytes("{}");
  test::write_file(s.dir / shard2, std::span(bytes).first(4));
  expect_error([&] { (void)Checkpoint::open(s.dir.path()); }, ErrorCode::header_too_small,
               {s.index().native(), std::string(shard2)});
}

TEST(Checkpoint, DirectoryWithoutIndex) {
  ScratchDir dir;
  expect_error([&] { (void)Checkpoint::open(dir.path()); }, ErrorCode::invalid_index,
               {dir.path().native(), "empty"});
  write_text(dir / "notes.txt", "x");
  expect_error([&] { (void)Checkpoint::open(dir.path()); }, ErrorCode::invalid_index,
               {"no *.safetensors file", "`notes.txt`"});
  Tensors tensors;
  tensors.add("a", 4);
  write_sharded(dir / "a", tensors.span());
  write_sharded(dir / "b", tensors.span());
  fs::rename(dir / "a" / "model.safetensors", dir / "a.safetensors");
  EXPECT_EQ(Checkpoint::open(dir.path()).files().at(0).name(), (dir / "a.safetensors").native());
  fs::rename(dir / "b" / "model.safetensors", dir / "b.safetensors");
  expect_error([&] { (void)Checkpoint::open(dir.path()); }, ErrorCode::invalid_index,
               {"2 *.safetensors files", "`a.safetensors`, `b.safetensors`", "no index"});
  // An index under another name (diffusers) is found when it is the only one.
  write_text(dir / "diffusion_pytorch_model.safetensors.index.json",
             index_text("\"a\": \"a.safetensors\"", "\"total_size\": 4"));
  EXPECT_EQ(Checkpoint::open(dir.path()).index_path(),
            dir / "diffusion_pytorch_model.safetensors.index.json");
  expect_error([&] { (void)Checkpoint::open(dir / "missing.json"); }, ErrorCode::io,
               {"missing.json"});
  expect_error([&] { (void)Checkpoint::open(dir / "missing.safetensors"); }, ErrorCode::io,
               {"missing.safetensors"});
}

}  // namespace
}  // namespace safetensors
