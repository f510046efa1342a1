# shellcheck shell=bash
# Sourced by the demos: the offline edits Alice, Bob and Carol make to the shared task list (a
# concurrent rename, a delete and a revival, counters from all three). Needs `c WHO ARGS...`.
offline_edits() {
  sleep 0.01; c alice put tasks groceries '{"done":true}'               ; echo "alice: groceries done"
  sleep 0.01; c bob   put tasks groceries '{"title":"Buy groceries + milk"}'; echo "bob:   renames groceries"
  sleep 0.01; c carol del tasks groceries                               ; echo "carol: deletes groceries"
  sleep 0.01; c bob   put tasks groceries '{"owner":"bob"}'             ; echo "bob:   takes groceries after carol's delete: revives it"
  sleep 0.01; c alice inc tasks tent votes 2                            ; echo "alice: +2 votes on tent"
  sleep 0.01; c carol inc tasks tent votes 5                            ; echo "carol: +5 votes on tent"
  sleep 0.01; c bob   inc tasks tent votes -1                           ; echo "bob:   -1 vote on tent"
  sleep 0.01; c carol put tasks stove '{"title":"Bring the stove","weight_kg":1.5}'; echo "carol: adds stove"
}
