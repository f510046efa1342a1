// The typed columns Cairn makes in PostgreSQL for values of any type, one rule for the stream
// tables (pg_stream_tables.h) and the documents' tables (cairn_data, docs/backend.md "SQL
// tables"): a column takes the type of the values that bring it (boolean, bigint, double
// precision, text, bytea), and a value that does not fit widens it (bigint and double precision
// make double precision; any other mix, text: numbers and booleans as PostgreSQL writes them,
// bytes as lowercase hex).
#ifndef CAIRN_SERVER_PG_PG_COLUMNS_H_
#define CAIRN_SERVER_PG_PG_COLUMNS_H_

#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "oplog/op.h"
#include "server/pg/pg.h"

namespace cairn::server::pg {

enum class ColType { kNone, kBool, kBigint, kDouble, kText, kBytea };

// The column type a value needs (kNone: null, any type holds it).
ColType TypeOf(const Value& v);
// The narrowest type holding values of both.
ColType Join(ColType a, ColType b);
const char* SqlType(ColType t);
// information_schema's data_type; a type Cairn does not make (someone altered the column) is
// taken as text: PostgreSQL converts into it where it can.
ColType FromSqlType(std::string_view t);
// A value as a parameter for a column of type `t` (TypeOf(v) fits in `t`); text renderings
// are kept in `arena` until the statement ran.
Param ToParam(const Value& v, ColType t, std::deque<std::string>* arena);
// `v` (not null) as a column of type `t` holds it, in PostgreSQL's text form (what ToParam
// sends, in text): for COPY.
std::string TextOf(const Value& v, ColType t);
// Appends `text` to a COPY text-format row, escaped (backslash, tab, newline, return).
void AppendCopyField(std::string* row, std::string_view text);
// A text[] literal of `items` ('{"a","b"}'), for `= ANY($1::text[])`.
std::string TextArray(const std::vector<const std::string*>& items);
// The ALTER TABLE clause that widens `column` (quoted) from `from` to `to`.
std::string WidenColumn(const std::string& column, ColType from, ColType to);

}  // namespace cairn::server::pg

#endif  // CAIRN_SERVER_PG_PG_COLUMNS_H_
