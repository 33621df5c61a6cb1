// AtomicFile and write_file on a real filesystem: commit semantics, permissions, a writer
// killed mid-write, readers holding the old mapping, errors and files beyond 4 GiB.
#include "safetensors/atomic_file.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/error.hpp"
#include "safetensors/writer.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

namespace fs = std::filesystem;

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s));
}

std::string read_whole_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Temporary files AtomicFile would create for `target`.
std::vector<fs::path> temporaries_of(const fs::path& target) {
  const std::string prefix = "." + target.filename().string() + ".tmp-";
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(target.parent_path())) {
    if (entry.path().filename().string().rfind(prefix, 0) == 0) found.push_back(entry.path());
  }
  return found;
}

// A scratch path that is removed, with any temporaries beside it, at the end of the test.
class ScratchPath {
 public:
  explicit ScratchPath(std::string_view stem) : path_(test::unique_path(stem)) {}
  ~ScratchPath() {
    std::error_code ignored;
    for (const fs::path& temp : temporaries_of(path_)) fs::remove(temp, ignored);
    fs::remove(path_, ignored);
  }
  const fs::path& path() const noexcept { return path_; }

 private:
  fs::path path_;
};

class UmaskGuard {
 public:
  explicit UmaskGuard(mode_t mask) : previous_(::umask(mask)) {}
  ~UmaskGuard() { ::umask(previous_); }

 private:
  mode_t previous_;
};

std::uint64_t free_bytes(const fs::path& dir) {
  struct statvfs info {};
  if (::statvfs(dir.c_str(), &info) != 0) return 0;
  return std::uint64_t{info.f_bavail} * info.f_frsize;
}

