#include "torch/graph.hpp"

#include <algorithm>
#include <array>
#include <span>
#include <unordered_map>
#include <utility>

#include "error/messages.hpp"
#include "pickle/allowlist.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail::torch {
namespace {

using pickle::Kind;
using pickle::Value;
using pickle::ValueId;
using Entries = std::vector<std::pair<ValueId, ValueId>>;

// Where training checkpoints keep their weights when there is no `state_dict`
// (docs/CHECKPOINTS.md), in the order we prefer them when several are present.
constexpr std::array<std::string_view, 6> weight_keys = {"model_state_dict", "model",      "module",
                                                         "params",           "params_ema", "ema"};

// Parameters wrap tensors; nothing legitimate nests them deeper than this.
constexpr int max_parameter_nesting = 4;

class Interpreter {
 public:
  Interpreter(const pickle::Pickle& pickle, bool legacy, std::string_view origin)
      : pickle_(pickle), legacy_(legacy), origin_(origin) {}

  Graph run(std::string_view state_dict_key) {
    read_storage_ids();
    select(state_dict_key);
    return std::move(graph_);
  }

 private:
  const pickle::Pickle& pickle_;
  bool legacy_;
  std::string_view origin_;
  Graph graph_;

  const Value& at(ValueId id) const {
    if (id >= pickle_.values.size()) {
      detail::fail(ErrorCode::invalid_pickle, origin_,
                   "value id " + std::to_string(id) + " is outside the pickle's values");
    }
    return pickle_.values[id];
  }

  [[noreturn]] void invalid(const std::string& message) const {
    detail::fail(ErrorCode::invalid_checkpoint, origin_, message);
  }
  [[noreturn]] void unsupported(const std::string& message) const {
    detail::fail(ErrorCode::unsupported_checkpoint, origin_, message);
  }

  // The global a call applies, or nullptr when `v` is not a call on a global.
  const Value* callee(const Value& v) const {
    if (v.kind != Kind::call) return nullptr;
    const Value& c = at(v.callee);
    return c.kind == Kind::global ? &c : nullptr;
  }
  bool calls(const Value& v, std::string_view module, std::string_view name) const {
    const Value* c = callee(v);
    return c && c->module == module && c->name == name;
  }

  // Items of a tuple or list; nullopt for anything else.
  std::optional<std::span<const ValueId>> sequence(ValueId id) const {
    const Value& v = at(id);
    if (v.kind != Kind::tuple && v.kind != Kind::list) return std::nullopt;
    return std::span<const ValueId>(v.items);
  }

  // A dict, or an OrderedDict call filled by SETITEMS (or built from a list of pairs).
  std::optional<Entries> entries(ValueId id) const {
    const Value& v = at(id);
    Entries out;
    if (v.kind != Kind::dict && !calls(v, "collections", "OrderedDict")) return std::nullopt;
    if (v.kind == Kind::call) {
      const auto args = sequence(v.args);
      if (!args || args->size() > 1) return std::nullopt;
      if (args->size() == 1) {
        const auto pairs = sequence((*args)[0]);
        if (!pairs) return std::nullopt;
        for (ValueId pair : *pairs) {
          const auto kv = sequence(pair);
          if (!kv || kv->size() != 2) return std::nullopt;
          out.emplace_back((*kv)[0], (*kv)[1]);
        }
      }
    }
    for (std::size_t i = 0; i + 1 < v.items.size(); i += 2) {
      out.emplace_back(v.items[i], v.items[i + 1]);
    }
    return out;
  }

  // Python dict semantics: a repeated key keeps its first position and takes the last value.
  static Entries deduplicate(const Entries& in, const std::vector<std::string>& names) {
    Entries out;
    std::unordered_map<std::string, std::size_t> position;
    for (std::size_t i = 0; i < in.size(); ++i) {
      const auto [it, fresh] = position.emplace(names[i], out.size());
      if (fresh) {
        out.push_back(in[i]);
      } else {
        out[it->second].second = in[i].second;
      }
    }
    return out;
  }

  std::optional<std::string> string_key(ValueId id) const {
    const Value& v = at(id);
    // Python 2 pickles spell str as BINSTRING (bytes); torch.load decodes them as UTF-8.
    if (v.kind == Kind::string || v.kind == Kind::bytes) return v.text;
    return std::nullopt;
  }

