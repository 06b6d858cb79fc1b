#include "engine/loaded_image.hpp"

#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>

namespace crkit::engine {

int LoadedImage::index_of(pid_t pid) const {
  for (size_t i = 0; i < procs.size(); ++i)
    if (procs[i].process.pid == pid) return static_cast<int>(i);
  return -1;
}

std::vector<image::FdRecord> LoadedImage::all_fds() const {
  std::vector<image::FdRecord> out;
  for (const auto& p : procs) out.insert(out.end(), p.fds.begin(), p.fds.end());
  return out;
}

std::vector<image::VmaRecord> LoadedImage::all_vmas() const {
  std::vector<image::VmaRecord> out;
  for (const auto& p : procs) out.insert(out.end(), p.vmas.begin(), p.vmas.end());
  return out;
}

Result<LoadedImage> load_image(image::ImageReader& reader) {
  LoadedImage img;
  CRKIT_TRY(reader.read_file_header());
  const std::string& name = reader.name();
  bool have_info = false;
  std::map<pid_t, size_t> index;
  // Records that name their process; it must be in the image, and precede them.
  auto owner = [&](pid_t pid, const char* what, const image::RawRecord& rec) -> Result<size_t> {
    auto it = index.find(pid);
    if (it == index.end())
      return fail(EINVAL, fmt::format("{}: record #{} ({}) at offset {} belongs to process {}, "
                                      "which has no Process record before it",
                                      name, rec.number, what, rec.offset, pid));
    return it->second;
  };
  for (;;) {
    CRKIT_ASSIGN(auto rec, reader.next());
    if (!rec) break;
    switch (rec->header.type) {
      case image::RecordType::ImageInfo: {
        CRKIT_ASSIGN(img.info, image::decode_record<image::ImageInfo>(*rec, name));
        have_info = true;
        break;
      }
      case image::RecordType::Process: {
        CRKIT_ASSIGN(auto p, image::decode_record<image::ProcessRecord>(*rec, name));
        if (index.count(p.pid))
          return fail(EINVAL, fmt::format("{}: record #{}: process {} appears twice", name,
                                          rec->number, p.pid));
        index[p.pid] = img.procs.size();
        img.procs.push_back(ProcessImage{std::move(p), {}, {}, {}});
        break;
      }
      case image::RecordType::Thread: {
        CRKIT_ASSIGN(auto th, image::decode_record<image::ThreadRecord>(*rec, name));
        CRKIT_ASSIGN(size_t i, owner(th.pid, "Thread", *rec));
        img.procs[i].threads.push_back(std::move(th));
        break;
      }
      case image::RecordType::Vma: {
        CRKIT_ASSIGN(auto v, image::decode_record<image::VmaRecord>(*rec, name));
        CRKIT_ASSIGN(size_t i, owner(v.pid, "Vma", *rec));
        img.page_bytes += v.saved_pages * 4096;
        img.procs[i].vmas.push_back(std::move(v));
        break;
      }
      case image::RecordType::Fd: {
        CRKIT_ASSIGN(auto f, image::decode_record<image::FdRecord>(*rec, name));
        CRKIT_ASSIGN(size_t i, owner(f.pid, "Fd", *rec));
        img.procs[i].fds.push_back(std::move(f));
        break;
      }
      case image::RecordType::FileContent: {
        CRKIT_ASSIGN(auto fc, image::decode_file_content(*rec, name));
        auto& [h, data] = fc;
        auto& saved = img.contents[h.content_id];
        // The writer sends a content front to back: each piece where the last one ended.
        if (h.offset != saved.bytes.size() || data.size() > h.total_size ||
            h.offset > h.total_size - data.size())
          return fail(EINVAL,
                      fmt::format("{}: record #{} (FileContent) at offset {}: bytes "
                                  "{}..{} of content {} ({} bytes) do not follow the {} "
                                  "bytes before them",
                                  name, rec->number, rec->offset, h.offset, h.offset + data.size(),
                                  h.content_id, h.total_size, saved.bytes.size()));
        saved.bytes.insert(saved.bytes.end(), data.begin(), data.end());
        saved.chunks.push_back(data.size());
        break;
      }
      case image::RecordType::Pages:
      case image::RecordType::PageBatch:
        img.first_pages = std::move(*rec);
        break;
      default:
        break;
    }
    if (img.first_pages) break;
  }
  if (!have_info || img.procs.empty())
    return fail(EINVAL, fmt::format("{}: the image has no {} record", name,
                                    have_info ? "Process" : "ImageInfo"));
  if (img.info.process_count && img.info.process_count != img.procs.size())
    return fail(EINVAL, fmt::format("{}: the image should hold {} processes but has records of {}",
                                    name, img.info.process_count, img.procs.size()));
  std::set<pid_t> tids;
  for (const auto& p : img.procs) {
    bool main_found = false;
    for (const auto& th : p.threads) {
      main_found |= th.tid == p.process.pid;
      if (!tids.insert(th.tid).second)
        return fail(EINVAL, fmt::format("{}: thread {} appears twice", name, th.tid));
    }
    if (!main_found)
      return fail(EINVAL, fmt::format("{}: the image has no record of the main thread of process "
                                      "{}",
                                      name, p.process.pid));
  }
  return img;
}

}  // namespace crkit::engine
