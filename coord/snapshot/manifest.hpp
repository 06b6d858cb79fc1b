// The global snapshot manifest of a coordinated (MPI) checkpoint, and the layout of a job's
// snapshot directory (DESIGN.md decision 8).
//
// A snapshot directory holds one image per node and `manifest.json`, which describes them; the
// directory is self-describing (it can be moved as a whole: image paths are relative to it).
// The manifest is the commit record: it is written last, atomically (write-temp, fsync,
// rename, fsync dir), so a snapshot directory without one is partial and must not be used.
//
// A job's snapshots live in CKPT_DIR/JOB/snap-%06llu (seq), e.g. /ckpt/job42/snap-000003.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace crkit::coord {

inline constexpr int kManifestFormat = 1;  // the format this crkit writes and reads
inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kManifestTempName = ".manifest.json.tmp";

// The image of one node: the ranks that ran there, dumped together (they share memory).
struct ImageEntry {
  int node = 0;            // index into Manifest::hosts
  std::string host;        // the host it was taken on (= hosts[node])
  std::vector<int> ranks;  // the MPI ranks in this image, at least one
  std::string path;        // relative to the snapshot directory, no ".." component
  uint64_t size = 0;       // bytes
  std::string xxh64;       // 16 lowercase hex digits of XXH64 (seed 0) of the file

  bool operator==(const ImageEntry&) const = default;
};

struct Manifest {
  int format = kManifestFormat;
  std::string job;
  uint64_t seq = 0;
  std::string created;  // ISO-8601 UTC, e.g. "2024-05-01T12:34:56Z" (see iso8601_utc_now)
  int nranks = 0;
  std::vector<std::string> hosts;  // node index -> host at checkpoint time
  std::vector<ImageEntry> images;  // one per node, with the ranks of that node
  // What the job was launched with (PMI variables excluded).
  std::vector<std::string> argv;
  std::string cwd;
  std::map<std::string, std::string> env;
  std::string mpi;  // e.g. "MPICH 4.0.2 ch3:nemesis:tcp"
  std::string crkit_version;
  bool nolocal = false;                      // MPIR_CVAR_NOLOCAL was set: all traffic over TCP
  std::map<std::string, double> timings_ms;  // quiesce, dump, commit...

  bool operator==(const Manifest&) const = default;
};

// The current time as ISO-8601 UTC with second resolution ("2024-05-01T12:34:56Z").
std::string iso8601_utc_now();

// Consistency of a manifest, without looking at any file: format known, nranks > 0, every rank
// 0..nranks-1 in exactly one image, image nodes distinct (and naming `hosts` consistently when
// hosts are listed), image paths relative without "..", distinct, xxh64 16 hex digits,
// timings finite (JSON has no NaN).
// Errors (EINVAL; kCrEVersion for an unknown format) read "NAME: FIELD: why".
Status validate_manifest(const Manifest& m, const std::string& name_for_errors);

// JSON text of m (pretty-printed, stable key order). Fails (EINVAL) only when a string is not
// valid UTF-8.
Result<std::string> to_json(const Manifest& m);
// Parses and validates (validate_manifest) a manifest. Unknown keys are ignored (later
// additions to format 1); job, created, argv, cwd, env, mpi, crkit_version, nolocal and
// timings_ms may be absent. Errors read "NAME: invalid JSON: ..." or "NAME: FIELD: why", FIELD
// as in "images[1].ranks[0]".
Result<Manifest> parse_manifest(std::string_view json, const std::string& name_for_errors);

// Commits a snapshot: validates m, writes dir/.manifest.json.tmp (O_CREAT|O_EXCL, mode 0600),
// fsyncs it, renames it to dir/manifest.json and fsyncs dir. On failure no temporary file is
// left; a temporary file left by a crashed writer makes it fail (EEXIST) rather than guess.
Status write_manifest_atomic(const std::string& dir, const Manifest& m);

// Reads DIR/manifest.json (or the manifest file itself; its directory is then the snapshot
// directory), validates it, and checks that every image exists as a regular file of the
// recorded size. Errors name the file and the field. Checksums are not read: verify_images.
Result<Manifest> read_manifest(const std::string& dir_or_file);

// XXH64 (seed 0) of a file's contents, read in 1 MiB pieces, as 16 lowercase hex digits.
Result<std::string> xxh64_file(const std::string& path);

// Checks every image of m in snapshot directory dir: sizes first (cheap), then xxh64.
// An error (EIO for a mismatch) names the image, its node and the values.
Status verify_images(const std::string& dir, const Manifest& m);

// --- a job's snapshot directory: CKPT_DIR/JOB/snap-%06llu ---

// "snap-000003" for seq 3 (more digits when seq > 999999).
std::string snapshot_dir_name(uint64_t seq);
// The sequence numbers of the committed snapshots (directories named snapshot_dir_name(seq)
// that hold a manifest.json) in job_dir, ascending. Symbolic links are not followed.
Result<std::vector<uint64_t>> list_snapshots(const std::string& job_dir);
// Removes all but the newest `keep` committed snapshots of job_dir, oldest first. Each is
// uncommitted first (its manifest.json goes first) and then removed recursively; symbolic
// links are never followed. A directory holding anything crkit could not have written
// (anything but regular files and directories, or, unless running as root, files of another
// user) is refused and left untouched. Partial snapshots are not touched.
Status prune_snapshots(const std::string& job_dir, size_t keep);
// Removes an uncommitted (partial) snapshot directory, with the rules of prune_snapshots.
// Refuses (EEXIST) a directory that has a manifest.json. A directory that does not exist is
// already removed: success.
Status remove_partial(const std::string& snap_dir);

}  // namespace crkit::coord