void pread_exact(int fd, std::uint64_t offset, std::span<std::byte> out) {
  ASSERT_EQ(::pread(fd, out.data(), out.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(out.size()));
}

TEST(AtomicFile, CommitCreatesTheFile) {
  ScratchPath target("atomic-commit");
  {
    AtomicFile file(target.path());
    EXPECT_EQ(file.target(), target.path());
    EXPECT_EQ(file.temp_path().parent_path(), target.path().parent_path());
    EXPECT_EQ(file.temp_path().filename().string().rfind(
                  "." + target.path().filename().string() + ".tmp-", 0),
              0u)
        << file.temp_path();
    EXPECT_TRUE(fs::exists(file.temp_path()));
    file.write(bytes_of("hello, "));
    file.write({});
    file.write(bytes_of("world"));
    EXPECT_FALSE(fs::exists(target.path()));
    file.commit();
    EXPECT_FALSE(fs::exists(file.temp_path()));
    EXPECT_THROW(file.write(bytes_of("late")), Error);
  }
  EXPECT_EQ(read_whole_file(target.path()), "hello, world");
  EXPECT_TRUE(temporaries_of(target.path()).empty());
}

TEST(AtomicFile, WithoutCommitNothingRemains) {
  ScratchPath target("atomic-abandoned");
  fs::path temp;
  {
    AtomicFile file(target.path());
    temp = file.temp_path();
    file.write(bytes_of("never committed"));
  }
  EXPECT_FALSE(fs::exists(target.path()));
  EXPECT_FALSE(fs::exists(temp));
  EXPECT_TRUE(temporaries_of(target.path()).empty());
}

TEST(AtomicFile, ExistingTargetIsUntouchedUntilCommit) {
  ScratchPath target("atomic-replace");
  test::write_file(target.path(), bytes_of("old"));
  AtomicFile file(target.path());
  file.write(bytes_of("new content"));
  EXPECT_EQ(read_whole_file(target.path()), "old");
  file.commit();
  EXPECT_EQ(read_whole_file(target.path()), "new content");
}

TEST(AtomicFile, PermissionsFollowTheUmask) {
  for (const auto& [mask, mode] : {std::pair<mode_t, mode_t>{022, 0644}, {027, 0640}}) {
    ScratchPath target("atomic-umask");
    {
      UmaskGuard guard(mask);
      AtomicFile file(target.path());
      file.write(bytes_of("x"));
      file.commit();
    }
    struct stat info {};
    ASSERT_EQ(::stat(target.path().c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, mode) << "umask " << std::oct << mask;
  }
}

TEST(AtomicFile, MissingDirectoryIsAnIoErrorNamingThePath) {
  const fs::path target = test::scratch_dir() / "no-such-directory-for-atomic" / "x.safetensors";
  try {
    AtomicFile file(target);
    FAIL() << "expected an io error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_NE(std::string(e.what()).find(target.string()), std::string::npos) << e.what();
  }
}

// True when creating `target` fails with an io error whose message names it.
bool fails_with_io_error_naming(const fs::path& target) {
  try {
    write_file(target, {});
  } catch (const Error& e) {
    return e.code() == ErrorCode::io &&
           std::string(e.what()).find(target.string()) != std::string::npos;
  }
  return false;
}

TEST(AtomicFile, UnwritableDirectoryIsAnIoErrorNamingThePath) {
  const fs::path dir = test::unique_path("atomic-readonly-dir");
  fs::create_directory(dir);
  fs::permissions(dir, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                           fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  const fs::path target = dir / "x.safetensors";
  if (::geteuid() != 0) {
    EXPECT_TRUE(fails_with_io_error_naming(target));
  } else {
    // Root ignores directory permissions: check as an unprivileged user in a child.
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
      ::_exit(fails_with_io_error_naming(target) ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "1: no io error naming the path, 2: setuid failed";
  }
  EXPECT_FALSE(fs::exists(target));
  fs::permissions(dir, fs::perms::owner_all);
  fs::remove_all(dir);
}

TEST(AtomicFile, CommitOverADirectoryFails) {
  const fs::path dir = test::unique_path("atomic-target-dir");
  fs::create_directory(dir);
  fs::create_directory(dir / "inner");  // rename(2) cannot replace a non-empty directory
  {
    AtomicFile file(dir);
    file.write(bytes_of("x"));
    try {
      file.commit();
      ADD_FAILURE() << "expected an io error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::io);
      EXPECT_NE(std::string(e.what()).find(dir.string()), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(temporaries_of(dir).empty());
  fs::remove_all(dir);
}

TEST(WriteFile, KilledWriterLeavesThePreviousFile) {
  ScratchPath target("atomic-killed");
  std::string previous(1 << 20, '\0');
  for (std::size_t i = 0; i < previous.size(); ++i) previous[i] = static_cast<char>(i * 131);
  test::write_file(target.path(), bytes_of(previous));

  constexpr std::uint64_t size = std::uint64_t{64} << 20;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const std::vector tensors{TensorData::from_producer(
        "big", Dtype::U8, {size}, [](std::uint64_t offset, std::span<std::byte> out) {
          if (offset >= size / 2) ::raise(SIGKILL);
          std::memset(out.data(), 0x77, out.size());
        })};
    try {
      write_file(target.path(), tensors);
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_TRUE(read_whole_file(target.path()) == previous) << "previous file changed";
  // The half-written temporary is what a crash leaves; it never replaced the target.
  const std::vector<fs::path> left = temporaries_of(target.path());
  ASSERT_EQ(left.size(), 1u);
  EXPECT_GE(fs::file_size(left[0]), size / 2);
  // The next save to the same target finds the dead writer's temporary unlocked.
  write_file(target.path(),
             std::vector{TensorData::from_bytes("t", Dtype::U8, {2}, bytes_of("ok"))});
  EXPECT_TRUE(temporaries_of(target.path()).empty());
}

// A name AtomicFile could have chosen for `target`'s temporary.
fs::path temp_name(const fs::path& target, std::string_view suffix) {
  return target.parent_path() / ("." + target.filename().string() + ".tmp-" + std::string(suffix));
}

TEST(AtomicFile, RemovesOnlyAbandonedTemporariesOfItsTarget) {
  ScratchPath target("atomic-stale");
  ScratchPath other("atomic-stale-other");
  const fs::path abandoned = temp_name(target.path(), "0123456789ab");
  // Not ours: wrong length, wrong alphabet, something appended, another target's.
  const std::vector<fs::path> foreign = {
      temp_name(target.path(), "0123456789a"), temp_name(target.path(), "0123456789AB"),
      temp_name(target.path(), "0123456789ab.bak"), temp_name(other.path(), "0123456789ab"),
      target.path().parent_path() / (target.path().filename().string() + ".tmp-0123456789ab")};
  for (const fs::path& path : foreign) test::write_file(path, bytes_of("keep"));
  test::write_file(abandoned, bytes_of("stale"));
  {
    AtomicFile file(target.path());
    EXPECT_FALSE(fs::exists(abandoned));
    file.write(bytes_of("new"));
    file.commit();
  }
  for (const fs::path& path : foreign) {
    EXPECT_EQ(read_whole_file(path), "keep") << path;
    fs::remove(path);
  }
  EXPECT_EQ(read_whole_file(target.path()), "new");
}

// A live writer keeps its temporary locked: another save to the same target leaves it alone,
// and each commits its own file.
TEST(AtomicFile, KeepsTheTemporaryOfALiveWriter) {
  ScratchPath target("atomic-live");
  AtomicFile first(target.path());
  first.write(bytes_of("first"));
  {
    AtomicFile second(target.path());
    EXPECT_TRUE(fs::exists(first.temp_path()));
    second.write(bytes_of("second"));
    second.commit();
  }
  // A temporary somebody else has locked (here: this process, through its own open file).
  const fs::path locked = temp_name(target.path(), "lockedbyyou0");
  test::write_file(locked, bytes_of("busy"));
  const int fd = ::open(locked.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  { AtomicFile third(target.path()); }
  EXPECT_TRUE(fs::exists(locked));
  ::close(fd);
  first.commit();
  EXPECT_EQ(read_whole_file(target.path()), "first");
  { AtomicFile fourth(target.path()); }
  EXPECT_FALSE(fs::exists(locked));
}

TEST(WriteFile, MappedReaderKeepsTheOldBytes) {
  ScratchPath target("atomic-mapped");
  const std::string old_bytes(8192, 'A'), new_bytes(8192, 'B');
  write_file(target.path(),
             std::vector{TensorData::from_bytes("t", Dtype::U8, {8192}, bytes_of(old_bytes))});
  const std::string old_file = read_whole_file(target.path());

  const int fd = ::open(target.path().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* map = ::mmap(nullptr, old_file.size(), PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(map, MAP_FAILED);
  const std::string_view mapped(static_cast<const char*>(map), old_file.size());

  write_file(target.path(),
             std::vector{TensorData::from_bytes("t", Dtype::U8, {8192}, bytes_of(new_bytes))});
  const std::string new_file = read_whole_file(target.path());
  ASSERT_EQ(new_file.size(), old_file.size());
  EXPECT_NE(new_file, old_file);
  EXPECT_TRUE(mapped == old_file) << "the mapping saw the new file";
  ::munmap(map, old_file.size());
}

// One write(2) moves at most about 2 GiB, so this needs the full-write loop. The source is
// an untouched anonymous mapping: reading it costs no memory.
TEST(AtomicFile, SingleWriteBeyondTwoGiB) {
  constexpr std::uint64_t size = (std::uint64_t{1} << 31) + 4096 + 16;
  if (free_bytes(test::scratch_dir()) < size + (std::uint64_t{1} << 30)) {
    GTEST_SKIP() << "not enough space in " << test::scratch_dir();
  }
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* bytes = static_cast<std::byte*>(map);
  std::memcpy(bytes + size - 16, "0123456789abcdef", 16);
  ScratchPath target("atomic-2gib");
  {
    AtomicFile file(target.path());
    file.write(std::span<const std::byte>(bytes, size));
    file.commit();
  }
  ::munmap(map, size);
  EXPECT_EQ(fs::file_size(target.path()), size);
  const int fd = ::open(target.path().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::byte tail[17]{};
  pread_exact(fd, size - 17, tail);
  ::close(fd);
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(tail), 17),
            std::string_view("\0"
                             "0123456789abcdef",
                             17));
}

// A tensor of 4 GiB + 16 bytes (more than 2^32 U8 elements). The last words hold their own
// u64 offsets, so an offset truncated to 32 bits anywhere would write the wrong values.
constexpr std::uint64_t huge_size = (std::uint64_t{1} << 32) + 16;
constexpr std::uint64_t tail_words = 4;
constexpr std::uint64_t tail_start = huge_size - 8 * tail_words;

TEST(WriteFile, TensorBeyondFourGiB) {
  constexpr std::uint64_t size = huge_size;
  if (free_bytes(test::scratch_dir()) < size + (std::uint64_t{1} << 30)) {
    GTEST_SKIP() << "not enough space in " << test::scratch_dir();
  }
  ScratchPath target("atomic-4gib");
  const std::vector tensors{TensorData::from_producer(
      "big", Dtype::U8, {size}, [](std::uint64_t offset, std::span<std::byte> out) {
        std::memset(out.data(), 0x5a, out.size());
        for (std::uint64_t at = std::max(offset, tail_start); at < offset + out.size(); at += 8) {
          std::memcpy(out.data() + (at - offset), &at, 8);  // little-endian host
        }
      })};
  write_file(target.path(), tensors);

  const int fd = ::open(target.path().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::uint64_t n = 0;
  pread_exact(fd, 0, std::as_writable_bytes(std::span(&n, 1)));
  ASSERT_LT(n, 4096u);
  std::string header(n, '\0');
  pread_exact(fd, 8, std::as_writable_bytes(std::span(header)));
  EXPECT_NE(header.find(R"("shape":[4294967312],"data_offsets":[0,4294967312])"), std::string::npos)
      << header;
  EXPECT_EQ(fs::file_size(target.path()), 8 + n + size);

  std::uint64_t words[tail_words]{};
  pread_exact(fd, 8 + n + tail_start, std::as_writable_bytes(std::span(words)));
  for (std::uint64_t k = 0; k < tail_words; ++k) EXPECT_EQ(words[k], tail_start + 8 * k);
  std::byte middle[2]{};
  pread_exact(fd, 8 + n + (std::uint64_t{1} << 31), middle);
  EXPECT_EQ(middle[0], std::byte{0x5a});
  EXPECT_EQ(middle[1], std::byte{0x5a});
  ::close(fd);
}

}  // namespace
}  // namespace safetensors
