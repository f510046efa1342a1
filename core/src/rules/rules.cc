#include "rules/rules.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/sha256.h"
#include "base/strings.h"
#include "oplog/validate.h"

namespace cairn::rules {

namespace {

using Json = nlohmann::json;

Status Bad(const std::string& where, const std::string& what) {
  return Status::Invalid("rules: " + where + ": " + what);
}

// A claim's name in a grant template: what JSON allows in a member name, but no braces,
// brackets or control characters, so that the template reads one way.
bool ValidClaimName(std::string_view name) {
  if (name.empty() || name.size() > 256) return false;
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f || ch == '{' || ch == '}' || ch == '[' || ch == ']') return false;
  }
  return true;
}

// Parses one template. In a collection's channels (`for_grants` false) a placeholder is
// {field} or {$key}; in grants, {claim} or {claim[]} (at most one of those per template).
Result<Template> ParseTemplate(const std::string& where, const std::string& text, bool for_grants) {
  Template t;
  t.source = text;
  if (text.empty()) return Bad(where, "an empty template");
  if (text.size() > kMaxChannelBytes) {
    return Bad(where, "a template longer than " + std::to_string(kMaxChannelBytes) + " bytes");
  }
  size_t arrays = 0;
  size_t i = 0;
  while (i < text.size()) {
    const size_t open = text.find('{', i);
    const size_t close = text.find('}', i);
    if (close < open) return Bad(where, "'}' without '{' in \"" + text + "\"");
    if (open > i) {
      t.pieces.push_back({Template::Kind::kText, text.substr(i, open - i)});
    }
    if (open == std::string::npos) break;
    if (close == std::string::npos) return Bad(where, "'{' without '}' in \"" + text + "\"");
    std::string name = text.substr(open + 1, close - open - 1);
    if (name.find('{') != std::string::npos) {
      return Bad(where, "'{' inside a placeholder in \"" + text + "\"");
    }
    if (name.empty()) return Bad(where, "an empty placeholder {} in \"" + text + "\"");
    Template::Piece piece;
    if (!for_grants) {
      if (name == "$key") {
        piece.kind = Template::Kind::kKey;
      } else if (name[0] == '$') {
        return Bad(where, "unknown placeholder {" + name + "} (the key is {$key})");
      } else if (name.size() > 2 && name.compare(name.size() - 2, 2, "[]") == 0) {
        return Bad(where, "{" + name + "}: a document's channels take fields, not arrays");
      } else {
        Status st = ValidateFieldName(name);
        if (!st.ok()) return Bad(where, "{" + name + "}: " + st.message());
        piece.kind = Template::Kind::kField;
        piece.text = name;
      }
    } else {
      bool each = name.size() > 2 && name.compare(name.size() - 2, 2, "[]") == 0;
      if (each) name.resize(name.size() - 2);
      if (!ValidClaimName(name)) {
        return Bad(where, "{" + name + (each ? "[]" : "") + "} is not a claim's name");
      }
      if (each && ++arrays > 1) {
        return Bad(where, "more than one {claim[]} in \"" + text + "\"");
      }
      piece.kind = each ? Template::Kind::kEachClaim : Template::Kind::kClaim;
      piece.text = name;
    }
    t.pieces.push_back(std::move(piece));
    i = close + 1;
  }
  return t;
}

Result<std::vector<Template>> ParseTemplates(const std::string& where, const Json& list,
                                             bool for_grants) {
  if (!list.is_array()) return Bad(where, "not a list of templates");
  std::vector<Template> out;
  for (size_t i = 0; i < list.size(); i++) {
    const std::string at = where + "[" + std::to_string(i) + "]";
    if (!list[i].is_string()) return Bad(at, "not a string");
    CAIRN_ASSIGN_OR_RETURN(Template t, ParseTemplate(at, list[i].get<std::string>(), for_grants));
    out.push_back(std::move(t));
  }
  return out;
}

// What a field's value gives a template: strings (not empty) as they are, integers in
// decimal; nothing for other values.
bool FieldText(const Value& v, std::string* out) {
  if (v.type() == ValueType::kString && !v.as_string().empty()) {
    *out = v.as_string();
    return true;
  }
  if (v.type() == ValueType::kInt) {
    *out = std::to_string(v.as_int());
    return true;
  }
  return false;
}

