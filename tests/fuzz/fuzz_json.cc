// Fuzz target: the JSON objects users give (`cairn put`, `cairn append`, `--lines`, the C API's
// *_json calls, query parameters): parsed, validated as document fields and as a telemetry
// record, and printed back canonically. Refusals are fine; crashes and hangs are findings.
#include <cstddef>
#include <cstdint>
#include <string>

#include "oplog/json_codec.h"
#include "replica/replica.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cairn;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto fields = ParseFieldsJson(text);
  if (fields.ok()) {
    (void)CanonicalJson(FieldsToJson(fields.value()));
    RecordBatch records;
    (void)records.Add(fields.value());
  }
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded()) {
    auto v = ValueFromJson(j);
    if (v.ok()) (void)CanonicalJson(ValueToJson(v.value()));
  }
  return 0;
}
