// Sync rules (docs/sync-rules.md): which channels a document is in, which channels a token may
// read and write, and the write check. One place for these rules, used by the server's read
// and write paths and by the tests' models; pure, no I/O but Load.
//
//   {"collections": {"tasks": {"channels": ["user:{owner}", "team:{team}"]},
//                    "news":  {"channels": ["public"], "devices": "read-only"}},
//    "grants": {"read":  ["public", "user:{sub}", "team:{teams[]}"],
//               "write": ["user:{sub}", "team:{teams[]}"]}}
//
// A document's channels are a function of its merged visible fields and its key, so every
// replica and every server node computes the same ones.
#ifndef CAIRN_RULES_RULES_H_
#define CAIRN_RULES_RULES_H_

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/jwt.h"
#include "base/result.h"
#include "oplog/op.h"

namespace cairn::rules {

// The longest channel name: a template whose result is longer gives no channel (nor grant).
constexpr size_t kMaxChannelBytes = 2048;
// The most grants one token may expand to (a claim `teams` of 10,000 elements and more): such
// a token is refused, not cut short.
constexpr size_t kMaxGrants = 10000;

// A channel template: literal text and placeholders, "team:{team}".
struct Template {
  enum class Kind { kText, kField, kKey, kClaim, kEachClaim };
  struct Piece {
    Kind kind = Kind::kText;
    std::string text;  // the literal, the field's name or the claim's name
  };
  std::string source;  // as written in the rules file
  std::vector<Piece> pieces;
};

struct CollectionRules {
  std::string name;  // as the rules file spells it
  std::vector<Template> channels;
  bool read_only_for_devices = false;  // "devices": "read-only": only admin tokens write it
};

// The channels a token may read and write. `admin` (the claim "admin": true) may do anything.
struct Grants {
  bool admin = false;
  std::set<std::string> read, write;

  bool MayRead(const std::vector<std::string>& channels) const;
  bool MayWrite(const std::vector<std::string>& channels) const;
};

// A client's view (docs/sync-rules.md "Reading"): the channels whose documents it holds, or
// (`all`) every document.
struct View {
  bool all = false;
  std::set<std::string> channels;

  // The view of `grants`, narrowed to the channels `subscribed` to when there are any.
  static View Of(const Grants& grants, const std::set<std::string>& subscribed);
  // Whether a document in `channels` is in the view.
  bool Holds(const std::vector<std::string>& channels) const;
  View Union(const View& other) const;
  View Intersection(const View& other) const;
  bool operator==(const View& other) const {
    return all == other.all && channels == other.channels;
  }
  bool operator!=(const View& other) const { return !(*this == other); }
};

// What the server keeps of a replica's view (docs/sync-rules.md "Changes of view"): once the
// replica's cursor is past `cursor` it holds `to`; until then it may be in any view since the
// last one it was known to hold: each covers `surely` and is covered by `maybe`. A session
// that changes the view again after its cursor moved on (a renewed token) keeps what was known
// of the cursors up to the earlier change in `earlier`, so that a client past it is not taken
// to hold what it may have held before.
struct ViewRecord {
  struct Tier {  // a client at `cursor` or before (and after the tier before) holds between
    uint64_t cursor = 0;
    View maybe, surely;
    bool operator==(const Tier& o) const {
      return cursor == o.cursor && maybe == o.maybe && surely == o.surely;
    }
  };
  static constexpr size_t kMaxTiers = 8;  // more: the two oldest are merged (wider, safe)

  View to, maybe, surely;
  uint64_t cursor = 0;
  // The digest of the sync rules the views were given under (Rules::digest; "" in a record
  // of an earlier version): a snapshot cut under other rules is not resumed.
  std::string rules;
  std::vector<Tier> earlier;  // cursors ascending, all before `cursor`

  // Certain: `view` held from `cursor` on.
  static ViewRecord Held(const View& view, uint64_t cursor, std::string rules) {
    return ViewRecord{view, view, view, cursor, std::move(rules), {}};
  }
  bool certain() const { return earlier.empty() && maybe == to && surely == to; }
  // What a replica whose cursor is `at` may hold (first) and surely holds (second).
  std::pair<View, View> At(uint64_t at) const;
  // The record once a session of this record, at cursor `at` (not before `cursor`), changes
  // the view to `view` there.
  ViewRecord Then(const View& view, uint64_t at) const;
  bool operator==(const ViewRecord& o) const {
    return to == o.to && maybe == o.maybe && surely == o.surely && cursor == o.cursor &&
           rules == o.rules && earlier == o.earlier;
  }
  std::string ToJson() const;
  static Result<ViewRecord> Parse(std::string_view json);  // ECORRUPT when malformed
};

class Rules {
 public:
  // Parses a rules file's text: EINVAL naming the line (JSON syntax) or the key ("rules:
  // collections.tasks.channels[1]: ...") of the first fault.
  static Result<Rules> Parse(std::string_view json);
  // Reads and parses the file at `path` (EIO when it cannot be read).
  static Result<Rules> Load(const std::string& path);

  // The rules of `collection`, or nullptr when the file does not name it: its documents are
  // in no channel, which only admin tokens read and write.
  const CollectionRules* Find(const std::string& collection) const;

  // The channels of the document `collection`/`key` whose visible fields are `fields`, sorted,
  // without repeats. A field that is missing, null, an empty string or of another type than
  // string and integer gives no channel from the templates that use it.
  std::vector<std::string> Channels(const std::string& collection, const std::string& key,
                                    const Fields& fields) const;

  // What `claims` may read and write: EPERM when they expand to more than kMaxGrants.
  Result<Grants> GrantsFor(const auth::Claims& claims) const;

  // The collections devices may not write (docs/sync-rules.md "Writing"), sorted.
  std::vector<std::string> ReadOnlyCollections() const;

  // SHA-256 (hex) of the file's JSON in a canonical form (keys sorted, no spaces): two files
  // that differ only in layout have the same digest (docs/sync-rules.md "Rules that change").
  const std::string& digest() const { return digest_; }

  // Whether `grants` may write the document `collection`/`key` from `before` to `after` (its
  // visible fields; nullptr: not visible, never written or deleted): OK, or EPERM saying why.
  // Judged on the channels before (an existing document: one the token may write) and after
  // (a visible one: one the token may write, and every channel it enters writable: nobody
  // moves a document into a channel they may not write); a document visible neither before
  // nor after (a delete of nothing) on the channels its key alone gives. The reason names only
  // channels the token may read.
  Status CheckWrite(const Grants& grants, const std::string& collection, const std::string& key,
                    const Fields* before, const Fields* after) const;

 private:
  // By the name in lower case: one that differs only in case has the same rules.
  std::map<std::string, CollectionRules> collections_;
  std::vector<Template> read_grants_, write_grants_;
  std::string digest_;
};

}  // namespace cairn::rules

#endif  // CAIRN_RULES_RULES_H_