// Expands a grant template over `claims` into `out`.
void ExpandGrant(const Template& t, const auth::Claims& claims, std::set<std::string>* out) {
  std::vector<std::string> results{""};
  for (const Template::Piece& p : t.pieces) {
    if (p.kind == Template::Kind::kText) {
      for (std::string& r : results) r += p.text;
      continue;
    }
    auto it = claims.values.find(p.text);
    if (it == claims.values.end()) return;
    const auth::ClaimValue& v = it->second;
    if (p.kind == Template::Kind::kClaim) {
      if (v.array || v.items.size() != 1 || v.items[0].empty()) return;
      for (std::string& r : results) r += v.items[0];
    } else {
      if (!v.array) return;
      std::vector<std::string> next;
      for (const std::string& r : results) {
        for (const std::string& item : v.items) {
          if (!item.empty()) next.push_back(r + item);
        }
      }
      results = std::move(next);
    }
  }
  for (std::string& r : results) {
    if (r.size() <= kMaxChannelBytes) out->insert(std::move(r));
  }
}

std::string Join(const std::vector<std::string>& v) {
  if (v.empty()) return "none";
  std::string s;
  for (const std::string& c : v) s += (s.empty() ? "" : ", ") + c;
  return s;
}

// Whether some of `channels` is in `granted`.
bool AnyGranted(const std::set<std::string>& granted, const std::vector<std::string>& channels) {
  return std::any_of(channels.begin(), channels.end(),
                     [&](const std::string& c) { return granted.count(c) > 0; });
}

}  // namespace

bool Grants::MayRead(const std::vector<std::string>& channels) const {
  return admin || AnyGranted(read, channels);
}

bool Grants::MayWrite(const std::vector<std::string>& channels) const {
  return admin || AnyGranted(write, channels);
}

View View::Of(const Grants& grants, const std::set<std::string>& subscribed) {
  View v;
  if (grants.admin) {
    v.all = subscribed.empty();
    v.channels = subscribed;
  } else if (subscribed.empty()) {
    v.channels = grants.read;
  } else {
    std::set_intersection(grants.read.begin(), grants.read.end(), subscribed.begin(),
                          subscribed.end(), std::inserter(v.channels, v.channels.end()));
  }
  return v;
}

bool View::Holds(const std::vector<std::string>& doc_channels) const {
  return all || AnyGranted(channels, doc_channels);
}

View View::Union(const View& other) const {
  if (all || other.all) return View{true, {}};
  View v = *this;
  v.channels.insert(other.channels.begin(), other.channels.end());
  return v;
}

View View::Intersection(const View& other) const {
  if (all) return other;
  if (other.all) return *this;
  View v;
  std::set_intersection(channels.begin(), channels.end(), other.channels.begin(),
                        other.channels.end(), std::inserter(v.channels, v.channels.end()));
  return v;
}

namespace {

Json ViewJson(const View& v) {
  return v.all ? Json("*") : Json(std::vector<std::string>(v.channels.begin(), v.channels.end()));
}

bool ViewFromJson(const Json& j, View* v) {
  if (j.is_string() && j.get<std::string>() == "*") {
    *v = View{true, {}};
    return true;
  }
  if (!j.is_array()) return false;
  for (const Json& c : j) {
    if (!c.is_string()) return false;
    v->channels.insert(c.get<std::string>());
  }
  return true;
}

}  // namespace

std::pair<View, View> ViewRecord::At(uint64_t at) const {
  if (at > cursor) return {to, to};
  for (const Tier& t : earlier) {
    if (at <= t.cursor) return {t.maybe, t.surely};
  }
  return {maybe, surely};
}

ViewRecord ViewRecord::Then(const View& view, uint64_t at) const {
  ViewRecord next{view, {}, {}, std::max(at, cursor), rules, earlier};
  if (at > cursor) {
    // Past `cursor` the replica holds `to`; at `at`, some of `to` and some of `view`.
    next.earlier.push_back(Tier{cursor, maybe, surely});
    next.maybe = to.Union(view);
    next.surely = to.Intersection(view);
    if (next.earlier.size() > kMaxTiers) {
      Tier& second = next.earlier[1];
      second.maybe = second.maybe.Union(next.earlier[0].maybe);
      second.surely = second.surely.Intersection(next.earlier[0].surely);
      next.earlier.erase(next.earlier.begin());
    }
  } else {
    next.maybe = maybe.Union(view);
    next.surely = surely.Intersection(view);
  }
  return next;
}

std::string ViewRecord::ToJson() const {
  Json j{{"to", ViewJson(to)},
         {"maybe", ViewJson(maybe)},
         {"surely", ViewJson(surely)},
         {"cursor", cursor},
         {"rules", rules}};
  if (!earlier.empty()) {
    Json tiers = Json::array();
    for (const Tier& t : earlier) {
      tiers.push_back(
          Json{{"cursor", t.cursor}, {"maybe", ViewJson(t.maybe)}, {"surely", ViewJson(t.surely)}});
    }
    j["earlier"] = std::move(tiers);
  }
  return j.dump();
}

