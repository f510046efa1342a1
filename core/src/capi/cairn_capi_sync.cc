// The C API of sync (include/cairn/sync.h) over sync::SyncClient. Same rules as cairn_capi.cc:
// every function is guarded, no exception crosses the boundary.
#include <cstddef>
#include <cstring>
#include <mutex>

#include "capi/capi_internal.h"
#include "net/conn.h"
#include "sync/sync_client.h"

using cairn::capi::FillBuf;
using cairn::capi::Null;
using cairn::capi::SetError;
using cairn::capi::ToC;
using cairn::capi::t_error;

namespace {

using DurableHook = cairn::capi::Hook<cairn_durable_fn>;
using StatusHook = cairn::capi::Hook<cairn_status_fn>;
using RefusedHook = cairn::capi::Hook<cairn_refused_fn>;

// The size of cairn_sync_options in `version` (0: unknown): version 1 ends before `channels`.
size_t SyncOptionsSize(unsigned int version) {
  switch (version) {
    case 1:
      return offsetof(cairn_sync_options, channels);
    case 2:
      return sizeof(cairn_sync_options);
    default:
      return 0;
  }
}

// A setter's NULL handle: the payload is still freed, as for every failure.
int NullSync(void* ctx, void (*free_ctx)(void*)) {
  if (free_ctx) free_ctx(ctx);
  return cairn::capi::Null("sync");
}

}  // namespace

struct cairn_sync {
  std::unique_ptr<cairn::sync::SyncClient> impl;
  std::shared_ptr<DurableHook> durable;
  std::shared_ptr<StatusHook> status;
  std::shared_ptr<RefusedHook> refused;
};

namespace {

// What the callback setters share (docs/c-api.md "Callbacks"): a NULL handle fails and frees the
// payload; fn NULL removes the callback (`set(nullptr)`) and frees the payload at once; else
// the hook replaces the one in `slot` (the old payload freed once no call of it runs: the
// client holds the hook too, through the callback `wrap` makes of it).
template <class Fn, class Set, class Wrap>
int SetHook(cairn_sync* sync, Fn fn, void* ctx, void (*free_ctx)(void*),
            std::shared_ptr<cairn::capi::Hook<Fn>> cairn_sync::*slot, Set set, Wrap wrap) {
  if (sync == nullptr) return NullSync(ctx, free_ctx);
  if (fn == nullptr) {
    set(nullptr);
    (sync->*slot).reset();
    if (free_ctx) free_ctx(ctx);
    return CAIRN_OK;
  }
  auto hook = cairn::capi::MakeHook(fn, ctx, free_ctx);
  set(wrap(hook));
  sync->*slot = std::move(hook);
  return CAIRN_OK;
}

}  // namespace

extern "C" {

CAIRN_API int cairn_sync_options_init(cairn_sync_options* opts, unsigned int version) {
  CHECK_ARG(opts);
  const size_t size = SyncOptionsSize(version);
  if (size == 0) return SetError(CAIRN_EINVAL, "unknown cairn_sync_options version");
  std::memset(opts, 0, size);  // a caller of version 1 has the smaller struct
  opts->version = version;
  return CAIRN_OK;
}

CAIRN_API int cairn_sync_new(cairn_sync** out, cairn_replica* replica,
                             const cairn_sync_options* opts) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  *out = nullptr;
  CHECK_ARG(replica);
  CHECK_ARG(opts);
  if (SyncOptionsSize(opts->version) == 0) {
    return SetError(CAIRN_EINVAL, "unknown cairn_sync_options version");
  }
  if (opts->server == nullptr) return Null("opts->server");
  cairn::sync::SyncOptions o;
  o.server = opts->server;
  std::string host;
  uint16_t port = 0;
  cairn::Status st = cairn::net::ParseHostPort(o.server, &host, &port);
  if (!st.ok()) return ToC(st);
  if (opts->token) o.token = opts->token;
  o.tls = opts->tls != 0;
  if (opts->ca_file) o.ca_file = opts->ca_file;
  if (opts->server_name) o.server_name = opts->server_name;
  if (opts->only) {
    auto only = cairn::sync::ParseCollectionList(opts->only);
    if (!only.ok()) return ToC(only.status().WithContext("only"));
    o.only = std::move(only.value());
  }
  if (opts->version >= 2 && opts->channels) {
    auto channels = cairn::sync::ParseChannelList(opts->channels);
    if (!channels.ok()) return ToC(channels.status().WithContext("channels"));
    o.channels = std::move(channels.value());
  }
  auto s = std::make_unique<cairn_sync>();
  s->impl = std::make_unique<cairn::sync::SyncClient>(replica->impl.get(), std::move(o));
  *out = s.release();
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API void cairn_sync_free(cairn_sync* sync) {
  if (!sync) return;
  try {
    sync->impl.reset();  // stops live sync first: no callback runs afterwards
  } catch (...) {
  }
  delete sync;
}

CAIRN_API int cairn_sync_once(cairn_sync* sync, uint32_t timeout_ms) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(sync);
  return ToC(sync->impl->SyncOnce(timeout_ms));
  CAIRN_CAPI_END
}

