// The C API (include/cairn/*.h) over cairn::Replica. The only code that sees both C and C++
// types. Every function is noexcept and runs its body inside CAIRN_CAPI_GUARD, so no exception
// crosses the boundary: bad_alloc becomes CAIRN_ENOMEM, anything else CAIRN_EINTERNAL.
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "base/log.h"
#include "capi/capi_internal.h"

using cairn::capi::FillBuf;
using cairn::capi::Null;
using cairn::capi::SetError;
using cairn::capi::ToC;
using cairn::capi::t_error;

namespace {

// A write's code, and its receipt (docs/c-api.md "Write receipts") into *seq when asked for
// and it succeeded.
int WriteResult(const cairn::Result<uint64_t>& written, uint64_t* seq) {
  if (!written.ok()) return ToC(written.status());
  if (seq != nullptr) *seq = written.value();
  return CAIRN_OK;
}

}  // namespace

extern "C" {

CAIRN_API void cairn_buf_dispose(cairn_buf* buf) {
  if (!buf) return;
  std::free(buf->data);
  buf->data = nullptr;
  buf->len = 0;
}

CAIRN_API const char* cairn_error_last(void) { return t_error.c_str(); }

CAIRN_API const char* cairn_strerror(int code) {
  switch (code) {
#define XX(name, num, retry, msg) \
  case num:                       \
    return msg;
#include "cairn/errors.def"
#undef XX
    default:
      return "unknown error";
  }
}

CAIRN_API const char* cairn_version(void) { return "0.1.0"; }

CAIRN_API int cairn_set_log_callback(int min_level, cairn_log_fn fn, void* ctx,
                                     void (*free_ctx)(void*)) {
  CAIRN_CAPI_GUARD
  if (min_level < CAIRN_LOG_DEBUG || min_level > CAIRN_LOG_ERROR) {
    if (free_ctx) free_ctx(ctx);
    return SetError(CAIRN_EINVAL, "min_level must be CAIRN_LOG_DEBUG .. CAIRN_LOG_ERROR");
  }
  if (fn == nullptr) {
    cairn::log::SetSink(nullptr);
    if (free_ctx) free_ctx(ctx);
    return CAIRN_OK;
  }
  auto hook = cairn::capi::MakeHook(fn, ctx, free_ctx);
  cairn::log::SetSink(
      [hook](cairn::log::Level level, const std::string& message) {
        hook->fn(hook->ctx, static_cast<int>(level), message.c_str());
      },
      static_cast<cairn::log::Level>(min_level));
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_options_init(cairn_replica_options* opts, unsigned int version) {
  CHECK_ARG(opts);
  if (version != CAIRN_REPLICA_OPTIONS_VERSION) {
    return SetError(CAIRN_EINVAL, "unknown cairn_replica_options version");
  }
  *opts = cairn_replica_options CAIRN_REPLICA_OPTIONS_INIT;
  return CAIRN_OK;
}

CAIRN_API int cairn_replica_open(cairn_replica** out, const char* path,
                                 const cairn_replica_options* opts) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  *out = nullptr;
  CHECK_ARG(path);
  cairn::ReplicaOptions o;
  if (opts) {
    if (opts->version != CAIRN_REPLICA_OPTIONS_VERSION) {
      return SetError(CAIRN_EINVAL, "unknown cairn_replica_options version");
    }
    o.create = opts->create != 0;
    o.read_only = opts->read_only != 0;
    if (opts->busy_timeout_ms) o.busy_timeout_ms = opts->busy_timeout_ms;
  }
  auto r = cairn::Replica::Open(path, o);
  if (!r.ok()) return ToC(r.status());
  *out = new cairn_replica{std::move(r).value()};
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API void cairn_replica_free(cairn_replica* replica) {
  try {
    delete replica;
  } catch (...) {
  }
}

CAIRN_API int cairn_replica_id(char out[33], cairn_replica* replica) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  CHECK_ARG(replica);
  std::string hex = replica->impl->id().Hex();
  std::memcpy(out, hex.c_str(), 33);
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_put_json_seq(cairn_replica* replica, const char* collection,
                                         const char* key, const char* fields_json, uint64_t* seq) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(replica);
  CHECK_ARG(collection);
  CHECK_ARG(key);
  CHECK_ARG(fields_json);
  auto fields = cairn::ParseFieldsJson(fields_json);
  if (!fields.ok()) return ToC(fields.status());
  return WriteResult(replica->impl->Put(collection, key, fields.value()), seq);
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_put_json(cairn_replica* replica, const char* collection,
                                     const char* key, const char* fields_json) {
  return cairn_replica_put_json_seq(replica, collection, key, fields_json, nullptr);
}

CAIRN_API int cairn_replica_increment_seq(cairn_replica* replica, const char* collection,
                                          const char* key, const char* field, int64_t delta,
                                          uint64_t* seq) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(replica);
  CHECK_ARG(collection);
  CHECK_ARG(key);
  CHECK_ARG(field);
  return WriteResult(replica->impl->Increment(collection, key, field, delta), seq);
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_increment(cairn_replica* replica, const char* collection,
                                      const char* key, const char* field, int64_t delta) {
  return cairn_replica_increment_seq(replica, collection, key, field, delta, nullptr);
}

CAIRN_API int cairn_replica_delete_seq(cairn_replica* replica, const char* collection,
                                       const char* key, uint64_t* seq) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(replica);
  CHECK_ARG(collection);
  CHECK_ARG(key);
  return WriteResult(replica->impl->Delete(collection, key), seq);
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_delete(cairn_replica* replica, const char* collection,
                                   const char* key) {
  return cairn_replica_delete_seq(replica, collection, key, nullptr);
}

CAIRN_API int cairn_replica_get_json(cairn_buf* out, cairn_replica* replica,
                                     const char* collection, const char* key) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  *out = cairn_buf{nullptr, 0};
  CHECK_ARG(replica);
  CHECK_ARG(collection);
  CHECK_ARG(key);
  auto doc = replica->impl->Get(collection, key);
  if (!doc.ok()) return ToC(doc.status());
  if (!doc.value()) {
    return SetError(CAIRN_ENOTFOUND, std::string("ENOTFOUND: ") + collection + "/" + key +
                                         " is not visible");
  }
  return FillBuf(out, cairn::CanonicalJson(cairn::FieldsToJson(*doc.value())));
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_dump_json(cairn_buf* out, cairn_replica* replica) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  *out = cairn_buf{nullptr, 0};
  CHECK_ARG(replica);
  auto s = replica->impl->DumpString();
  if (!s.ok()) return ToC(s.status());
  return FillBuf(out, s.value());
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_digest(char out[65], cairn_replica* replica) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  CHECK_ARG(replica);
  auto d = replica->impl->Digest();
  if (!d.ok()) return ToC(d.status());
  std::memcpy(out, d.value().c_str(), 65);
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_query_json(cairn_buf* out, cairn_replica* replica,
                                       const char* sql) {
  return cairn_replica_query_json_params(out, replica, sql, "[]");
}

CAIRN_API int cairn_replica_query_json_params(cairn_buf* out, cairn_replica* replica,
                                              const char* sql, const char* params_json) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  *out = cairn_buf{nullptr, 0};
  CHECK_ARG(replica);
  CHECK_ARG(sql);
  CHECK_ARG(params_json);
  auto json = cairn::ParseJson(params_json);
  if (!json.ok()) return ToC(json.status().WithContext("params_json"));
  const cairn::Json& parsed = json.value();
  if (!parsed.is_array()) {
    return SetError(CAIRN_EINVAL, "params_json must be a JSON array of values");
  }
  std::vector<cairn::Value> params;
  for (const cairn::Json& j : parsed) {
    auto v = cairn::ValueFromJson(j);
    if (!v.ok()) return ToC(v.status());
    params.push_back(std::move(v).value());
  }
  std::string lines;
  cairn::Status st = replica->impl->Query(sql, params, [&](const std::string& row) {
    lines += row;
    lines += '\n';
    return cairn::Status::OK();
  });
  if (!st.ok()) return ToC(st);
  return FillBuf(out, lines);
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_add_change_listener(uint64_t* id_out, cairn_replica* replica,
                                                cairn_change_fn fn, void* ctx,
                                                void (*free_ctx)(void*)) {
  CAIRN_CAPI_GUARD
  if (id_out != nullptr) *id_out = 0;
  if (id_out == nullptr || replica == nullptr || fn == nullptr) {
    if (free_ctx) free_ctx(ctx);  // the payload is the library's from the call on
    return Null(id_out == nullptr ? "id_out" : replica == nullptr ? "replica" : "fn");
  }
  auto hook = cairn::capi::MakeHook(fn, ctx, free_ctx);
  *id_out = replica->impl->AddChangeListener([hook](const cairn::Replica::ChangeSet& c) {
    std::vector<const char*> keys;
    keys.reserve(c.keys.size());
    for (const std::string& k : c.keys) keys.push_back(k.c_str());
    hook->fn(hook->ctx, c.collection.c_str(), keys.data(), keys.size(), c.local ? 1 : 0);
  });
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_remove_change_listener(cairn_replica* replica, uint64_t id) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(replica);
  if (!replica->impl->RemoveChangeListener(id)) {
    return SetError(CAIRN_ENOTFOUND, "no change listener " + std::to_string(id));
  }
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_status_json(cairn_buf* out, cairn_replica* replica) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  *out = cairn_buf{nullptr, 0};
  CHECK_ARG(replica);
  auto s = replica->impl->GetStatus();
  if (!s.ok()) return ToC(s.status());
  cairn::Json j = s.value().ToJson();
  return FillBuf(out, cairn::CanonicalJson(j));
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_rejected_json(cairn_buf* out, cairn_replica* replica) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  *out = cairn_buf{nullptr, 0};
  CHECK_ARG(replica);
  std::string text;
  cairn::Status st = replica->impl->Rejected([&](const cairn::RejectedOp& r) {
    text += cairn::CanonicalJson(cairn::RejectedOpToJson(r.op, r.code, r.reason, r.at_ms));
    text += '\n';
    return cairn::Status::OK();
  });
  if (!st.ok()) return ToC(st);
  return FillBuf(out, text);
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_export(uint64_t* ops_out, cairn_replica* replica,
                                   const char* path) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(replica);
  CHECK_ARG(path);
  auto r = replica->impl->Export(path);
  if (!r.ok()) return ToC(r.status());
  if (ops_out) *ops_out = r.value().ops;
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_import(uint64_t* applied_out, cairn_replica* replica,
                                   const char* path) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(replica);
  CHECK_ARG(path);
  auto r = replica->impl->Import(path);
  if (!r.ok()) return ToC(r.status());
  if (applied_out) *applied_out = r.value().applied;
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_batch_new(cairn_batch** out) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  *out = new cairn_batch();
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API void cairn_batch_free(cairn_batch* batch) { delete batch; }

CAIRN_API void cairn_batch_clear(cairn_batch* batch) {
  if (batch) batch->impl.Clear();
}

CAIRN_API size_t cairn_batch_count(const cairn_batch* batch) {
  return batch ? batch->impl.size() : 0;
}

#define BATCH_ARGS          \
  CHECK_ARG(b);             \
  CHECK_ARG(collection);    \
  CHECK_ARG(key)

CAIRN_API int cairn_batch_set_null(cairn_batch* b, const char* collection, const char* key,
                                   const char* field) {
  CAIRN_CAPI_GUARD
  BATCH_ARGS;
  CHECK_ARG(field);
  b->impl.Set(collection, key, field, cairn::Value::Null());
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_batch_set_bool(cairn_batch* b, const char* collection, const char* key,
                                   const char* field, int value) {
  CAIRN_CAPI_GUARD
  BATCH_ARGS;
  CHECK_ARG(field);
  b->impl.Set(collection, key, field, cairn::Value::Bool(value != 0));
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_batch_set_int(cairn_batch* b, const char* collection, const char* key,
                                  const char* field, int64_t value) {
  CAIRN_CAPI_GUARD
  BATCH_ARGS;
  CHECK_ARG(field);
  b->impl.Set(collection, key, field, cairn::Value::Int(value));
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_batch_set_double(cairn_batch* b, const char* collection, const char* key,
                                     const char* field, double value) {
  CAIRN_CAPI_GUARD
  BATCH_ARGS;
  CHECK_ARG(field);
  b->impl.Set(collection, key, field, cairn::Value::Double(value));
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_batch_set_string(cairn_batch* b, const char* collection, const char* key,
                                     const char* field, const char* value, size_t len) {
  CAIRN_CAPI_GUARD
  BATCH_ARGS;
  CHECK_ARG(field);
  CHECK_ARG(value);
  b->impl.Set(collection, key, field, cairn::Value::String(std::string(value, len)));
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_batch_set_bytes(cairn_batch* b, const char* collection, const char* key,
                                    const char* field, const uint8_t* value, size_t len) {
  CAIRN_CAPI_GUARD
  BATCH_ARGS;
  CHECK_ARG(field);
  if (value == nullptr && len != 0) return Null("value");
  std::string bytes = len ? std::string(reinterpret_cast<const char*>(value), len) : std::string();
  b->impl.Set(collection, key, field, cairn::Value::Bytes(std::move(bytes)));
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_batch_increment(cairn_batch* b, const char* collection, const char* key,
                                    const char* field, int64_t delta) {
  CAIRN_CAPI_GUARD
  BATCH_ARGS;
  CHECK_ARG(field);
  b->impl.Increment(collection, key, field, delta);
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_batch_delete(cairn_batch* b, const char* collection, const char* key) {
  CAIRN_CAPI_GUARD
  BATCH_ARGS;
  b->impl.Delete(collection, key);
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_write_seq(cairn_replica* replica, const cairn_batch* batch,
                                      uint64_t* seq) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(replica);
  CHECK_ARG(batch);
  return WriteResult(replica->impl->Write(batch->impl), seq);
  CAIRN_CAPI_END
}

CAIRN_API int cairn_replica_write(cairn_replica* replica, const cairn_batch* batch) {
  return cairn_replica_write_seq(replica, batch, nullptr);
}

}  // extern "C"
