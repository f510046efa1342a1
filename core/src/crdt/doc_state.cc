#include "crdt/doc_state.h"

#include <algorithm>
#include <cassert>

namespace cairn::crdt {

static int64_t WrappingAdd(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}
// a - b, wrapping (negating INT64_MIN in int64 would be undefined).
static int64_t WrappingSub(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
}

OpId DocState::MaxOp() const {
  OpId max;
  for (const auto& [field, cell] : cells) max = std::max(max, cell.Deciding());
  return max;
}

Fields VisibleFields(const CellMap& cells) {
  Fields out;
  for (const auto& [name, cell] : cells) out.emplace(name, cell.Visible());
  return out;
}

void DocState::ClearChanges() {
  for (auto& [field, cell] : cells) cell.dirty = false;
  changes = DocChanges();
}

static void MarkDirty(DocState* doc, Cell* cell) {
  cell->dirty = true;
  doc->changes.cells_changed = true;
}

bool NeedsIncrements(const DocState& doc, const Op& op) {
  if (op.kind != OpKind::kDelete || !(doc.del < op.id)) return false;
  // A delete above every op wipes everything; no need to know the increments one by one.
  return op.id < doc.MaxOp();
}

static bool ApplySet(DocState* doc, const Op& op) {
  if (op.id < doc->del) return false;
  Cell& cell = doc->cells[op.field];
  if (!(cell.set_id < op.id)) return false;
  cell.set_id = op.id;
  cell.set_value = op.value;
  MarkDirty(doc, &cell);
  return true;
}

static bool ApplyIncrement(DocState* doc, const Op& op) {
  if (op.id < doc->del) return false;
  Cell& cell = doc->cells[op.field];
  IncSum& sum = cell.incs();
  sum.counter = WrappingAdd(sum.counter, op.delta);
  sum.count++;
  sum.max = std::max(sum.max, op.id);
  IncEntry entry{op.id, op.delta};
  if (doc->incs_loaded) doc->incs[op.field].push_back(entry);
  doc->changes.added_incs.emplace_back(op.field, entry);
  MarkDirty(doc, &cell);
  return true;
}

bool HasIncrement(const DocState& doc, const Op& op) {
  if (op.id < doc.del) return true;
  auto it = doc.incs.find(op.field);
  if (it == doc.incs.end()) return false;
  for (const IncEntry& e : it->second) {
    if (e.id == op.id) return true;
  }
  return false;
}

static bool ApplyDelete(DocState* doc, const Op& op) {
  if (!(doc->del < op.id)) return false;
  const bool wipe = !(op.id < doc->MaxOp());
  assert(wipe || doc->incs_loaded);
  doc->del = op.id;
  doc->changes.del_changed = true;
  if (wipe) {
    for (const auto& [field, cell] : doc->cells) doc->changes.removed_fields.push_back(field);
    doc->changes.cells_changed = !doc->cells.empty() || doc->changes.cells_changed;
    doc->cells.clear();
    doc->incs.clear();
    doc->changes.all_incs_removed = true;
    doc->changes.added_incs.clear();
    return true;
  }
  for (auto it = doc->cells.begin(); it != doc->cells.end();) {
    const std::string& field = it->first;
    Cell& cell = it->second;
    bool dirty = false;
    if (!cell.set_id.none() && cell.set_id < op.id) {
      cell.set_id = OpId();
      cell.set_value = Value();
      dirty = true;
    }
    auto incs_it = doc->incs.find(field);
    if (incs_it != doc->incs.end()) {
      auto& incs = incs_it->second;
      IncSum& sum = cell.incs();
      OpId new_max;
      for (auto inc = incs.begin(); inc != incs.end();) {
        if (inc->id < op.id) {
          sum.counter = WrappingSub(sum.counter, inc->delta);
          sum.count--;
          doc->changes.removed_incs.emplace_back(field, inc->id);
          inc = incs.erase(inc);
          dirty = true;
        } else {
          new_max = std::max(new_max, inc->id);
          ++inc;
        }
      }
      sum.max = new_max;
      cell.DropEmptyIncs();
      if (incs.empty()) doc->incs.erase(incs_it);
    }
    if (dirty) MarkDirty(doc, &cell);
    if (cell.empty()) {
      doc->changes.removed_fields.push_back(field);
      it = doc->cells.erase(it);
    } else {
      ++it;
    }
  }
  // An increment added earlier in this same batch and now removed must not be written back.
  auto& added = doc->changes.added_incs;
  added.erase(std::remove_if(added.begin(), added.end(),
                             [&](const auto& a) { return a.second.id < op.id; }),
              added.end());
  return true;
}

bool ApplyOp(DocState* doc, const Op& op) {
  switch (op.kind) {
    case OpKind::kSet:
      return ApplySet(doc, op);
    case OpKind::kIncrement:
      return ApplyIncrement(doc, op);
    case OpKind::kDelete:
      return ApplyDelete(doc, op);
  }
  return false;
}

bool FoldHistory(DocState* doc, Hlc horizon) {
  assert(doc->incs_loaded);
  bool changed = false;
  if (!doc->del.none() && doc->del.hlc < horizon) {
    doc->del = OpId();
    doc->changes.del_changed = true;
    changed = true;
  }
  for (auto it = doc->incs.begin(); it != doc->incs.end(); ++it) {
    auto& incs = it->second;
    IncEntry base;
    size_t below = 0;
    for (const IncEntry& e : incs) {
      if (e.id.hlc >= horizon) continue;
      base.id = std::max(base.id, e.id);
      base.delta = WrappingAdd(base.delta, e.delta);
      below++;
    }
    if (below < 2) continue;  // nothing to fold into one
    auto cell = doc->cells.find(it->first);
    assert(cell != doc->cells.end());
    for (const IncEntry& e : incs) {
      if (e.id.hlc < horizon) doc->changes.removed_incs.emplace_back(it->first, e.id);
    }
    incs.erase(std::remove_if(incs.begin(), incs.end(),
                              [&](const IncEntry& e) { return e.id.hlc < horizon; }),
               incs.end());
    incs.push_back(base);
    // One applied earlier in this batch is folded too: only the base is written back.
    auto& added = doc->changes.added_incs;
    added.erase(std::remove_if(added.begin(), added.end(),
                               [&](const auto& a) {
                                 return a.first == it->first && a.second.id.hlc < horizon;
                               }),
                added.end());
    added.emplace_back(it->first, base);
    cell->second.incs().count -= static_cast<int64_t>(below) - 1;
    MarkDirty(doc, &cell->second);
    changed = true;
  }
  return changed;
}

void StateOps(const std::string& collection, const std::string& key, const DocState& doc,
              std::vector<Op>* out) {
  Op op;
  op.collection = collection;
  op.key = key;
  if (!doc.del.none()) {
    op.kind = OpKind::kDelete;
    op.id = doc.del;
    out->push_back(op);
  }
  for (const auto& [field, cell] : doc.cells) {
    if (cell.set_id.none()) continue;
    op.kind = OpKind::kSet;
    op.id = cell.set_id;
    op.field = field;
    op.value = cell.set_value;
    out->push_back(op);
  }
  op.kind = OpKind::kIncrement;
  op.value = Value();
  for (const auto& [field, incs] : doc.incs) {
    for (const IncEntry& e : incs) {
      op.id = e.id;
      op.field = field;
      op.delta = e.delta;
      out->push_back(op);
    }
  }
}

void SupersededBy(const DocState& doc, const Op& op, std::vector<Op>* out) {
  if (op.kind == OpKind::kSet) {
    if (op.id < doc.del) return;
    auto it = doc.cells.find(op.field);
    if (it == doc.cells.end() || it->second.set_id.none() || !(it->second.set_id < op.id)) return;
    Op old = op;
    old.id = it->second.set_id;
    old.value = it->second.set_value;
    out->push_back(std::move(old));
  } else if (op.kind == OpKind::kDelete && doc.del < op.id) {
    const auto from = static_cast<std::ptrdiff_t>(out->size());
    StateOps(op.collection, op.key, doc, out);
    out->erase(std::remove_if(out->begin() + from, out->end(),
                              [&](const Op& o) { return !(o.id < op.id); }),
               out->end());
  }
}

OpId OutrankedBy(const DocState& doc, const Op& op) {
  if (op.id < doc.del) return doc.del;
  if (op.kind == OpKind::kSet) {
    auto it = doc.cells.find(op.field);
    if (it != doc.cells.end() && op.id < it->second.set_id) return it->second.set_id;
  }
  return OpId();
}

}  // namespace cairn::crdt

