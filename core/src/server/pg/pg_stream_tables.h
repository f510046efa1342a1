// Telemetry records in PostgreSQL, for a server whose store is PostgreSQL (docs/scale-out.md):
// every node writes into the same tables, so a record is stored once whichever node it came
// through, also when a device sends a batch again through another node after a cut.
//
// As with SQLite (server/stream_tables.h), one table per stream, named as the stream, in the
// store's schema: origin text (the sending replica's id, hex), seq bigint, ts_ms bigint,
// received_ms bigint, PRIMARY KEY (origin, seq), then one column per field ever sent. PostgreSQL
// columns have a type: a new column takes the type of the field's values in the batch that brings
// it (boolean, bigint, double precision, text, bytea; bigint and double precision together make
// double precision; any other mix, text), and a later value that does not fit widens the column
// (bigint to double precision; anything else to text: numbers and booleans as PostgreSQL writes
// them, bytes as lowercase hex). Tables and columns are made (and widened) inside the batch's
// transaction, under an advisory lock that nodes share, so a failed batch leaves none behind
// and two nodes never make the same table twice.
#ifndef CAIRN_SERVER_PG_PG_STREAM_TABLES_H_
#define CAIRN_SERVER_PG_PG_STREAM_TABLES_H_

#include <memory>
#include <string>

#include "base/result.h"
#include "server/stream_tables.h"

namespace cairn::server {

// Connects to `url` (a libpq URL, as ServerStoreOptions::url).
Result<std::unique_ptr<StreamSink>> OpenPgStreamTables(const std::string& url);

}  // namespace cairn::server

#endif  // CAIRN_SERVER_PG_PG_STREAM_TABLES_H_
