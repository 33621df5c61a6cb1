// The OS layer's file helpers: the descriptor owner, whole reads and writes, opening only
// regular files, and errors that keep the system's error code.
#include "io/posix.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "expect_error.hpp"
#include "safetensors/error.hpp"
#include "test_files.hpp"

namespace safetensors::detail {
namespace {

namespace fs = std::filesystem;
using test::ScratchFile;

bool is_open_descriptor(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

TEST(OsError, KeepsTheErrnoAndNamesFileAndOperation) {
  try {
    throw_os_error("model.safetensors", "cannot open", ENOENT);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_EQ(e.os_error(), std::errc::no_such_file_or_directory);
    EXPECT_EQ(std::string(e.what()),
              "model.safetensors: cannot open: " + std::system_category().message(ENOENT));
  }
}

TEST(OsError, ErrorsTheLibraryFindsItselfHaveNone) {
  const Error error(ErrorCode::invalid_header, "bad");
  EXPECT_FALSE(error.os_error());
}

TEST(FileDescriptor, ClosesWhenItGoesAndMovesOwnership) {
  ScratchFile file("descriptor", test::counting_bytes(10));
  int raw = -1;
  {
    FileDescriptor fd = open_regular_file(file.path().string());
    raw = fd.get();
    ASSERT_TRUE(is_open_descriptor(raw));
    FileDescriptor moved = std::move(fd);
    EXPECT_FALSE(fd.is_open());  // NOLINT(bugprone-use-after-move): moved-from is empty
    EXPECT_EQ(moved.get(), raw);
    EXPECT_TRUE(is_open_descriptor(raw));
  }
  EXPECT_FALSE(is_open_descriptor(raw));
}

TEST(FileDescriptor, CloseReportsTheSystemsAnswerOnce) {
  ScratchFile file("descriptor-close", test::counting_bytes(10));
  FileDescriptor fd = open_regular_file(file.path().string());
  EXPECT_EQ(fd.close(), 0);
  EXPECT_FALSE(fd.is_open());
  EXPECT_EQ(fd.close(), 0);  // nothing left to close
  // A number that is no open descriptor: close(2) refuses it with EBADF.
  FileDescriptor stale(::dup(0));
  ASSERT_TRUE(stale.is_open());
  ASSERT_EQ(::close(stale.get()), 0);
  EXPECT_EQ(stale.close(), EBADF);
}

TEST(PreadFull, ReadsEverythingThenStopsShortAtTheEnd) {
  const std::vector<std::byte> bytes = test::counting_bytes(5000);
  ScratchFile file("pread-full", bytes);
  const FileDescriptor fd = open_regular_file(file.path().string());
  std::vector<std::byte> out(3000);
  ReadResult got = pread_full(fd.get(), out, 1000);
  EXPECT_EQ(got.bytes, 3000u);
  EXPECT_EQ(got.error, 0);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), bytes.begin() + 1000));
  got = pread_full(fd.get(), out, 4000);
  EXPECT_EQ(got.bytes, 1000u);
  EXPECT_EQ(got.error, 0);
}

TEST(PreadFull, ReportsTheErrnoOfAFailedRead) {
  std::vector<std::byte> out(10);
  const ReadResult got = pread_full(-1, out, 0);
  EXPECT_EQ(got.bytes, 0u);
  EXPECT_EQ(got.error, EBADF);
}

TEST(PreadExact, RefusesShortReadsAndFailedReads) {
  ScratchFile file("pread-exact", test::counting_bytes(100));
  const FileDescriptor fd = open_regular_file(file.path().string());
  std::vector<std::byte> out(50);
  pread_exact(fd.get(), "f", 50, out);
  test::expect_error([&] { pread_exact(fd.get(), "f", 60, out); }, ErrorCode::io,
                     {"f: unexpected end of file reading 50 bytes at offset 60 (got 40)"});
  try {
    pread_exact(-1, "f", 0, out);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.os_error(), std::errc::bad_file_descriptor);
    EXPECT_NE(std::string(e.what()).find("f: cannot read at offset 0"), std::string::npos);
  }
}

TEST(WriteFull, WritesEverythingOrSaysWhy) {
  const fs::path path = test::unique_path("write-full");
  const std::vector<std::byte> bytes = test::counting_bytes(100000);
  {
    const FileDescriptor fd(::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd.is_open());
    EXPECT_EQ(write_full(fd.get(), bytes), 0);
  }
  EXPECT_EQ(read_regular_file(path.string(), bytes.size()),
            std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  fs::remove(path);
  const FileDescriptor read_only = open_regular_file("/proc/self/exe");
  EXPECT_EQ(write_full(read_only.get(), bytes), EBADF);
  EXPECT_EQ(write_full(read_only.get(), {}), 0);  // nothing to write, nothing asked
}

TEST(OpenRegularFile, MissingFileKeepsENOENT) {
  const std::string missing = test::unique_path("missing").string();
  try {
    (void)open_regular_file(missing);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_EQ(e.os_error(), std::errc::no_such_file_or_directory);
    EXPECT_NE(std::string(e.what()).find(missing + ": cannot open"), std::string::npos);
  }
}

TEST(OpenRegularFile, RefusesDirectoriesWithoutAnOsError) {
  try {
    (void)open_regular_file(test::scratch_dir().string());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_regular_file);
    EXPECT_FALSE(e.os_error());
  }
}

TEST(ReopenDirect, OpensTheSameFileEvenAfterARename) {
  const std::vector<std::byte> bytes = test::counting_bytes(8192);
  ScratchFile file("reopen", bytes);
  const FileDescriptor fd = open_regular_file(file.path().string());
  const fs::path moved = file.path().string() + ".moved";
  fs::rename(file.path(), moved);
  const FileDescriptor direct = reopen_direct(fd.get());
  if (!direct.is_open()) GTEST_SKIP() << "O_DIRECT refused here";
  struct stat a {};
  struct stat b {};
  ASSERT_EQ(::fstat(fd.get(), &a), 0);
  ASSERT_EQ(::fstat(direct.get(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_NE(::fcntl(direct.get(), F_GETFL) & O_DIRECT, 0);
  EXPECT_EQ(::fcntl(fd.get(), F_GETFL) & O_DIRECT, 0);  // the original is left as it was
  fs::remove(moved);
}

TEST(ReopenDirect, NoDescriptorGivesNone) {
  EXPECT_FALSE(reopen_direct(-1).is_open());
}

TEST(FileSize, OfAnOpenFileAndOfNone) {
  ScratchFile file("size", test::counting_bytes(1234));
  const FileDescriptor fd = open_regular_file(file.path().string());
  EXPECT_EQ(file_size(fd.get(), "f"), 1234u);
  test::expect_error([] { (void)file_size(-1, "gone"); }, ErrorCode::io, {"gone: cannot stat"});
}

TEST(ReserveSpace, KeepsTheSizeAndIgnoresMissingFiles) {
  ScratchFile file("reserve", test::counting_bytes(10));
  reserve_space(file.path(), 1 << 20);
  EXPECT_EQ(fs::file_size(file.path()), 10u);
  reserve_space(test::unique_path("reserve-missing"), 1 << 20);  // best effort: no throw
}

}  // namespace
}  // namespace safetensors::detail