  bool is_tensor_call(const Value& v) const {
    const Value* c = callee(v);
    if (!c || c->module != "torch._utils") return false;
    return c->name == "_rebuild_tensor" || c->name == "_rebuild_tensor_v2" ||
           c->name == "_rebuild_tensor_v3" || c->name == "_rebuild_parameter" ||
           c->name == "_rebuild_parameter_with_state";
  }

  std::string describe(ValueId id) const {
    const Value& v = at(id);
    switch (v.kind) {
      case Kind::boolean:
        return v.boolean ? "True" : "False";
      case Kind::integer:
        return "int " + std::to_string(v.integer);
      case Kind::tuple:
        return "tuple of " + std::to_string(v.items.size()) + " items";
      case Kind::list:
        return "list of " + std::to_string(v.items.size()) + " items";
      case Kind::dict:
        return "dict of " + std::to_string(v.items.size() / 2) + " entries";
      case Kind::set:
      case Kind::frozenset:
        return "set of " + std::to_string(v.items.size()) + " items";
      case Kind::global:
        return "reference to " + v.module + "." + v.name;
      case Kind::persistent_id:
        return "storage";
      case Kind::call:
        break;
      default:
        return std::string(kind_name(v.kind));
    }
    if (is_tensor_call(v)) return "tensor";
    const Value* c = callee(v);
    if (!c) return "object";
    if (c->name == "scalar") return "numpy scalar";
    if (c->name == "_reconstruct" || c->name == "ndarray") return "numpy array";
    if (c->name == "OrderedDict")
      return "OrderedDict of " + std::to_string(v.items.size() / 2) + " entries";
    return c->module + "." + c->name + " object";
  }

  std::int64_t integer(ValueId id, const std::string& what) const {
    const Value& v = at(id);
    if (v.kind == Kind::integer) return v.integer;
    if (v.kind == Kind::big_integer) invalid(what + " does not fit in 64 bits");
    invalid(what + " is a " + describe(id) + ", not an int");
  }

  std::vector<std::int64_t> integers(ValueId id, const std::string& what) const {
    // torch.Size((...)) is a call wrapping the tuple.
    if (calls(at(id), "torch", "Size")) {
      const auto args = sequence(at(id).args);
      if (!args || args->size() != 1) invalid(what + " is a malformed torch.Size");
      id = (*args)[0];
    }
    const auto items = sequence(id);
    if (!items) invalid(what + " is a " + describe(id) + ", not a tuple of ints");
    std::vector<std::int64_t> out;
    out.reserve(items->size());
    for (std::size_t i = 0; i < items->size(); ++i) {
      out.push_back(integer((*items)[i], what + "[" + std::to_string(i) + "]"));
    }
    return out;
  }

  bool empty_or_none(ValueId id) const {
    if (at(id).kind == Kind::none) return true;
    const auto e = entries(id);
    return e && e->empty() && at(id).state == 0;
  }

  void read_storage_ids() {
    for (ValueId id = 0; id < pickle_.values.size(); ++id) {
      if (pickle_.values[id].kind == Kind::persistent_id) graph_.storages[id] = storage_id(id);
    }
  }