CAIRN_API int cairn_sync_start(cairn_sync* sync) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(sync);
  return ToC(sync->impl->Start());
  CAIRN_CAPI_END
}

CAIRN_API int cairn_sync_stop(cairn_sync* sync) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(sync);
  sync->impl->Stop();
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_sync_network_changed(cairn_sync* sync) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(sync);
  sync->impl->NetworkChanged();
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_sync_set_token(cairn_sync* sync, const char* token) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(sync);
  CHECK_ARG(token);
  sync->impl->SetToken(token);
  return CAIRN_OK;
  CAIRN_CAPI_END
}

CAIRN_API int cairn_sync_status_json(cairn_buf* out, cairn_sync* sync) {
  CAIRN_CAPI_GUARD
  CHECK_ARG(out);
  *out = cairn_buf{nullptr, 0};
  CHECK_ARG(sync);
  return FillBuf(out, sync->impl->status().ToJson());
  CAIRN_CAPI_END
}

CAIRN_API int cairn_sync_set_durable_callback(cairn_sync* sync, cairn_durable_fn fn, void* ctx,
                                              void (*free_ctx)(void*)) {
  CAIRN_CAPI_GUARD
  return SetHook(
      sync, fn, ctx, free_ctx, &cairn_sync::durable,
      [&](cairn::sync::DurableCallback cb) { sync->impl->SetDurableCallback(std::move(cb)); },
      [](std::shared_ptr<DurableHook> hook) -> cairn::sync::DurableCallback {
        return [hook](uint64_t through) { hook->fn(hook->ctx, through); };
      });
  CAIRN_CAPI_END
}

CAIRN_API int cairn_sync_set_refused_callback(cairn_sync* sync, cairn_refused_fn fn, void* ctx,
                                              void (*free_ctx)(void*)) {
  CAIRN_CAPI_GUARD
  return SetHook(
      sync, fn, ctx, free_ctx, &cairn_sync::refused,
      [&](cairn::sync::RefusedCallback cb) { sync->impl->SetRefusedCallback(std::move(cb)); },
      [](std::shared_ptr<RefusedHook> hook) -> cairn::sync::RefusedCallback {
        return [hook](uint64_t first, uint64_t last, cairn::Code code, const std::string& reason) {
          hook->fn(hook->ctx, first, last, static_cast<int>(code), reason.c_str());
        };
      });
  CAIRN_CAPI_END
}

CAIRN_API int cairn_sync_set_status_callback(cairn_sync* sync, cairn_status_fn fn, void* ctx,
                                             void (*free_ctx)(void*)) {
  CAIRN_CAPI_GUARD
  return SetHook(
      sync, fn, ctx, free_ctx, &cairn_sync::status,
      [&](cairn::sync::StatusCallback cb) { sync->impl->SetStatusCallback(std::move(cb)); },
      [](std::shared_ptr<StatusHook> hook) -> cairn::sync::StatusCallback {
        return [hook](const cairn::sync::SyncStatus& s) {
          const std::string json = s.ToJson();
          hook->fn(hook->ctx, json.c_str());
        };
      });
  CAIRN_CAPI_END
}

}  // extern "C"
