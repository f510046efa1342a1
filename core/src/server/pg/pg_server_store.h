// The PostgreSQL server store: cairn-server's data in one PostgreSQL database, shared by every
// node (cairn-server process) given it (docs/scale-out.md).
//
// PostgreSQL holds what all nodes must agree on: the server id, the global log (a push's ops
// under its cursor), the receipts (per origin, every seq up to `through` is accounted for), the
// refused transactions and the replica bindings. A push is one PostgreSQL transaction: the
// origin's receipt row is locked first (two nodes never take the same origin's seqs twice),
// the ops are sorted by the shared rules (SortPush), and the cursor is taken last by
// incrementing the one head row, whose lock is held until COMMIT: the next push's cursor is
// assigned only after this one committed (or rolled back, freeing the number), so cursors
// follow commit order, without gaps, and a reader that saw cursor n has seen every cursor
// below n (docs/scale-out.md, "Why cursors never skip a commit").
//
// Each node keeps a copy in its own SQLite file (a SqliteServerStore of the same server id):
// it takes the log entries in cursor order (CatchUp) and merges them with the same rules, so
// sessions, snapshots and fan-out read locally. A node merges its own push into its copy before
// the PostgreSQL COMMIT (holding the head lock, after the entries below it), so an entry that
// cannot be merged is refused instead of logged. A reconnection checks that the database still
// holds what the copy took in (a failover to a standby that lacked it is refused). A node learns of
// other nodes' commits by LISTEN/NOTIFY (notify_socket) and catches up; a lost notification is made
// up for by the next one or by the server's periodic CatchUp.
#ifndef CAIRN_SERVER_PG_PG_SERVER_STORE_H_
#define CAIRN_SERVER_PG_PG_SERVER_STORE_H_

#include <memory>
#include <string>

#include "base/result.h"
#include "server/server_store.h"

namespace cairn::server {

// Connects to options.url, creating the tables when missing, and opens (creating) this node's
// copy at `path`. EINVAL when the file is the copy of another database (another server id) or
// is ahead of the database (restored from elsewhere): give each node its own file.
Result<std::unique_ptr<ServerStore>> OpenPgServerStore(const std::string& path,
                                                       const ServerStoreOptions& options);

}  // namespace cairn::server

#endif  // CAIRN_SERVER_PG_PG_SERVER_STORE_H_
