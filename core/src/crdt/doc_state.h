// The merge rules of SPEC §2, in one place, shared by every replica and the server.
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

#include <map>
#include <set>
#include <string>
#include <vector>

#include "oplog/op.h"

namespace cairn::crdt {

struct IncEntry {
  OpId id;
  int64_t delta = 0;
};

struct Cell {
  OpId set_id;             // none() when the field has no set larger than D
  Value set_value;
  OpId inc_max;            // largest increment larger than D; none() when inc_count == 0
  int64_t counter = 0;     // wrapping sum of the deltas larger than D
  int64_t inc_count = 0;   // how many increments larger than D the field has
  bool empty() const { return set_id.none() && inc_count == 0; }
  OpId Deciding() const { return set_id < inc_max ? inc_max : set_id; }
  // The value the field shows (REQUIRES: !empty()).
  Value Visible() const { return set_id < inc_max ? Value::Int(counter) : set_value; }
};

// What one apply changed, for a store that writes back only what is dirty.
struct DocChanges {
  bool del_changed = false;
  std::set<std::string> dirty_fields;              // cells changed, added or removed
  std::vector<std::pair<std::string, IncEntry>> added_incs;
  std::vector<std::pair<std::string, OpId>> removed_incs;
  bool all_incs_removed = false;                   // every stored increment is below D now
  bool any() const { return del_changed || !dirty_fields.empty(); }
  void Clear() { *this = DocChanges(); }
};

struct DocState {
  OpId del;                          // largest delete; none() if never deleted
  std::map<std::string, Cell> cells;  // by field name; only non-empty cells
  // The stored increments larger than D, per field. Only needed when a delete lands below some
  // existing op; `incs_loaded` says whether the store filled it (see NeedsIncrements).
  std::map<std::string, std::vector<IncEntry>> incs;
  bool incs_loaded = false;
  DocChanges changes;

  bool Visible() const { return !cells.empty(); }
  OpId MaxOp() const;  // largest deciding op over all fields; none() if no cell
};

// True when applying `op` to `doc` needs doc.incs to be loaded first: a delete that lands below
// some existing op must subtract the increments it covers.
bool NeedsIncrements(const DocState& doc, const Op& op);

// Applies one op (REQUIRES: !NeedsIncrements(*doc, op) || doc->incs_loaded). Records what changed
// in doc->changes. Returns true when the CRDT state changed.
bool ApplyOp(DocState* doc, const Op& op);

}  // namespace cairn::crdt

#endif  // CAIRN_CRDT_DOC_STATE_H_