Result<ViewRecord> ViewRecord::Parse(std::string_view text) {
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  const Status bad = Status::Corrupt("a replica's view record is malformed");
  ViewRecord r;
  if (!j.is_object() || !j.contains("cursor") || !j["cursor"].is_number_unsigned() ||
      !j.contains("to") || !ViewFromJson(j["to"], &r.to) || !j.contains("maybe") ||
      !ViewFromJson(j["maybe"], &r.maybe) || !j.contains("surely") ||
      !ViewFromJson(j["surely"], &r.surely)) {
    return bad;
  }
  r.cursor = j["cursor"].get<uint64_t>();
  if (j.contains("rules")) {
    if (!j["rules"].is_string()) return bad;
    r.rules = j["rules"].get<std::string>();
  }
  if (j.contains("earlier")) {
    if (!j["earlier"].is_array()) return bad;
    for (const Json& t : j["earlier"]) {
      Tier tier;
      if (!t.is_object() || !t.contains("cursor") || !t["cursor"].is_number_unsigned() ||
          !t.contains("maybe") || !ViewFromJson(t["maybe"], &tier.maybe) || !t.contains("surely") ||
          !ViewFromJson(t["surely"], &tier.surely)) {
        return bad;
      }
      tier.cursor = t["cursor"].get<uint64_t>();
      const uint64_t floor = r.earlier.empty() ? 0 : r.earlier.back().cursor + 1;
      if (tier.cursor < floor || tier.cursor >= r.cursor) return bad;  // ascending, before it
      r.earlier.push_back(std::move(tier));
    }
  }
  return r;
}