  StorageId storage_id(ValueId id) const {
    const std::string where = "persistent id at byte " + std::to_string(at(id).offset);
    const auto items = sequence(at(id).args);
    const std::size_t expected = legacy_ ? 6 : 5;
    if (!items || items->empty() || string_key((*items)[0]) != "storage") {
      invalid(where + " is a " + describe(at(id).args) + ", not a ('storage', ...) tuple");
    }
    if (items->size() != expected) {
      invalid(where + " has " + std::to_string(items->size()) + " items; the " +
              (legacy_ ? "legacy" : "zip") + " format uses " + std::to_string(expected));
    }
    const Value& cls = at((*items)[1]);
    StorageId out;
    if (cls.kind != Kind::global) invalid(where + ": the storage type is not a class reference");
    if (auto sc = storage_class(cls.module, cls.name)) {
      out.storage = *sc;
    } else if (pickle::is_known_unsupported_global(cls.module, cls.name)) {
      unsupported(where + ": " + unsupported_reason(cls.module, cls.name));
    } else {
      invalid(where + ": " + cls.module + "." + cls.name + " is not a storage type");
    }
    const auto key = string_key((*items)[2]);
    if (!key || key->empty() || key->size() > 256 || key->find('/') != std::string::npos ||
        key->find('\0') != std::string::npos || key->find('\\') != std::string::npos) {
      invalid(where + ": the storage key must be a short string without path separators");
    }
    out.key = *key;
    const std::string storage = "storage " + detail::quote(out.key);
    const std::int64_t numel = integer((*items)[4], storage + " size");
    if (numel < 0) invalid(storage + " has a negative size " + std::to_string(numel));
    out.numel = static_cast<std::uint64_t>(numel);
    if (legacy_ && at((*items)[5]).kind != Kind::none) {
      const auto view = sequence((*items)[5]);
      if (!view || view->size() != 3) invalid(storage + ": malformed view metadata");
      const std::int64_t offset = integer((*view)[1], storage + " view offset");
      const std::int64_t size = integer((*view)[2], storage + " view size");
      if (offset < 0 || size < 0 || static_cast<std::uint64_t>(offset) > out.numel ||
          static_cast<std::uint64_t>(size) > out.numel - static_cast<std::uint64_t>(offset)) {
        invalid(storage + " view [" + std::to_string(offset) + ", +" + std::to_string(size) +
                ") is outside its " + std::to_string(out.numel) + " elements");
      }
      out.view_offset = static_cast<std::uint64_t>(offset);
      out.view_size = static_cast<std::uint64_t>(size);
    }
    return out;
  }

  TensorCall tensor(ValueId id, const std::string& name) const {
    const std::string what = "tensor " + detail::quote(name);
    for (int depth = 0;; ++depth) {
      const Value& v = at(id);
      const Value* c = callee(v);
      const auto args = sequence(v.args);
      if (!c || !args) invalid(what + " is not a tensor rebuild call");
      if (c->name == "_rebuild_parameter" || c->name == "_rebuild_parameter_with_state") {
        if (depth >= max_parameter_nesting || args->empty()) {
          invalid(what + ": malformed or too deeply nested Parameter");
        }
        id = (*args)[0];
        continue;
      }
      return rebuild(*c, *args, name);
    }
  }

  TensorCall rebuild(const Value& function, std::span<const ValueId> args,
                     const std::string& name) const {
    const std::string what = "tensor " + detail::quote(name);
    const bool v3 = function.name == "_rebuild_tensor_v3";
    const bool v1 = function.name == "_rebuild_tensor";
    // v1: (storage, offset, size, stride); v2 adds (requires_grad, hooks[, metadata]);
    // v3 adds dtype after the hooks.
    const std::size_t least = v1 ? 4 : v3 ? 7 : 6;
    const std::size_t most = v1 ? 4 : least + 1;
    if (args.size() < least || args.size() > most) {
      invalid(what + ": " + function.name + " takes " + std::to_string(least) + " to " +
              std::to_string(most) + " arguments, got " + std::to_string(args.size()));
    }
    TensorCall out;
    out.name = name;
    out.storage = args[0];
    if (at(args[0]).kind != Kind::persistent_id) {
      invalid(what + ": its storage is a " + describe(args[0]) + ", not a storage reference");
    }
    out.offset = integer(args[1], what + " storage offset");
    out.size = integers(args[2], what + " size");
    out.stride = integers(args[3], what + " stride");
    if (!v1 && !empty_or_none(args[5])) unsupported(what + " has backward hooks");
    if (v3) {
      const Value& d = at(args[6]);
      if (d.kind == Kind::global) out.dtype = torch_dtype(d.module, d.name);
      if (!out.dtype) invalid(what + ": the dtype argument is a " + describe(args[6]));
    }
    if (args.size() == most && !v1 && !empty_or_none(args[most - 1])) {
      unsupported(what + " carries tensor metadata (conjugate or negative bit, ...)");
    }
    return out;
  }

  bool has_tensor(const Entries& e) const {
    return std::any_of(e.begin(), e.end(),
                       [&](const auto& kv) { return is_tensor_call(at(kv.second)); });
  }

