// The scanner over files written by the fixture scripts: hostile pickles are dangerous and
// named, benign torch and numpy files are clean, garbage is unreadable.
#include "safetensors/scan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "python_fixtures.hpp"

namespace safetensors {
namespace {

std::string summary(const ScanReport& r) {
  std::string out = r.format + " " + std::string(verdict_name(r.verdict)) + "\n";
  for (const ScanGlobal& g : r.globals) {
    out += "  global " + g.location + " @" + std::to_string(g.offset) + " " + g.module + "." +
           g.name + (g.allowed ? "" : " NOT ALLOWED") + "\n";
  }
  for (const ScanFinding& f : r.findings) {
    out += "  finding " + f.location + " @" + std::to_string(f.offset) + " " +
           (f.dangerous ? "DANGEROUS " : "") + f.message + "\n";
  }
  return out;
}

bool names_global(const ScanReport& r, const std::string& full) {
  return std::any_of(r.globals.begin(), r.globals.end(), [&](const ScanGlobal& g) {
    return !g.allowed && g.module + "." + g.name == full;
  });
}

// Checks every "FILE VERDICT NAME" line of a fixture script's manifest.
void check_manifest(const test::Generated& generated, std::size_t at_least) {
  const auto manifest = test::read_manifest(generated.dir);
  ASSERT_GE(manifest.size(), at_least);
  for (const auto& row : manifest) {
    ASSERT_EQ(row.size(), 3u);
    const ScanReport report = scan_file(generated.dir / row[0]);
    SCOPED_TRACE(row[0] + ": " + summary(report));
    EXPECT_EQ(verdict_name(report.verdict), row[1]);
    if (row[2] != "-") {
      EXPECT_TRUE(names_global(report, row[2])) << "expected " << row[2];
    }
  }
}

class ScanHostile : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { generated_ = test::run_fixture_script("make_hostile_pickles.py"); }
  void SetUp() override {
    if (generated_.status == -1) GTEST_SKIP() << "no " << test::python_interpreter();
    ASSERT_EQ(generated_.status, 0) << "make_hostile_pickles.py failed";
  }
  static ScanReport scan(const std::string& name) { return scan_file(generated_.dir / name); }
  static test::Generated generated_;
};

test::Generated ScanHostile::generated_;

TEST_F(ScanHostile, EachFileHasItsVerdict) {
  // Over 200 dangerous globals, each in a raw pickle, a torch zip and a legacy torch file.
  check_manifest(generated_, 700);
}

TEST_F(ScanHostile, ForbiddenGlobalIsNamedWithItsOffset) {
  const ScanReport r = scan("os_system.pkl");
  EXPECT_EQ(r.format, "pickle");
  ASSERT_EQ(r.globals.size(), 1u);
  EXPECT_EQ(r.globals[0].module, "os");
  EXPECT_EQ(r.globals[0].name, "system");
  EXPECT_EQ(r.globals[0].offset, 2u);
  EXPECT_EQ(r.globals[0].location, "");
  ASSERT_FALSE(r.findings.empty());
  EXPECT_TRUE(r.findings[0].dangerous);
  EXPECT_NE(r.findings[0].message.find("`os.system`"), std::string::npos);
}

TEST_F(ScanHostile, SecondPickleIsScannedToo) {
  const ScanReport r = scan("second_pickle.pkl");
  ASSERT_FALSE(r.globals.empty());
  const ScanGlobal& g = r.globals.back();
  EXPECT_EQ(g.module + "." + g.name, "os.system");
  EXPECT_GT(g.offset, 2u);  // offsets are in the file, not in the second pickle
  EXPECT_NE(g.location.find("pickle at"), std::string::npos);
}

TEST_F(ScanHostile, AppendedZipIsNamed) {
  const ScanReport r = scan("pickle_then_zip.pkl");
  const bool named = std::any_of(r.findings.begin(), r.findings.end(), [](const ScanFinding& f) {
    return f.dangerous && f.message.find("zip") != std::string::npos;
  });
  EXPECT_TRUE(named) << summary(r);
}

TEST_F(ScanHostile, ZipEntriesAreLocated) {
  const ScanReport r = scan("zip_evil.pt");
  EXPECT_EQ(r.format, "torch-zip");
  ASSERT_FALSE(r.globals.empty());
  EXPECT_EQ(r.globals[0].location, "archive/data.pkl");
}

TEST_F(ScanHostile, ScanGoesOnAfterAForbiddenGlobal) {
  const ScanReport r = scan("two_globals.pkl");
  ASSERT_EQ(r.globals.size(), 2u) << summary(r);
  EXPECT_EQ(r.globals[0].name, "system");
  EXPECT_EQ(r.globals[1].name, "exec");
}

TEST(Scan, VerdictNames) {
  EXPECT_EQ(verdict_name(ScanVerdict::clean), "clean");
  EXPECT_EQ(verdict_name(ScanVerdict::dangerous), "dangerous");
  EXPECT_EQ(verdict_name(ScanVerdict::unreadable), "unreadable");
}

TEST(Scan, MissingFileIsUnreadable) {
  const ScanReport r = scan_file(test::scratch_dir() / "no-such-file.pkl");
  EXPECT_EQ(r.verdict, ScanVerdict::unreadable);
  EXPECT_FALSE(r.findings.empty());
}

class ScanCheckpoints : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { generated_ = test::run_fixture_script("make_checkpoints.py"); }
  void SetUp() override {
    if (generated_.status == -1) GTEST_SKIP() << "no " << test::python_interpreter();
    if (generated_.status == test::missing_module_status) {
      GTEST_SKIP() << test::python_interpreter() << " lacks torch or numpy";
    }
    ASSERT_EQ(generated_.status, 0) << "make_checkpoints.py failed";
  }
  static ScanReport scan(const std::string& name) { return scan_file(generated_.dir / name); }
  static test::Generated generated_;
};

test::Generated ScanCheckpoints::generated_;

TEST_F(ScanCheckpoints, EachFileHasItsVerdict) {
  check_manifest(generated_, 11);
}

TEST_F(ScanCheckpoints, FormatsAreRecognised) {
  EXPECT_EQ(scan("state_p2.pt").format, "torch-zip");
  EXPECT_EQ(scan("state_legacy.pt").format, "torch-legacy");
  EXPECT_EQ(scan("plain.npy").format, "npy");
  EXPECT_EQ(scan("plain.npz").format, "npz");
}

TEST_F(ScanCheckpoints, TorchGlobalsAreListedAsAllowed) {
  const ScanReport r = scan("state_p4.pt");
  const bool rebuild = std::any_of(r.globals.begin(), r.globals.end(), [](const ScanGlobal& g) {
    return g.allowed && g.module == "torch._utils" && g.name == "_rebuild_tensor_v2";
  });
  EXPECT_TRUE(rebuild) << summary(r);
}

TEST_F(ScanCheckpoints, LegacyPicklesAreAllScanned) {
  const ScanReport r = scan("state_legacy.pt");
  const bool main = std::any_of(r.globals.begin(), r.globals.end(),
                                [](const ScanGlobal& g) { return g.location == "main"; });
  EXPECT_TRUE(main) << summary(r);
}

}  // namespace
}  // namespace safetensors
