// The C API of telemetry streams (cairn/stream.h) over cairn::Replica.
#include "capi/capi_internal.h"

struct cairn_records {
  cairn::RecordBatch impl;
};

using cairn::capi::FillBuf;
using cairn::capi::Null;
using cairn::capi::SetError;
using cairn::capi::t_error;
using cairn::capi::ToC;

namespace {

int Appended(cairn_append_result* out, const cairn::Result<cairn::AppendResult>& r) {
  if (!r.ok()) return ToC(r.status());
  if (out) *out = cairn_append_result{r->first_seq, r->last_seq, r->dropped};
  return CAIRN_OK;
}

}  // namespace

extern "C" {

CAIRN_API int cairn_replica_configure_stream(cairn_replica* replica, const char* stream,
                                             const cairn_stream_options* opts) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(replica);
  CHECK_ARG(stream);
  CHECK_ARG(opts);
  if (opts->version != CAIRN_STREAM_OPTIONS_VERSION) {
    return SetError(CAIRN_EINVAL, "unknown cairn_stream_options version");
  }
  if (opts->policy != CAIRN_STREAM_REJECT && opts->policy != CAIRN_STREAM_DROP_OLDEST) {
    return SetError(CAIRN_EINVAL, "unknown stream policy " + std::to_string(opts->policy));
  }
  cairn::StreamConfig config;
  config.max_bytes = opts->max_bytes;
  config.max_age_ms = opts->max_age_ms;
  config.policy = static_cast<cairn::StreamPolicy>(opts->policy);
  config.priority = opts->priority;
  return ToC(replica->impl->ConfigureStream(stream, config));
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_append_json(cairn_append_result* out, cairn_replica* replica,
                                        const char* stream, const char* fields_json) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(replica);
  CHECK_ARG(stream);
  CHECK_ARG(fields_json);
  auto fields = cairn::ParseFieldsJson(fields_json);
  if (!fields.ok()) return ToC(fields.status());
  return Appended(out, replica->impl->Append(stream, fields.value()));
  CAIRN_CAPI_END
}

CAIRN_API int cairn_records_new(cairn_records** out) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  *out = new cairn_records();
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API void cairn_records_free(cairn_records* records) { delete records; }

CAIRN_API int cairn_records_add_json(cairn_records* records, const char* fields_json,
                                     int64_t ts_ms) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(records);
  CHECK_ARG(fields_json);
  auto fields = cairn::ParseFieldsJson(fields_json);
  if (!fields.ok()) return ToC(fields.status());
  std::optional<int64_t> ts;
  if (ts_ms != CAIRN_TS_NOW) ts = ts_ms;
  return ToC(records->impl.Add(fields.value(), ts));
  CAIRN_CAPI_END
}

CAIRN_API size_t cairn_records_count(const cairn_records* records) {
  return records ? records->impl.size() : 0;
}

CAIRN_API void cairn_records_clear(cairn_records* records) {
  if (records) records->impl.Clear();
}

CAIRN_API int cairn_replica_append_records(cairn_append_result* out, cairn_replica* replica,
                                           const char* stream, const cairn_records* records) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(replica);
  CHECK_ARG(stream);
  CHECK_ARG(records);
  return Appended(out, replica->impl->Append(stream, records->impl));
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_streams_json(cairn_buf* out, cairn_replica* replica) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  *out = cairn_buf{nullptr, 0};
  CHECK_ARG(replica);
  auto streams = replica->impl->Streams();
  if (!streams.ok()) return ToC(streams.status());
  cairn::Json j = cairn::Json::object();
  const int64_t now = replica->impl->NowMs();
  for (const cairn::StreamInfo& s : streams.value()) j[s.name] = cairn::StreamJson(s, now);
  return FillBuf(out, cairn::CanonicalJson(j));
  CAIRN_CAPI_END
}

}  // extern "C"
