// The merge rules of docs/crdt-semantics.md, in one place, shared by every replica and the server.
//
// A DocState is the CRDT state of one document: the largest delete D, and per field a Cell with
// the field's largest set, and the increments larger than D (their count, sum and largest id).
// ApplyOp is the only way to change it. It is pure (no I/O) and satisfies, for any ops a and b:
//   commutative   Apply(Apply(s, a), b) == Apply(Apply(s, b), a)
//   idempotent    applying an op already represented in s changes nothing, for sets and deletes;
//                 increments are deduplicated by identity one level up (the per-origin watermark:
//                 the store never applies an op whose seq it has already covered)
// so the visible state is a function of the set of ops received, whatever their order.
//
// Rules (ops ordered by OpId: hlc, then origin bytes, then seq; larger wins):
//   set(f, v)      a last-writer-wins register per field; ignored when smaller than D.
//   increment(f,d) counter; its value is the sum (wrapping int64) of f's deltas larger than D.
//   delete         D := max(D, op). Everything smaller than D is dropped (garbage-collected):
//                  it can never be visible again, since D only grows.
//   A field's deciding op is its largest op of either kind: a set shows its value, an increment
//   shows the counter. A field is visible iff its deciding op is larger than D (always true for a
//   non-empty Cell, given the garbage collection); a document is visible iff a field is.
// See docs/crdt-semantics.md for the proofs sketch and examples.
#ifndef CAIRN_CRDT_DOC_STATE_H_
#define CAIRN_CRDT_DOC_STATE_H_

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "oplog/op.h"

namespace cairn::crdt {

struct IncEntry {
  OpId id;
  int64_t delta = 0;
};

// The increments of one field larger than D. Kept out of the Cell's line: most fields are only
// ever set, and a store caches a Cell per field of thousands of documents.
struct IncSum {
  OpId max;             // the largest
  int64_t counter = 0;  // the wrapping sum of their deltas
  int64_t count = 0;    // how many
};

struct Cell {
  OpId set_id;             // none() when the field has no set larger than D
  Value set_value;
  bool dirty = false;      // changed since the store last wrote it back

  Cell() = default;
  Cell(const Cell& o) { *this = o; }
  Cell& operator=(const Cell& o) {
    set_id = o.set_id;
    set_value = o.set_value;
    dirty = o.dirty;
    inc_ = o.inc_ ? std::make_unique<IncSum>(*o.inc_) : nullptr;
    return *this;
  }
  Cell(Cell&&) = default;
  Cell& operator=(Cell&&) = default;

  // The increments larger than D: the largest (none() when there are none), the counter, how
  // many.
  OpId inc_max() const { return inc_ ? inc_->max : OpId(); }
  int64_t counter() const { return inc_ ? inc_->counter : 0; }
  int64_t inc_count() const { return inc_ ? inc_->count : 0; }
  // For changing them (made on first use); DropEmptyIncs frees them when none are left.
  IncSum& incs() {
    if (!inc_) inc_ = std::make_unique<IncSum>();
    return *inc_;
  }
  void DropEmptyIncs() {
    if (inc_ && inc_->count == 0) inc_.reset();
  }

  bool empty() const { return set_id.none() && inc_count() == 0; }
  OpId Deciding() const {
    const OpId inc = inc_max();
    return set_id < inc ? inc : set_id;
  }
  // The value the field shows (REQUIRES: !empty()).
  Value Visible() const { return set_id < inc_max() ? Value::Int(counter()) : set_value; }

