#include "convert/plan.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <tuple>

#include "convert/detect.hpp"
#include "error/messages.hpp"
#include "npy/npy.hpp"
#include "safetensors/error.hpp"
#include "torch/checkpoint.hpp"
#include "zip/archive.hpp"

namespace safetensors::detail {
namespace {

constexpr std::uint64_t mib = std::uint64_t{1} << 20;

// All the tensors of a checkpoint together may hold at most this many times the bytes of
// the file (or of 1 MiB). Honest checkpoints store what they mean to save, so their output
// is about the size of their input; many small views that each expand within the per-view
// cap of torch/checkpoint.cpp must not add up to a disk-filling output either.
constexpr std::uint64_t max_output_expansion = 16;

constexpr std::string_view npy_suffix = ".npy";

bool is_contiguous(const std::vector<std::uint64_t>& shape,
                   const std::vector<std::uint64_t>& stride) {
  std::uint64_t expected = 1;
  for (std::size_t d = shape.size(); d-- > 0;) {
    if (shape[d] != 1 && stride[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

// The reference converter's rule for tied weights: among names that cover a whole storage,
// the first in sorted order is kept and the others are recorded as `removed -> kept`. We
// only tie names that also agree on dtype and shape, so every removed name is exactly the
// kept tensor; any other view of a shared storage is written as its own copy.
void deduplicate(ConvertPlan& plan) {
  std::map<std::tuple<std::string, Dtype, std::vector<std::uint64_t>>, std::vector<std::size_t>>
      whole;
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    const ConvertItem& item = plan.items[i];
    const std::uint64_t storage = plan.storage_bytes.at(item.storage);
    // The reference ignores empty storages: nothing is shared through them.
    if (storage > 0 && item.offset == 0 && item.contiguous && item.bytes == storage) {
      whole[{item.storage, item.dtype, item.shape}].push_back(i);
    }
  }
  std::vector<bool> removed(plan.items.size(), false);
  for (auto& [key, indices] : whole) {
    if (indices.size() < 2) continue;
    std::sort(indices.begin(), indices.end(), [&](std::size_t a, std::size_t b) {
      return plan.items[a].name < plan.items[b].name;
    });
    const std::string& kept = plan.items[indices[0]].name;
    for (std::size_t k = 1; k < indices.size(); ++k) {
      const std::string& name = plan.items[indices[k]].name;
      plan.deduplicated.emplace_back(name, kept);
      plan.metadata.emplace(name, kept);  // like the reference, the first value stays
      removed[indices[k]] = true;
    }
  }
  std::vector<ConvertItem> kept_items;
  for (std::size_t i = 0; i < plan.items.size(); ++i) {
    if (!removed[i]) kept_items.push_back(std::move(plan.items[i]));
  }
  plan.items = std::move(kept_items);
  std::sort(plan.deduplicated.begin(), plan.deduplicated.end());
}

void check_total(const ConvertPlan& plan, const Source& source) {
  std::uint64_t total = 0;
  for (const ConvertItem& item : plan.items) {
    if (__builtin_add_overflow(total, item.bytes, &total)) total = UINT64_MAX;
  }
  const std::uint64_t cap = std::max(source.size(), mib);
  if (total / max_output_expansion > cap) {
    fail(ErrorCode::invalid_checkpoint, source.name(),
         "the tensors' views add up to " + std::to_string(total) + " bytes, more than " +
             std::to_string(max_output_expansion) + " times the " + std::to_string(source.size()) +
             "-byte file");
  }
}

ConvertPlan plan_torch(const Source& source, const std::string& state_dict_key) {
  auto checkpoint = std::make_shared<torch::SavedModel>(
      torch::read_checkpoint(source, torch::ReadOptions{state_dict_key}));
  ConvertPlan plan;
  plan.input_format = checkpoint->format == torch::Format::zip ? "torch-zip" : "torch-legacy";
  plan.metadata.emplace("format", "pt");
  plan.dropped = checkpoint->dropped;
  for (const auto& [key, storage] : checkpoint->storages) {
    plan.storage_bytes.emplace(key, storage.byte_size);
  }
  for (const torch::TensorRef& t : checkpoint->tensors) {
    ConvertItem item;
    item.name = t.name;
    item.dtype = t.dtype;
    item.shape = t.shape;
    item.stride = t.stride;
    item.storage = t.storage_key;
    item.offset = t.storage_offset;
    item.bytes = byte_size(t.dtype, t.shape).bytes;  // checked by read_checkpoint
    item.contiguous = is_contiguous(t.shape, t.stride);
    plan.items.push_back(std::move(item));
  }
  plan.load = [checkpoint](const std::string& key) {
    return checkpoint->read_storage(checkpoint->storages.at(key));
  };
  deduplicate(plan);
  check_total(plan, source);
  return plan;
}

// The bytes of a .npy header: 10 (v1) or 12 (v2, v3) bytes plus the length they give.
std::uint64_t npy_header_span(std::span<const std::byte> first12) {
  const std::optional<npy::HeaderExtent> extent = npy::header_extent(first12);
  return extent ? extent->text_start + extent->text_length : first12.size();
}

// C-order little-endian bytes of the array in `npy` (a whole .npy file's bytes).
std::vector<std::byte> npy_array(std::vector<std::byte> npy, std::string_view origin) {
  const npy::ArrayHeader h = npy::parse_array_header(npy, npy.size(), origin);
  const std::span<const std::byte> data = std::span(npy).subspan(h.data_offset, h.data_size);
  if (h.big_endian || h.fortran_order) {
    std::vector<std::byte> out(h.data_size);
    npy::to_c_order_little_endian(h, data, out);
    return out;
  }
  npy.erase(npy.begin(), npy.begin() + static_cast<std::ptrdiff_t>(h.data_offset));
  npy.resize(h.data_size);
  return npy;
}

ConvertItem whole_array(std::string name, const npy::ArrayHeader& h, std::string storage) {
  ConvertItem item;
  item.name = std::move(name);
  item.dtype = h.dtype;
  item.shape = h.shape;
  item.stride.assign(h.shape.size(), 0);
  std::uint64_t stride = 1;
  for (std::size_t d = h.shape.size(); d-- > 0;) {
    item.stride[d] = stride;
    stride *= h.shape[d];
  }
  item.storage = std::move(storage);
  item.bytes = h.data_size;
  return item;
}

ConvertPlan plan_npy(const Source& source, const std::string& stem) {
  std::array<std::byte, 12> first{};
  const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(12, source.size()));
  source.read_at(0, std::span(first).first(n));
  std::vector<std::byte> header(
      std::min<std::uint64_t>(source.size(), npy_header_span(std::span(first).first(n))));
  source.read_at(0, header);
  const npy::ArrayHeader h = npy::parse_array_header(header, source.size(), source.name());
  ConvertPlan plan;
  plan.input_format = "npy";
  plan.metadata.emplace("format", "np");
  plan.items.push_back(whole_array(stem.empty() ? "array" : stem, h, "0"));
  plan.storage_bytes.emplace("0", h.data_size);
  const Source* src = &source;
  plan.load = [src, h](const std::string&) {
    const bool native = !h.big_endian && !h.fortran_order;
    if (native && !src->mapped().empty()) return StorageBytes(*src, h.data_offset, h.data_size);
    std::vector<std::byte> data(h.data_size);
    src->read_at(h.data_offset, data);
    if (native) return StorageBytes(std::move(data));
    std::vector<std::byte> out(h.data_size);
    npy::to_c_order_little_endian(h, data, out);
    return StorageBytes(std::move(out));
  };
  return plan;
}

ConvertPlan plan_npz(const Source& source, std::shared_ptr<zip::Archive> archive) {
  ConvertPlan plan;
  plan.input_format = "npz";
  plan.metadata.emplace("format", "np");
  for (const zip::Entry& e : archive->entries()) {
    const std::string origin = source.name() + ":" + e.name;
    // Stored members are parsed from their first bytes; deflated ones must be inflated.
    std::vector<std::byte> bytes;
    if (e.method == 0) {
      std::array<std::byte, 12> first{};
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(12, e.size));
      source.read_at(e.data_offset, std::span(first).first(n));
      bytes.resize(std::min<std::uint64_t>(e.size, npy_header_span(std::span(first).first(n))));
      source.read_at(e.data_offset, bytes);
    } else {
      bytes = archive->read(e);
    }
    const npy::ArrayHeader h = npy::parse_array_header(bytes, e.size, origin);
    const std::string name = e.name.substr(0, e.name.size() - npy_suffix.size());
    plan.items.push_back(whole_array(name, h, e.name));
    plan.storage_bytes.emplace(e.name, h.data_size);
  }
  plan.load = [archive](const std::string& entry) {
    const zip::Entry* e = archive->find(entry);
    const std::string origin = archive->source().name() + ":" + entry;
    if (const auto view = archive->stored_view(*e); !view.empty()) {
      const npy::ArrayHeader h = npy::parse_array_header(view, view.size(), origin);
      if (!h.big_endian && !h.fortran_order) {
        return StorageBytes(archive->source(), e->data_offset + h.data_offset, h.data_size);
      }
    }
    return StorageBytes(npy_array(archive->read(*e), origin));
  };
  return plan;
}

bool all_npy(const zip::Archive& archive) {
  return std::all_of(archive.entries().begin(), archive.entries().end(), [](const auto& e) {
    return e.name.size() > npy_suffix.size() && e.name.ends_with(npy_suffix);
  });
}

}  // namespace

std::uint64_t element_size(Dtype dtype) noexcept {
  return dtype_bits(dtype) / 8;
}

ConvertPlan plan_conversion(const Source& source, const std::string& stem,
                            const std::string& state_dict_key) {
  ConvertPlan plan = [&] {
    switch (detect_format(source)) {
      case InputFormat::npy:
        return plan_npy(source, stem);
      case InputFormat::zip:
        if (auto archive = std::make_shared<zip::Archive>(zip::Archive::open(source));
            all_npy(*archive)) {
          return plan_npz(source, std::move(archive));
        }
        break;
      case InputFormat::pickle:
      case InputFormat::unknown:
        break;  // the torch reader names what it finds wrong
    }
    return plan_torch(source, state_dict_key);
  }();
  plan.origin = source.name();
  return plan;
}

}  // namespace safetensors::detail