Result<Rules> Rules::Parse(std::string_view text) {
  Json doc;
  try {
    doc = Json::parse(text);
  } catch (const Json::parse_error& e) {
    // The byte the parser stopped at, as a line and column.
    const size_t at = std::min(e.byte > 0 ? e.byte - 1 : 0, text.size());
    const size_t line =
        1 + static_cast<size_t>(
                std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
    const size_t line_start = text.rfind('\n', at == 0 ? 0 : at - 1);
    const size_t column = at - (line_start == std::string_view::npos ? 0 : line_start + 1) + 1;
    return Status::Invalid("rules: line " + std::to_string(line) + ", column " +
                           std::to_string(column) + ": not valid JSON");
  }
  if (!doc.is_object()) return Bad("the file", "not a JSON object");
  Rules rules;
  Sha256 sha;
  sha.Update(doc.dump());
  rules.digest_ = HexEncode(sha.Finish());
  for (const auto& [name, value] : doc.items()) {
    if (name != "collections" && name != "grants") {
      return Bad(name, "unknown key (the file has \"collections\" and \"grants\")");
    }
  }
  if (!doc.contains("collections") || !doc["collections"].is_object()) {
    return Bad("collections", "missing, or not an object of collections");
  }
  for (const auto& [name, value] : doc["collections"].items()) {
    const std::string where = "collections." + name;
    Status st = ValidateCollectionName(name);
    if (!st.ok()) return Bad(where, st.message());
    if (!value.is_object()) return Bad(where, "not an object");
    CollectionRules c;
    c.name = name;
    for (const auto& [key, v] : value.items()) {
      if (key == "channels") {
        CAIRN_ASSIGN_OR_RETURN(c.channels, ParseTemplates(where + ".channels", v, false));
      } else if (key == "devices") {
        if (v == "read-only") {
          c.read_only_for_devices = true;
        } else if (v != "read-write") {
          return Bad(where + ".devices", "must be \"read-only\" or \"read-write\"");
        }
      } else {
        return Bad(where + "." + key,
                   "unknown key (a collection has \"channels\" and \"devices\")");
      }
    }
    if (!value.contains("channels")) return Bad(where + ".channels", "missing");
    // Names that differ only in case share their rules (Find), so the file may not give them
    // two (docs/crdt-semantics.md "Names that differ only in case": replicas offline may
    // create both; each document keeps its own channels).
    auto [it, fresh] = rules.collections_.emplace(AsciiLower(name), std::move(c));
    if (!fresh) {
      return Bad(where, "names the same collection as \"" + it->second.name + "\"");
    }
  }
  if (doc.contains("grants")) {
    const Json& g = doc["grants"];
    if (!g.is_object()) return Bad("grants", "not an object");
    for (const auto& [key, v] : g.items()) {
      if (key == "read") {
        CAIRN_ASSIGN_OR_RETURN(rules.read_grants_, ParseTemplates("grants.read", v, true));
      } else if (key == "write") {
        CAIRN_ASSIGN_OR_RETURN(rules.write_grants_, ParseTemplates("grants.write", v, true));
      } else {
        return Bad("grants." + key, "unknown key (grants has \"read\" and \"write\")");
      }
    }
  }
  return rules;
}

Result<Rules> Rules::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status(Code::kEIO, "cannot read the rules file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status(Code::kEIO, "cannot read the rules file " + path);
  auto rules = Parse(text.str());
  if (!rules.ok()) return Status(rules.status().code(), path + ": " + rules.status().message());
  return rules;
}

const CollectionRules* Rules::Find(const std::string& collection) const {
  // A collection spelled with other case than the rules file has the same rules: a name that
  // differs only in case cannot escape them.
  auto it = collections_.find(AsciiLower(collection));
  return it != collections_.end() ? &it->second : nullptr;
}

std::vector<std::string> Rules::Channels(const std::string& collection, const std::string& key,
                                         const Fields& fields) const {
  std::vector<std::string> out;
  const CollectionRules* c = Find(collection);
  if (c == nullptr) return out;
  for (const Template& t : c->channels) {
    std::string channel;
    bool complete = true;
    for (const Template::Piece& p : t.pieces) {
      if (p.kind == Template::Kind::kText) {
        channel += p.text;
      } else if (p.kind == Template::Kind::kKey) {
        channel += key;
      } else {
        auto it = fields.find(p.text);
        std::string text;
        if (it == fields.end() || !FieldText(it->second, &text)) {
          complete = false;
          break;
        }
        channel += text;
      }
    }
    if (complete && channel.size() <= kMaxChannelBytes) out.push_back(std::move(channel));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<Grants> Rules::GrantsFor(const auth::Claims& claims) const {
  Grants g;
  g.admin = claims.admin;
  for (const Template& t : read_grants_) ExpandGrant(t, claims, &g.read);
  for (const Template& t : write_grants_) ExpandGrant(t, claims, &g.write);
  if (g.read.size() > kMaxGrants || g.write.size() > kMaxGrants) {
    return Status(Code::kEPERM,
                  "the token's claims give more than " + std::to_string(kMaxGrants) + " channels");
  }
  return g;
}

std::vector<std::string> Rules::ReadOnlyCollections() const {
  std::vector<std::string> out;
  for (const auto& [lower, c] : collections_) {
    if (c.read_only_for_devices) out.push_back(c.name);
  }
  return out;
}

Status Rules::CheckWrite(const Grants& grants, const std::string& collection,
                         const std::string& key, const Fields* before, const Fields* after) const {
  if (grants.admin) return Status::OK();
  // A refusal names only channels the token may read: others would tell a document's fields
  // to someone who may not see it.
  auto refuse = [&](const std::string& why, const std::vector<std::string>& channels) {
    std::vector<std::string> shown;
    for (const std::string& c : channels) {
      if (grants.read.count(c) > 0) shown.push_back(c);
    }
    return Status(Code::kEPERM, "may not write " + collection + "/" + key + ": " + why +
                                    (shown.empty() ? "" : " (" + Join(shown) + ")"));
  };
  const CollectionRules* c = Find(collection);
  if (c != nullptr && c->read_only_for_devices) {
    return Status(Code::kEPERM, "collection '" + collection + "' is read-only for devices");
  }
  std::vector<std::string> before_channels;
  if (before != nullptr) {
    before_channels = Channels(collection, key, *before);
    if (!grants.MayWrite(before_channels)) {
      return refuse("it is in no channel the token may write", before_channels);
    }
  }
  if (after != nullptr) {
    const std::vector<std::string> after_channels = Channels(collection, key, *after);
    if (!grants.MayWrite(after_channels)) {
      return refuse("it would be in no channel the token may write", after_channels);
    }
    // Nobody moves a document into a channel they may not write.
    for (const std::string& ch : after_channels) {
      if (grants.write.count(ch) == 0 &&
          !std::binary_search(before_channels.begin(), before_channels.end(), ch)) {
        return refuse("it would enter a channel the token may not write", {ch});
      }
    }
  }
  if (before == nullptr && after == nullptr) {
    const std::vector<std::string> channels = Channels(collection, key, Fields());
    if (!grants.MayWrite(channels)) {
      return refuse("not visible, and its key gives no channel the token may write", channels);
    }
  }
  return Status::OK();
}

}  // namespace cairn::rules