  // Dict keys as text for deduplication; a non-string key gets a name no string key has.
  std::vector<std::string> key_names(const Entries& in) const {
    std::vector<std::string> names;
    for (std::size_t i = 0; i < in.size(); ++i) {
      const auto key = string_key(in[i].first);
      // Appending, not operator+: g++ 12 warns falsely (-Wrestrict) on "literal" + string.
      std::string name(1, key ? 's' : 'n');
      name.append(key ? *key : std::to_string(i));
      names.push_back(std::move(name));
    }
    return names;
  }

  std::optional<ValueId> find(const Entries& e, std::string_view key) const {
    std::optional<ValueId> found;
    for (const auto& [k, v] : e) {
      const auto name = string_key(k);
      if (name && *name == key) found = v;  // the last assignment wins, as in Python
    }
    return found;
  }

  std::string key_list(const Entries& e) const {
    std::string out;
    for (const auto& [k, v] : e) {
      if (out.size() > 400) return out + ", ...";
      const auto name = string_key(k);
      if (!out.empty()) out += ", ";
      out += name ? detail::quote(*name) : describe(k);
    }
    return out.empty() ? "none" : out;
  }

  void select(std::string_view state_dict_key) {
    const auto top = entries(pickle_.root);
    if (!top) {
      invalid("the checkpoint holds a " + describe(pickle_.root) + ", not a dict of tensors");
    }
    std::optional<std::string> chosen;
    if (!state_dict_key.empty()) {
      if (!find(*top, state_dict_key)) {
        detail::fail(ErrorCode::invalid_argument, origin_,
                     "no key " + detail::quote(state_dict_key) +
                         " at the top level; keys: " + key_list(*top));
      }
      chosen = std::string(state_dict_key);
    } else if (const auto sd = find(*top, "state_dict"); sd && entries(*sd)) {
      chosen = "state_dict";
    } else if (!has_tensor(*top)) {
      chosen = nested_weights(*top);
    }
    if (!chosen) {
      take_tensors(*top, "");
      return;
    }
    const ValueId holder = *find(*top, *chosen);
    const auto weights = entries(holder);
    if (!weights) {
      invalid("the weights key " + detail::quote(*chosen) + " holds a " + describe(holder) +
              ", not a dict of tensors");
    }
    for (const auto& [k, v] : *top) {
      const auto name = string_key(k);
      if (name && *name == *chosen) continue;
      graph_.dropped.push_back((name ? *name : describe(k)) + ": " + describe(v) +
                               ", outside the state dict " + detail::quote(*chosen));
    }
    take_tensors(*weights, *chosen);
  }

  // The one weights dict of a checkpoint without `state_dict` whose top level has no
  // tensors; nullopt when there is none (the top level is converted as it is).
  std::optional<std::string> nested_weights(const Entries& top) const {
    std::vector<std::string> candidates;
    for (const auto& [k, v] : top) {
      const auto name = string_key(k);
      const auto inner = entries(v);
      if (name && inner && has_tensor(*inner)) candidates.push_back(*name);
    }
    if (candidates.size() == 1) return candidates.front();
    for (std::string_view preferred : weight_keys) {
      if (std::find(candidates.begin(), candidates.end(), preferred) != candidates.end()) {
        return std::string(preferred);
      }
    }
    if (candidates.empty()) return std::nullopt;
    invalid("no tensors at the top level and several dicts of tensors under it (" + key_list(top) +
            "); choose one with the state dict key option (--key)");
  }

  void take_tensors(const Entries& raw, const std::string& holder) {
    const Entries dict = deduplicate(raw, key_names(raw));
    const std::string where = holder.empty() ? "" : " in " + detail::quote(holder);
    for (const auto& [k, v] : dict) {
      const auto name = string_key(k);
      if (!name) {
        graph_.dropped.push_back(describe(k) + " key" + where + ": not a string name");
        continue;
      }
      if (is_tensor_call(at(v))) {
        graph_.tensors.push_back(tensor(v, *name));
      } else {
        graph_.dropped.push_back(*name + where + ": " + describe(v) + ", not a tensor");
      }
    }
  }
};

}  // namespace

Graph interpret(const pickle::Pickle& pickle, bool legacy, std::string_view state_dict_key,
                std::string_view origin) {
  return Interpreter(pickle, legacy, origin).run(state_dict_key);
}

}  // namespace safetensors::detail::torch