 private:
  std::unique_ptr<IncSum> inc_;  // null: no increment larger than D
};

// What one apply changed, for a store that writes back only what is dirty.
struct DocChanges {
  bool del_changed = false;
  bool cells_changed = false;                      // some Cell::dirty, or removed_fields
  std::vector<std::string> removed_fields;         // cells that became empty and were dropped
  std::vector<std::pair<std::string, IncEntry>> added_incs;
  std::vector<std::pair<std::string, OpId>> removed_incs;
  bool all_incs_removed = false;                   // every stored increment is below D now
  bool any() const { return del_changed || cells_changed; }
};

// The cells of a document, sorted by field name: a flat map (documents have few fields, and a
// store may cache many documents, so no per-field tree node).
class CellMap {
 public:
  using Entry = std::pair<std::string, Cell>;
  using iterator = std::vector<Entry>::iterator;
  using const_iterator = std::vector<Entry>::const_iterator;
  iterator begin() { return v_.begin(); }
  iterator end() { return v_.end(); }
  const_iterator begin() const { return v_.begin(); }
  const_iterator end() const { return v_.end(); }
  size_t size() const { return v_.size(); }
  bool empty() const { return v_.empty(); }
  void clear() { v_.clear(); }
  iterator erase(iterator it) { return v_.erase(it); }
  iterator find(const std::string& field) {
    auto it = LowerBound(field);
    return it != v_.end() && it->first == field ? it : v_.end();
  }
  const_iterator find(const std::string& field) const {
    return const_cast<CellMap*>(this)->find(field);
  }
  size_t count(const std::string& field) const { return find(field) != end() ? 1 : 0; }
  Cell& operator[](const std::string& field) {
    auto it = LowerBound(field);
    if (it == v_.end() || it->first != field) {
      if (v_.size() == v_.capacity()) {  // documents have few fields: grow by one, then by half
        auto pos = it - v_.begin();
        v_.reserve(v_.size() < 8 ? v_.size() + 1 : v_.size() + v_.size() / 2);
        it = v_.begin() + pos;
      }
      it = v_.emplace(it, field, Cell());
    }
    return it->second;
  }

 private:
  iterator LowerBound(const std::string& field) {
    return std::lower_bound(v_.begin(), v_.end(), field,
                            [](const Entry& e, const std::string& f) { return e.first < f; });
  }
  std::vector<Entry> v_;
};

struct DocState {
  OpId del;       // largest delete; none() if never deleted
  CellMap cells;  // by field name; only non-empty cells
  // The stored increments larger than D, per field. Only needed when a delete lands below some
  // existing op; `incs_loaded` says whether the store filled it (see NeedsIncrements).
  std::map<std::string, std::vector<IncEntry>> incs;
  bool incs_loaded = false;
  DocChanges changes;

  bool Visible() const { return !cells.empty(); }
  // Forgets what changed (after the store wrote it back).
  void ClearChanges();
  OpId MaxOp() const;  // largest deciding op over all fields; none() if no cell
};

// The fields a document shows: each cell's visible value.
Fields VisibleFields(const CellMap& cells);

// True when applying `op` to `doc` needs doc.incs to be loaded first: a delete that lands below
// some existing op must subtract the increments it covers.
bool NeedsIncrements(const DocState& doc, const Op& op);

// True when the increment `op` is already counted in `doc`, or below its delete (applying it
// again would count it twice; REQUIRES: doc.incs_loaded). Snapshots apply ops whose identity
// the receiver's watermark does not settle, so they ask first.
bool HasIncrement(const DocState& doc, const Op& op);

// Applies one op (REQUIRES: !NeedsIncrements(*doc, op) || doc->incs_loaded). Records what changed
// in doc->changes. Returns true when the CRDT state changed.
bool ApplyOp(DocState* doc, const Op& op);

// Folds the history below `horizon` (docs/crdt-semantics.md "History horizon"): a delete below
// it is forgotten (every op the document still holds is larger than it), and per field the
// increments below it become one entry, with the identity of the largest and the sum of their
// deltas; the cell's counter and largest increment stay as they are, so what the document shows
// does not change (REQUIRES: doc->incs_loaded). Sound only once no op below `horizon` will ever
// be applied to the document again. Records what changed in doc->changes; returns true when the
// state changed.
bool FoldHistory(DocState* doc, Hlc horizon);

// What outranks what, by the rules above; the store keeps these ops so that a refused local
// transaction can be undone (docs/protocol.md "Refused ops"), and asks here rather than decide.
//
// The ops `doc` keeps (its delete, its fields' sets, and its increments when doc.incs_loaded),
// as ops of `collection`/`key`, appended to `out`.
void StateOps(const std::string& collection, const std::string& key, const DocState& doc,
              std::vector<Op>* out);
// The ops of `doc` that applying `op` removes (the field's smaller set for a set; everything
// below it for a delete), as ops of op's document, appended to `out` (REQUIRES: doc.incs_loaded
// for a delete). Call before ApplyOp.
void SupersededBy(const DocState& doc, const Op& op, std::vector<Op>* out);
// The op of `doc` that makes `op` change nothing because it is larger: the delete `op` is below,
// or for a set the field's larger set. none() when nothing outranks `op` (an increment above the
// delete always counts).
OpId OutrankedBy(const DocState& doc, const Op& op);

}  // namespace cairn::crdt

#endif  // CAIRN_CRDT_DOC_STATE_H_
