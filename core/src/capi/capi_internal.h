// Internals shared by the C API's translation units: the handle structs, the thread-local
// error, and the guard that keeps C++ exceptions from crossing the boundary.
#ifndef CAIRN_CAPI_CAPI_INTERNAL_H_
#define CAIRN_CAPI_CAPI_INTERNAL_H_

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "cairn/cairn.h"
#include "replica/replica.h"

struct cairn_replica {
  std::unique_ptr<cairn::Replica> impl;
};
struct cairn_batch {
  cairn::WriteBatch impl;
};

namespace cairn::capi {

inline thread_local std::string t_error;

inline int SetError(int code, const char* message) noexcept {
  try {
    t_error = message;
  } catch (...) {  // out of memory for the message: keep the code, drop the text
    t_error.clear();
  }
  return code;
}
inline int SetError(int code, const std::string& message) noexcept {
  return SetError(code, message.c_str());
}

inline int ToC(const cairn::Status& st) {
  if (st.ok()) return CAIRN_OK;
  return SetError(static_cast<int>(st.code()), st.ToString());
}

inline int Null(const char* what) noexcept {
  try {
    return SetError(CAIRN_EINVAL, std::string(what) + " is NULL");
  } catch (...) {
    return SetError(CAIRN_EINVAL, "an argument is NULL");
  }
}

inline int FillBuf(cairn_buf* out, const std::string& s) {
  auto* p = static_cast<uint8_t*>(std::malloc(s.size() + 1));
  if (!p) return SetError(CAIRN_ENOMEM, "out of memory");
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = 0;
  out->data = p;
  out->len = s.size();
  return CAIRN_OK;
}

// A callback the app stored: its function, its payload, and the function that frees the payload
// once the callback is replaced, removed or its handle freed. Held by shared_ptr, so a call in
// progress keeps it alive while it is replaced.
template <class Fn>
struct Hook {
  Fn fn = nullptr;
  void* ctx = nullptr;
  void (*free_ctx)(void*) = nullptr;
  Hook(Fn f, void* c, void (*fr)(void*)) : fn(f), ctx(c), free_ctx(fr) {}
  Hook(const Hook&) = delete;
  Hook& operator=(const Hook&) = delete;
  ~Hook() {
    if (free_ctx) free_ctx(ctx);
  }
};

// A new Hook. From here on the payload is the library's: freed once on every path, also when
// this allocation fails (then bad_alloc, which the guard turns into CAIRN_ENOMEM) or anything
// after it throws (the hook is released during the unwinding).
template <class Fn>
std::shared_ptr<Hook<Fn>> MakeHook(Fn fn, void* ctx, void (*free_ctx)(void*)) {
  auto* raw = new (std::nothrow) Hook<Fn>(fn, ctx, free_ctx);
  if (raw == nullptr) {
    if (free_ctx) free_ctx(ctx);
    throw std::bad_alloc();
  }
  return std::shared_ptr<Hook<Fn>>(raw);  // if this throws, it deletes raw: free_ctx runs
}

}  // namespace cairn::capi

#define CAIRN_CAPI_GUARD                                  \
  try {                                                   \
    t_error.clear();
#define CAIRN_CAPI_END                                    \
  }                                                       \
  catch (const std::bad_alloc&) {                         \
    return SetError(CAIRN_ENOMEM, "out of memory");        \
  }                                                       \
  catch (const std::exception& e) {                       \
    return SetError(CAIRN_EINTERNAL, e.what());            \
  }                                                       \
  catch (...) {                                           \
    return SetError(CAIRN_EINTERNAL, "unknown exception"); \
  }

#define CHECK_ARG(p) \
  if ((p) == nullptr) return Null(#p)

#endif  // CAIRN_CAPI_CAPI_INTERNAL_H_
