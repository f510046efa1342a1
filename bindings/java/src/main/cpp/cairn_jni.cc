// JNI glue for the dev.cairn Java API over Cairn's C API (cairn.h), the only layer it calls.
//
// Rules kept here (../shared/PLATFORMS.md §3): classes and method ids are cached in JNI_OnLoad
// (FindClass on an engine thread would not see the app's classes); every entry point converts
// failures into Java exceptions and lets no C++ exception escape; strings cross as UTF-16
// (GetStringRegion / NewString), never as JNI's modified UTF-8, so NUL and characters beyond
// the BMP survive, and an unpaired surrogate is refused instead of silently replaced; engine
// threads are attached once and detached when they end; listeners are global references
// released when the engine drops them.
#include <jni.h>
#include <mbedtls/base64.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/cairn.h"

namespace {

using Json = nlohmann::json;

JavaVM* g_vm = nullptr;

jclass g_cairn_exception, g_callbacks, g_long, g_double, g_boolean, g_map, g_list, g_string;
jclass g_illegal_argument, g_illegal_state, g_out_of_memory, g_null_pointer;
jmethodID g_cairn_exception_init, g_cb_change, g_cb_status, g_cb_durable, g_cb_refused, g_cb_log;
jmethodID g_long_value_of, g_long_value, g_double_value_of, g_double_value, g_boolean_value_of,
    g_boolean_value, g_map_init, g_map_put, g_list_init, g_list_add;

// A pending Java exception: stop and let it propagate.
struct JavaThrown {};

// --- Threads ---------------------------------------------------------------------------------

// An engine thread attached to the JVM by us: detached when the thread ends.
struct Attachment {
  JNIEnv* env = nullptr;
  ~Attachment() {
    if (env != nullptr && g_vm != nullptr) g_vm->DetachCurrentThread();
  }
};
thread_local Attachment t_attached;

// The JNIEnv of the calling thread, attaching it (as a daemon) when it is an engine thread.
JNIEnv* CurrentEnv() {
  JNIEnv* env = nullptr;
  if (g_vm->GetEnv(reinterpret_cast<void**>(&env), JNI_VERSION_1_6) == JNI_OK) return env;
  JavaVMAttachArgs args{JNI_VERSION_1_6, const_cast<char*>("cairn"), nullptr};
#ifdef __ANDROID__
  JNIEnv** penv = &env;
#else
  void** penv = reinterpret_cast<void**>(&env);
#endif
  if (g_vm->AttachCurrentThreadAsDaemon(penv, &args) != JNI_OK) return nullptr;
  t_attached.env = env;
  return env;
}

// --- Exceptions ------------------------------------------------------------------------------

const char* CodeName(int code) {
  switch (code) {
#define XX(name, num, retry, msg) \
  case num:                       \
    return #name;
#include "cairn/errors.def"
#undef XX
    default:
      return "EUNKNOWN";
  }
}

void ThrowClass(JNIEnv* env, jclass cls, const char* message) {
  if (!env->ExceptionCheck()) env->ThrowNew(cls, message);
}

// Throws CairnException for a failed C API call (its message: cairn_error_last()).
void ThrowCairn(JNIEnv* env, int code) {
  if (env->ExceptionCheck()) return;
  if (code == CAIRN_ENOMEM) {
    env->ThrowNew(g_out_of_memory, "Cairn: out of memory");
    return;
  }
  const char* last = cairn_error_last();
  jstring name = env->NewStringUTF(CodeName(code));  // ASCII: modified UTF-8 is the same
  std::u16string text;
  for (const char* p = (*last ? last : cairn_strerror(code)); *p; p++) {
    // Messages are ASCII but may quote a name or key: keep ASCII, mark anything else.
    text.push_back(static_cast<unsigned char>(*p) < 0x80 ? static_cast<char16_t>(*p) : u'?');
  }
  jstring message =
      env->NewString(reinterpret_cast<const jchar*>(text.data()), static_cast<jsize>(text.size()));
  if (name == nullptr || message == nullptr) return;  // OutOfMemoryError pending
  auto ex = static_cast<jthrowable>(
      env->NewObject(g_cairn_exception, g_cairn_exception_init, code, name, message));
  if (ex != nullptr) env->Throw(ex);
}

bool Check(JNIEnv* env, int rc) {
  if (rc == CAIRN_OK) return true;
  ThrowCairn(env, rc);
  return false;
}

// --- Strings ---------------------------------------------------------------------------------

// Java string -> UTF-8; false (IllegalArgumentException or NullPointerException pending) for
// null or an unpaired surrogate.
bool ToUtf8(JNIEnv* env, jstring s, const char* what, std::string* out) {
  if (s == nullptr) {
    ThrowClass(env, g_null_pointer, what);
    return false;
  }
  const jsize n = env->GetStringLength(s);
  std::vector<jchar> u(static_cast<size_t>(n));
  env->GetStringRegion(s, 0, n, u.data());
  out->clear();
  out->reserve(static_cast<size_t>(n));
  for (size_t i = 0; i < u.size(); i++) {
    uint32_t c = u[i];
    if (c >= 0xD800 && c <= 0xDBFF && i + 1 < u.size() && u[i + 1] >= 0xDC00 &&
        u[i + 1] <= 0xDFFF) {
      c = 0x10000 + ((c - 0xD800) << 10) + (u[i + 1] - 0xDC00);
      i++;
    } else if (c >= 0xD800 && c <= 0xDFFF) {
      std::string msg = std::string(what) + " has an unpaired UTF-16 surrogate";
      ThrowClass(env, g_illegal_argument, msg.c_str());
      return false;
    }
    if (c < 0x80) {
      out->push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (c >> 6)));
      out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (c >> 12)));
      out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (c >> 18)));
      out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return true;
}

// A C API string argument: the engine's strings are NUL-terminated, so a NUL inside a name or
// key cannot be passed (values go through cairn_batch_set_string with a length instead).
bool ToCString(JNIEnv* env, jstring s, const char* what, std::string* out) {
  if (!ToUtf8(env, s, what, out)) return false;
  if (out->find('\0') != std::string::npos) {
    std::string msg = std::string(what) + " contains a NUL character";
    ThrowClass(env, g_illegal_argument, msg.c_str());
    return false;
  }
  return true;
}

// UTF-8 (valid: it comes from the engine) -> Java string; nullptr with an exception pending.
jstring FromUtf8(JNIEnv* env, const char* s, size_t len) {
  std::u16string u;
  u.reserve(len);
  const auto* p = reinterpret_cast<const unsigned char*>(s);
  for (size_t i = 0; i < len;) {
    uint32_t c = p[i];
    const size_t extra = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
    if (i + extra >= len) break;  // truncated (the engine never returns that)
    if (extra > 0) c &= 0x3Fu >> extra;
    for (size_t k = 1; k <= extra; k++) c = (c << 6) | (p[i + k] & 0x3F);
    i += extra + 1;
    if (c >= 0x10000) {
      c -= 0x10000;
      u.push_back(static_cast<char16_t>(0xD800 + (c >> 10)));
      u.push_back(static_cast<char16_t>(0xDC00 + (c & 0x3FF)));
    } else {
      u.push_back(static_cast<char16_t>(c));
    }
  }
  return env->NewString(reinterpret_cast<const jchar*>(u.data()), static_cast<jsize>(u.size()));
}
jstring FromUtf8(JNIEnv* env, const std::string& s) { return FromUtf8(env, s.data(), s.size()); }

// A cairn_buf returned by the C API, disposed on scope exit.
struct Buf {
  cairn_buf b{nullptr, 0};
  ~Buf() { cairn_buf_dispose(&b); }
  std::string str() const { return std::string(reinterpret_cast<const char*>(b.data), b.len); }
};

// --- JSON <-> Java ----------------------------------------------------------------------------

jobject ToJava(JNIEnv* env, const Json& j);

jobject BytesToJava(JNIEnv* env, const std::string& b64) {
  size_t n = 0;
  const auto* src = reinterpret_cast<const unsigned char*>(b64.data());
  mbedtls_base64_decode(nullptr, 0, &n, src, b64.size());
  std::vector<unsigned char> raw(n);
  if (mbedtls_base64_decode(raw.data(), raw.size(), &n, src, b64.size()) != 0) {
    ThrowClass(env, g_illegal_state, "bad base64 from the engine");
    throw JavaThrown{};
  }
  jbyteArray a = env->NewByteArray(static_cast<jsize>(n));
  if (a == nullptr) throw JavaThrown{};
  env->SetByteArrayRegion(a, 0, static_cast<jsize>(n), reinterpret_cast<const jbyte*>(raw.data()));
  return a;
}

jobject ToJava(JNIEnv* env, const Json& j) {
  jobject out = nullptr;
  switch (j.type()) {
    case Json::value_t::null:
    case Json::value_t::discarded:
      return nullptr;
    case Json::value_t::boolean:
      out = env->CallStaticObjectMethod(g_boolean, g_boolean_value_of,
                                        static_cast<jboolean>(j.get<bool>()));
      break;
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      out = env->CallStaticObjectMethod(g_long, g_long_value_of,
                                        static_cast<jlong>(j.get<int64_t>()));
      break;
    case Json::value_t::number_float:
      out = env->CallStaticObjectMethod(g_double, g_double_value_of, j.get<double>());
      break;
    case Json::value_t::string:
      out = FromUtf8(env, j.get_ref<const std::string&>());
      break;
    case Json::value_t::array: {
      out = env->NewObject(g_list, g_list_init);
      if (out == nullptr) throw JavaThrown{};
      for (const Json& e : j) {
        jobject v = ToJava(env, e);
        env->CallBooleanMethod(out, g_list_add, v);
        if (v != nullptr) env->DeleteLocalRef(v);
        if (env->ExceptionCheck()) throw JavaThrown{};
      }
      break;
    }
    case Json::value_t::object: {
      if (j.size() == 1 && j.contains("$bytes") && j["$bytes"].is_string()) {
        return BytesToJava(env, j["$bytes"].get<std::string>());
      }
      out = env->NewObject(g_map, g_map_init);  // a TreeMap: sorted by name, like the engine
      if (out == nullptr) throw JavaThrown{};
      for (auto it = j.begin(); it != j.end(); ++it) {
        jstring k = FromUtf8(env, it.key());
        if (k == nullptr) throw JavaThrown{};
        jobject v = ToJava(env, it.value());
        jobject old = env->CallObjectMethod(out, g_map_put, k, v);
        env->DeleteLocalRef(k);
        if (v != nullptr) env->DeleteLocalRef(v);
        if (old != nullptr) env->DeleteLocalRef(old);
        if (env->ExceptionCheck()) throw JavaThrown{};
      }
      break;
    }
    default:
      return nullptr;
  }
  if (out == nullptr || env->ExceptionCheck()) throw JavaThrown{};
  return out;
}

std::string Base64(const jbyte* data, size_t len) {
  size_t n = 0;
  const auto* src = reinterpret_cast<const unsigned char*>(data);
  mbedtls_base64_encode(nullptr, 0, &n, src, len);
  std::string out(n, '\0');
  mbedtls_base64_encode(reinterpret_cast<unsigned char*>(out.data()), out.size(), &n, src, len);
  out.resize(n);
  return out;
}

// A Java value (null, Boolean, Long, Double, String, byte[]) as the engine's JSON value.
bool ValueToJson(JNIEnv* env, jobject v, Json* out) {
  if (v == nullptr) {
    *out = nullptr;
  } else if (env->IsInstanceOf(v, g_boolean)) {
    *out = env->CallBooleanMethod(v, g_boolean_value) == JNI_TRUE;
  } else if (env->IsInstanceOf(v, g_long)) {
    *out = static_cast<int64_t>(env->CallLongMethod(v, g_long_value));
  } else if (env->IsInstanceOf(v, g_double)) {
    *out = env->CallDoubleMethod(v, g_double_value);
  } else if (env->IsInstanceOf(v, g_string)) {
    std::string s;
    if (!ToUtf8(env, static_cast<jstring>(v), "a string parameter", &s)) return false;
    *out = std::move(s);
  } else {
    jclass bytes = env->FindClass("[B");
    const bool is_bytes = bytes != nullptr && env->IsInstanceOf(v, bytes);
    if (bytes != nullptr) env->DeleteLocalRef(bytes);
    if (!is_bytes) {
      ThrowClass(env, g_illegal_argument,
                 "a parameter must be null, Boolean, Long, Integer, Double, String or byte[]");
      return false;
    }
    auto a = static_cast<jbyteArray>(v);
    jsize n = env->GetArrayLength(a);
    std::vector<jbyte> raw(static_cast<size_t>(n));
    env->GetByteArrayRegion(a, 0, n, raw.data());
    *out = Json{{"$bytes", Base64(raw.data(), raw.size())}};
  }
  return !env->ExceptionCheck();
}

// --- Callbacks from engine threads --------------------------------------------------------------

// A listener held by the engine: a global reference, released (on whatever thread the engine
// drops it) through free_ctx.
jobject NewListenerRef(JNIEnv* env, jobject listener) { return env->NewGlobalRef(listener); }
void FreeListenerRef(void* ctx) {
  if (ctx == nullptr) return;
  JNIEnv* env = CurrentEnv();
  if (env != nullptr) env->DeleteGlobalRef(static_cast<jobject>(ctx));
}

// Calls a static Callbacks method; a Java exception cannot go anywhere useful on an engine
// thread: Callbacks catches the listener's own, anything left is described and cleared.
template <class... A>
void CallCallbacks(JNIEnv* env, jmethodID m, A... args) {
  env->CallStaticVoidMethod(g_callbacks, m, args...);
  if (env->ExceptionCheck()) {
    env->ExceptionDescribe();
    env->ExceptionClear();
  }
}

void OnChange(void* ctx, const char* collection, const char* const* keys, size_t n, int local) {
  JNIEnv* env = CurrentEnv();
  if (env == nullptr) return;
  if (env->PushLocalFrame(16) != 0) {
    env->ExceptionClear();
    return;
  }
  jstring coll = FromUtf8(env, collection, std::strlen(collection));
  jobjectArray arr = coll ? env->NewObjectArray(static_cast<jsize>(n), g_string, nullptr) : nullptr;
  for (size_t i = 0; arr != nullptr && i < n; i++) {
    jstring k = FromUtf8(env, keys[i], std::strlen(keys[i]));
    if (k == nullptr) break;
    env->SetObjectArrayElement(arr, static_cast<jsize>(i), k);
    env->DeleteLocalRef(k);
  }
  if (arr != nullptr && !env->ExceptionCheck()) {
    CallCallbacks(env, g_cb_change, static_cast<jobject>(ctx), coll, arr,
                  static_cast<jboolean>(local != 0));
  }
  env->ExceptionClear();
  env->PopLocalFrame(nullptr);
}

void OnStatus(void* ctx, const char* json) {
  JNIEnv* env = CurrentEnv();
  if (env == nullptr) return;
  jstring s = FromUtf8(env, json, std::strlen(json));
  if (s != nullptr) {
    CallCallbacks(env, g_cb_status, static_cast<jobject>(ctx), s);
    env->DeleteLocalRef(s);
  }
  env->ExceptionClear();
}

void OnDurable(void* ctx, uint64_t through) {
  JNIEnv* env = CurrentEnv();
  if (env == nullptr) return;
  CallCallbacks(env, g_cb_durable, static_cast<jobject>(ctx), static_cast<jlong>(through));
}

void OnRefused(void* ctx, uint64_t first, uint64_t last, int code, const char* reason) {
  JNIEnv* env = CurrentEnv();
  if (env == nullptr) return;
  jstring s = FromUtf8(env, reason, std::strlen(reason));
  if (s != nullptr) {
    CallCallbacks(env, g_cb_refused, static_cast<jobject>(ctx), static_cast<jlong>(first),
                  static_cast<jlong>(last), static_cast<jint>(code), s);
    env->DeleteLocalRef(s);
  }
  env->ExceptionClear();
}

void OnLog(void* ctx, int level, const char* message) {
  JNIEnv* env = CurrentEnv();
  if (env == nullptr) return;
  jstring s = FromUtf8(env, message, std::strlen(message));
  if (s != nullptr) {
    CallCallbacks(env, g_cb_log, static_cast<jobject>(ctx), static_cast<jint>(level), s);
    env->DeleteLocalRef(s);
  }
  env->ExceptionClear();
}

// --- Entry point guard ------------------------------------------------------------------------

// Runs an entry point's body: no C++ exception reaches the JVM.
template <class R, class F>
R Guarded(JNIEnv* env, R fallback, F&& body) {
  try {
    return body();
  } catch (const JavaThrown&) {
  } catch (const std::bad_alloc&) {
    ThrowClass(env, g_out_of_memory, "Cairn: out of memory");
  } catch (const std::exception& e) {
    ThrowClass(env, g_illegal_state, e.what());
  } catch (...) {
    ThrowClass(env, g_illegal_state, "Cairn: unknown native error");
  }
  return fallback;
}

cairn_replica* R(jlong h) { return reinterpret_cast<cairn_replica*>(static_cast<intptr_t>(h)); }
cairn_sync* S(jlong h) { return reinterpret_cast<cairn_sync*>(static_cast<intptr_t>(h)); }

// The replica calls that fill a cairn_buf with text and take nothing else.
template <int (*F)(cairn_buf*, cairn_replica*)>
jstring BufCall(JNIEnv* env, jlong h) {
  return Guarded<jstring>(env, nullptr, [&]() -> jstring {
    Buf buf;
    if (!Check(env, F(&buf.b, R(h)))) return nullptr;
    return FromUtf8(env, buf.str());
  });
}

// An append's result for Java: {first seq, last seq, dropped}.
jlongArray AppendResultArray(JNIEnv* env, const cairn_append_result& r) {
  const jlong v[3] = {static_cast<jlong>(r.first_seq), static_cast<jlong>(r.last_seq),
                      static_cast<jlong>(r.dropped)};
  jlongArray out = env->NewLongArray(3);
  if (out != nullptr) env->SetLongArrayRegion(out, 0, 3, v);
  return out;
}

// Sets a sync callback `on` whose payload is a global reference to `l`, or removes it (l null).
template <class Fn>
void SetSyncListener(JNIEnv* env, int (*set)(cairn_sync*, Fn, void*, void (*)(void*)),
                     cairn_sync* s, jobject l, Fn on) {
  if (l == nullptr) {
    Check(env, set(s, nullptr, nullptr, nullptr));
    return;
  }
  jobject ref = NewListenerRef(env, l);
  if (ref != nullptr) Check(env, set(s, on, ref, FreeListenerRef));  // on failure the C API frees it
}

bool CacheClass(JNIEnv* env, const char* name, jclass* out) {
  jclass local = env->FindClass(name);
  if (local == nullptr) return false;
  *out = static_cast<jclass>(env->NewGlobalRef(local));
  env->DeleteLocalRef(local);
  return *out != nullptr;
}

}  // namespace

extern "C" {

JNIEXPORT jint JNI_OnLoad(JavaVM* vm, void*) {
  g_vm = vm;
  JNIEnv* env = nullptr;
  if (vm->GetEnv(reinterpret_cast<void**>(&env), JNI_VERSION_1_6) != JNI_OK) return JNI_ERR;
  if (!CacheClass(env, "dev/cairn/CairnException", &g_cairn_exception) ||
      !CacheClass(env, "dev/cairn/Callbacks", &g_callbacks) ||
      !CacheClass(env, "java/lang/Long", &g_long) ||
      !CacheClass(env, "java/lang/Double", &g_double) ||
      !CacheClass(env, "java/lang/Boolean", &g_boolean) ||
      !CacheClass(env, "java/lang/String", &g_string) ||
      !CacheClass(env, "java/util/TreeMap", &g_map) ||
      !CacheClass(env, "java/util/ArrayList", &g_list) ||
      !CacheClass(env, "java/lang/IllegalArgumentException", &g_illegal_argument) ||
      !CacheClass(env, "java/lang/IllegalStateException", &g_illegal_state) ||
      !CacheClass(env, "java/lang/OutOfMemoryError", &g_out_of_memory) ||
      !CacheClass(env, "java/lang/NullPointerException", &g_null_pointer)) {
    return JNI_ERR;
  }
  g_cairn_exception_init = env->GetMethodID(g_cairn_exception, "<init>",
                                            "(ILjava/lang/String;Ljava/lang/String;)V");
  g_cb_change = env->GetStaticMethodID(g_callbacks, "change",
                                       "(Ldev/cairn/ChangeListener;Ljava/lang/String;"
                                       "[Ljava/lang/String;Z)V");
  g_cb_status = env->GetStaticMethodID(g_callbacks, "status",
                                       "(Ldev/cairn/Sync$StatusListener;Ljava/lang/String;)V");
  g_cb_durable =
      env->GetStaticMethodID(g_callbacks, "durable", "(Ldev/cairn/Sync$DurableListener;J)V");
  g_cb_refused = env->GetStaticMethodID(g_callbacks, "refused",
                                        "(Ldev/cairn/Sync$RefusedListener;JJILjava/lang/String;)V");
  g_cb_log = env->GetStaticMethodID(g_callbacks, "log",
                                    "(Ldev/cairn/Cairn$Logger;ILjava/lang/String;)V");
  g_long_value_of = env->GetStaticMethodID(g_long, "valueOf", "(J)Ljava/lang/Long;");
  g_long_value = env->GetMethodID(g_long, "longValue", "()J");
  g_double_value_of = env->GetStaticMethodID(g_double, "valueOf", "(D)Ljava/lang/Double;");
  g_double_value = env->GetMethodID(g_double, "doubleValue", "()D");
  g_boolean_value_of = env->GetStaticMethodID(g_boolean, "valueOf", "(Z)Ljava/lang/Boolean;");
  g_boolean_value = env->GetMethodID(g_boolean, "booleanValue", "()Z");
  g_map_init = env->GetMethodID(g_map, "<init>", "()V");
  g_map_put = env->GetMethodID(g_map, "put",
                               "(Ljava/lang/Object;Ljava/lang/Object;)Ljava/lang/Object;");
  g_list_init = env->GetMethodID(g_list, "<init>", "()V");
  g_list_add = env->GetMethodID(g_list, "add", "(Ljava/lang/Object;)Z");
  if (env->ExceptionCheck()) return JNI_ERR;  // a method id not found
  return JNI_VERSION_1_6;
}

// --- dev.cairn.Cairn ---------------------------------------------------------------------------

JNIEXPORT jstring JNICALL Java_dev_cairn_Cairn_nativeVersion(JNIEnv* env, jclass) {
  return env->NewStringUTF(cairn_version());
}

JNIEXPORT jstring JNICALL Java_dev_cairn_Cairn_nativeCodeName(JNIEnv* env, jclass, jint code) {
  return env->NewStringUTF(CodeName(code));  // ASCII: modified UTF-8 is the same
}

JNIEXPORT void JNICALL Java_dev_cairn_Cairn_nativeSetLogger(JNIEnv* env, jclass, jint level,
                                                            jobject logger) {
  if (logger == nullptr) {
    Check(env, cairn_set_log_callback(level, nullptr, nullptr, nullptr));
    return;
  }
  jobject ref = NewListenerRef(env, logger);
  if (ref == nullptr) return;
  Check(env, cairn_set_log_callback(level, OnLog, ref, FreeListenerRef));
}

// --- dev.cairn.Replica -------------------------------------------------------------------------

JNIEXPORT jobject JNICALL Java_dev_cairn_Replica_nativeParseJson(JNIEnv* env, jclass,
                                                                 jstring json) {
  return Guarded<jobject>(env, nullptr, [&]() -> jobject {
    std::string text;
    if (!ToUtf8(env, json, "json", &text)) return nullptr;
    Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      ThrowClass(env, g_illegal_state, "the engine returned malformed JSON");
      return nullptr;
    }
    return ToJava(env, j);
  });
}

JNIEXPORT jlong JNICALL Java_dev_cairn_Replica_nativeOpen(JNIEnv* env, jclass, jstring path,
                                                          jboolean create, jboolean read_only) {
  return Guarded<jlong>(env, 0, [&]() -> jlong {
    std::string p;
    if (!ToCString(env, path, "path", &p)) return 0;
    cairn_replica_options o;
    cairn_replica_options_init(&o, CAIRN_REPLICA_OPTIONS_VERSION);
    o.create = create ? 1 : 0;
    o.read_only = read_only ? 1 : 0;
    cairn_replica* r = nullptr;
    if (!Check(env, cairn_replica_open(&r, p.c_str(), &o))) return 0;
    return static_cast<jlong>(reinterpret_cast<intptr_t>(r));
  });
}

JNIEXPORT void JNICALL Java_dev_cairn_Replica_nativeFree(JNIEnv*, jclass, jlong h) {
  cairn_replica_free(R(h));
}

JNIEXPORT jstring JNICALL Java_dev_cairn_Replica_nativeId(JNIEnv* env, jclass, jlong h) {
  char id[33];
  if (!Check(env, cairn_replica_id(id, R(h)))) return nullptr;
  return env->NewStringUTF(id);
}

// The writes return their receipt (docs/c-api.md "Write receipts"), 0 with an exception
// pending.
JNIEXPORT jlong JNICALL Java_dev_cairn_Replica_nativePutJson(JNIEnv* env, jclass, jlong h,
                                                             jstring collection, jstring key,
                                                             jstring json) {
  return Guarded<jlong>(env, 0, [&]() -> jlong {
    std::string c, k, j;
    if (!ToCString(env, collection, "collection", &c) || !ToCString(env, key, "key", &k) ||
        !ToCString(env, json, "fieldsJson", &j)) {
      return 0;
    }
    uint64_t seq = 0;
    if (!Check(env, cairn_replica_put_json_seq(R(h), c.c_str(), k.c_str(), j.c_str(), &seq))) {
      return 0;
    }
    return static_cast<jlong>(seq);
  });
}

JNIEXPORT jlong JNICALL Java_dev_cairn_Replica_nativeWrite(JNIEnv* env, jclass, jlong h,
                                                           jintArray kinds, jobjectArray colls,
                                                           jobjectArray keys, jobjectArray fields,
                                                           jobjectArray values) {
  return Guarded<jlong>(env, 0, [&]() -> jlong {
    cairn_batch* raw = nullptr;
    if (!Check(env, cairn_batch_new(&raw))) return 0;
    std::unique_ptr<cairn_batch, void (*)(cairn_batch*)> batch(raw, cairn_batch_free);
    const jsize n = env->GetArrayLength(kinds);
    std::vector<jint> kind(static_cast<size_t>(n));
    env->GetIntArrayRegion(kinds, 0, n, kind.data());
    std::string c, k, f, s;
    for (jsize i = 0; i < n; i++) {
      auto jc = static_cast<jstring>(env->GetObjectArrayElement(colls, i));
      auto jk = static_cast<jstring>(env->GetObjectArrayElement(keys, i));
      auto jf = static_cast<jstring>(env->GetObjectArrayElement(fields, i));
      jobject v = env->GetObjectArrayElement(values, i);
      const jint op = kind[static_cast<size_t>(i)];
      bool ok = ToCString(env, jc, "collection", &c) && ToCString(env, jk, "key", &k) &&
                (op == 2 || ToCString(env, jf, "field", &f));
      int rc = CAIRN_OK;
      if (ok && op == 2) {
        rc = cairn_batch_delete(batch.get(), c.c_str(), k.c_str());
      } else if (ok && op == 1) {
        rc = cairn_batch_increment(batch.get(), c.c_str(), k.c_str(), f.c_str(),
                                   env->CallLongMethod(v, g_long_value));
      } else if (ok && v == nullptr) {
        rc = cairn_batch_set_null(batch.get(), c.c_str(), k.c_str(), f.c_str());
      } else if (ok && env->IsInstanceOf(v, g_boolean)) {
        rc = cairn_batch_set_bool(batch.get(), c.c_str(), k.c_str(), f.c_str(),
                                  env->CallBooleanMethod(v, g_boolean_value) ? 1 : 0);
      } else if (ok && env->IsInstanceOf(v, g_long)) {
        rc = cairn_batch_set_int(batch.get(), c.c_str(), k.c_str(), f.c_str(),
                                 env->CallLongMethod(v, g_long_value));
      } else if (ok && env->IsInstanceOf(v, g_double)) {
        rc = cairn_batch_set_double(batch.get(), c.c_str(), k.c_str(), f.c_str(),
                                    env->CallDoubleMethod(v, g_double_value));
      } else if (ok && env->IsInstanceOf(v, g_string)) {
        ok = ToUtf8(env, static_cast<jstring>(v), "a string value", &s);
        if (ok) rc = cairn_batch_set_string(batch.get(), c.c_str(), k.c_str(), f.c_str(),
                                            s.data(), s.size());
      } else if (ok) {  // byte[] (WriteBatch admits nothing else)
        auto a = static_cast<jbyteArray>(v);
        const jsize len = env->GetArrayLength(a);
        std::vector<jbyte> b(static_cast<size_t>(len));
        env->GetByteArrayRegion(a, 0, len, b.data());
        rc = cairn_batch_set_bytes(batch.get(), c.c_str(), k.c_str(), f.c_str(),
                                   reinterpret_cast<const uint8_t*>(b.data()), b.size());
      }
      for (jobject o : {static_cast<jobject>(jc), static_cast<jobject>(jk),
                        static_cast<jobject>(jf), v}) {
        if (o != nullptr) env->DeleteLocalRef(o);
      }
      if (!ok || env->ExceptionCheck() || !Check(env, rc)) return 0;
    }
    uint64_t seq = 0;
    if (!Check(env, cairn_replica_write_seq(R(h), batch.get(), &seq))) return 0;
    return static_cast<jlong>(seq);
  });
}

JNIEXPORT jstring JNICALL Java_dev_cairn_Replica_nativeGetJson(JNIEnv* env, jclass, jlong h,
                                                               jstring collection, jstring key) {
  return Guarded<jstring>(env, nullptr, [&]() -> jstring {
    std::string c, k;
    if (!ToCString(env, collection, "collection", &c) || !ToCString(env, key, "key", &k)) {
      return nullptr;
    }
    Buf buf;
    const int rc = cairn_replica_get_json(&buf.b, R(h), c.c_str(), k.c_str());
    if (rc == CAIRN_ENOTFOUND) return nullptr;
    if (!Check(env, rc)) return nullptr;
    return FromUtf8(env, buf.str());
  });
}

JNIEXPORT jstring JNICALL Java_dev_cairn_Replica_nativeQuery(JNIEnv* env, jclass, jlong h,
                                                             jstring sql, jobjectArray params) {
  return Guarded<jstring>(env, nullptr, [&]() -> jstring {
    std::string q;
    if (!ToCString(env, sql, "sql", &q)) return nullptr;
    Json list = Json::array();
    const jsize n = env->GetArrayLength(params);
    for (jsize i = 0; i < n; i++) {
      jobject v = env->GetObjectArrayElement(params, i);
      Json j;
      const bool ok = ValueToJson(env, v, &j);
      if (v != nullptr) env->DeleteLocalRef(v);
      if (!ok) return nullptr;
      list.push_back(std::move(j));
    }
    Buf buf;
    if (!Check(env, cairn_replica_query_json_params(&buf.b, R(h), q.c_str(),
                                                    list.dump().c_str()))) {
      return nullptr;
    }
    return FromUtf8(env, buf.str());
  });
}

JNIEXPORT jstring JNICALL Java_dev_cairn_Replica_nativeDump(JNIEnv* env, jclass, jlong h) {
  return BufCall<cairn_replica_dump_json>(env, h);
}
JNIEXPORT jstring JNICALL Java_dev_cairn_Replica_nativeStatus(JNIEnv* env, jclass, jlong h) {
  return BufCall<cairn_replica_status_json>(env, h);
}
JNIEXPORT jstring JNICALL Java_dev_cairn_Replica_nativeRejected(JNIEnv* env, jclass, jlong h) {
  return BufCall<cairn_replica_rejected_json>(env, h);
}

JNIEXPORT void JNICALL Java_dev_cairn_Replica_nativeConfigureStream(
    JNIEnv* env, jclass, jlong h, jstring stream, jlong max_bytes, jlong max_age_ms, jint policy,
    jint priority) {
  Guarded<int>(env, 0, [&] {
    std::string name;
    if (!ToCString(env, stream, "stream", &name)) return 0;
    cairn_stream_options o = CAIRN_STREAM_OPTIONS_INIT;
    o.max_bytes = static_cast<uint64_t>(max_bytes);
    o.max_age_ms = max_age_ms;
    o.policy = policy;
    o.priority = priority;
    Check(env, cairn_replica_configure_stream(R(h), name.c_str(), &o));
    return 0;
  });
}

JNIEXPORT jlongArray JNICALL Java_dev_cairn_Replica_nativeAppendJson(JNIEnv* env, jclass,
                                                                    jlong h, jstring stream,
                                                                    jstring json) {
  return Guarded<jlongArray>(env, nullptr, [&]() -> jlongArray {
    std::string name, j;
    if (!ToCString(env, stream, "stream", &name) || !ToCString(env, json, "fieldsJson", &j)) {
      return nullptr;
    }
    cairn_append_result r{};
    if (!Check(env, cairn_replica_append_json(&r, R(h), name.c_str(), j.c_str()))) {
      return nullptr;
    }
    return AppendResultArray(env, r);
  });
}

// Records as Replica.appendAll flattens them: counts[i] fields per record, their names and
// values in order; ts null (stamp now) or one per record.
JNIEXPORT jlongArray JNICALL Java_dev_cairn_Replica_nativeAppend(
    JNIEnv* env, jclass, jlong h, jstring stream, jintArray counts, jobjectArray names,
    jobjectArray values, jlongArray ts) {
  return Guarded<jlongArray>(env, nullptr, [&]() -> jlongArray {
    std::string name;
    if (!ToCString(env, stream, "stream", &name)) return nullptr;
    cairn_records* raw = nullptr;
    if (!Check(env, cairn_records_new(&raw))) return nullptr;
    std::unique_ptr<cairn_records, void (*)(cairn_records*)> records(raw, cairn_records_free);
    const jsize n = env->GetArrayLength(counts);
    std::vector<jint> count(static_cast<size_t>(n));
    env->GetIntArrayRegion(counts, 0, n, count.data());
    std::vector<jlong> stamps(static_cast<size_t>(n), INT64_MIN);
    if (ts != nullptr) env->GetLongArrayRegion(ts, 0, n, stamps.data());
    jsize next = 0;
    std::string field;
    for (jsize i = 0; i < n; i++) {
      Json fields = Json::object();
      for (jint k = 0; k < count[static_cast<size_t>(i)]; k++, next++) {
        auto jn = static_cast<jstring>(env->GetObjectArrayElement(names, next));
        jobject v = env->GetObjectArrayElement(values, next);
        Json value;
        const bool ok = ToCString(env, jn, "field", &field) && ValueToJson(env, v, &value);
        if (jn != nullptr) env->DeleteLocalRef(jn);
        if (v != nullptr) env->DeleteLocalRef(v);
        if (!ok) return nullptr;
        fields[field] = std::move(value);
      }
      const int64_t stamp = ts != nullptr ? stamps[static_cast<size_t>(i)] : CAIRN_TS_NOW;
      if (!Check(env, cairn_records_add_json(records.get(), fields.dump().c_str(), stamp))) {
        return nullptr;
      }
    }
    cairn_append_result r{};
    if (!Check(env, cairn_replica_append_records(&r, R(h), name.c_str(), records.get()))) {
      return nullptr;
    }
    return AppendResultArray(env, r);
  });
}

JNIEXPORT jstring JNICALL Java_dev_cairn_Replica_nativeStreams(JNIEnv* env, jclass, jlong h) {
  return BufCall<cairn_replica_streams_json>(env, h);
}

JNIEXPORT jstring JNICALL Java_dev_cairn_Replica_nativeDigest(JNIEnv* env, jclass, jlong h) {
  char d[65];
  if (!Check(env, cairn_replica_digest(d, R(h)))) return nullptr;
  return env->NewStringUTF(d);
}

JNIEXPORT jlong JNICALL Java_dev_cairn_Replica_nativeExport(JNIEnv* env, jclass, jlong h,
                                                            jstring path) {
  return Guarded<jlong>(env, 0, [&]() -> jlong {
    std::string p;
    if (!ToCString(env, path, "path", &p)) return 0;
    uint64_t n = 0;
    if (!Check(env, cairn_replica_export(&n, R(h), p.c_str()))) return 0;
    return static_cast<jlong>(n);
  });
}

JNIEXPORT jlong JNICALL Java_dev_cairn_Replica_nativeImport(JNIEnv* env, jclass, jlong h,
                                                            jstring path) {
  return Guarded<jlong>(env, 0, [&]() -> jlong {
    std::string p;
    if (!ToCString(env, path, "path", &p)) return 0;
    uint64_t n = 0;
    if (!Check(env, cairn_replica_import(&n, R(h), p.c_str()))) return 0;
    return static_cast<jlong>(n);
  });
}

JNIEXPORT jlong JNICALL Java_dev_cairn_Replica_nativeAddChangeListener(JNIEnv* env, jclass,
                                                                       jlong h, jobject l) {
  jobject ref = NewListenerRef(env, l);
  if (ref == nullptr) return 0;
  uint64_t id = 0;
  // On failure the C API frees the context (the global reference) itself.
  if (!Check(env, cairn_replica_add_change_listener(&id, R(h), OnChange, ref, FreeListenerRef))) {
    return 0;
  }
  return static_cast<jlong>(id);
}

JNIEXPORT void JNICALL Java_dev_cairn_Replica_nativeRemoveChangeListener(JNIEnv* env, jclass,
                                                                         jlong h, jlong id) {
  const int rc = cairn_replica_remove_change_listener(R(h), static_cast<uint64_t>(id));
  if (rc != CAIRN_ENOTFOUND) Check(env, rc);  // removing twice is harmless
}

// --- dev.cairn.Sync ----------------------------------------------------------------------------

JNIEXPORT jlong JNICALL Java_dev_cairn_Sync_nativeNew(JNIEnv* env, jclass, jlong replica,
                                                      jstring server, jstring token, jboolean tls,
                                                      jstring ca_file, jstring server_name,
                                                      jstring only, jstring channels) {
  return Guarded<jlong>(env, 0, [&]() -> jlong {
    std::string srv, tok, ca, name, subset, chans;
    if (!ToCString(env, server, "server", &srv)) return 0;
    cairn_sync_options o;
    cairn_sync_options_init(&o, CAIRN_SYNC_OPTIONS_VERSION);
    o.server = srv.c_str();
    o.tls = tls ? 1 : 0;
    if (token != nullptr) {
      if (!ToCString(env, token, "token", &tok)) return 0;
      o.token = tok.c_str();
    }
    if (ca_file != nullptr) {
      if (!ToCString(env, ca_file, "caFile", &ca)) return 0;
      o.ca_file = ca.c_str();
    }
    if (server_name != nullptr) {
      if (!ToCString(env, server_name, "serverName", &name)) return 0;
      o.server_name = name.c_str();
    }
    if (only != nullptr) {
      if (!ToCString(env, only, "only", &subset)) return 0;
      o.only = subset.c_str();
    }
    if (channels != nullptr) {
      if (!ToCString(env, channels, "channels", &chans)) return 0;
      o.channels = chans.c_str();
    }
    cairn_sync* s = nullptr;
    if (!Check(env, cairn_sync_new(&s, R(replica), &o))) return 0;
    return static_cast<jlong>(reinterpret_cast<intptr_t>(s));
  });
}

JNIEXPORT void JNICALL Java_dev_cairn_Sync_nativeFree(JNIEnv*, jclass, jlong h) {
  cairn_sync_free(S(h));
}

JNIEXPORT void JNICALL Java_dev_cairn_Sync_nativeOnce(JNIEnv* env, jclass, jlong h,
                                                      jlong timeout_ms) {
  Check(env, cairn_sync_once(S(h), static_cast<uint32_t>(timeout_ms)));
}

JNIEXPORT void JNICALL Java_dev_cairn_Sync_nativeStart(JNIEnv* env, jclass, jlong h) {
  Check(env, cairn_sync_start(S(h)));
}

JNIEXPORT void JNICALL Java_dev_cairn_Sync_nativeStop(JNIEnv* env, jclass, jlong h) {
  Check(env, cairn_sync_stop(S(h)));
}

JNIEXPORT void JNICALL Java_dev_cairn_Sync_nativeNetworkChanged(JNIEnv* env, jclass, jlong h) {
  Check(env, cairn_sync_network_changed(S(h)));
}

JNIEXPORT void JNICALL Java_dev_cairn_Sync_nativeSetToken(JNIEnv* env, jclass, jlong h,
                                                          jstring token) {
  Guarded<int>(env, 0, [&]() -> int {
    std::string tok;
    if (!ToCString(env, token, "token", &tok)) return 0;
    Check(env, cairn_sync_set_token(S(h), tok.c_str()));
    return 0;
  });
}

JNIEXPORT jstring JNICALL Java_dev_cairn_Sync_nativeStatus(JNIEnv* env, jclass, jlong h) {
  return Guarded<jstring>(env, nullptr, [&]() -> jstring {
    Buf buf;
    if (!Check(env, cairn_sync_status_json(&buf.b, S(h)))) return nullptr;
    return FromUtf8(env, buf.str());
  });
}

JNIEXPORT void JNICALL Java_dev_cairn_Sync_nativeSetStatusListener(JNIEnv* env, jclass, jlong h,
                                                                   jobject l) {
  SetSyncListener(env, cairn_sync_set_status_callback, S(h), l, OnStatus);
}

JNIEXPORT void JNICALL Java_dev_cairn_Sync_nativeSetDurableListener(JNIEnv* env, jclass, jlong h,
                                                                    jobject l) {
  SetSyncListener(env, cairn_sync_set_durable_callback, S(h), l, OnDurable);
}

JNIEXPORT void JNICALL Java_dev_cairn_Sync_nativeSetRefusedListener(JNIEnv* env, jclass, jlong h,
                                                                    jobject l) {
  SetSyncListener(env, cairn_sync_set_refused_callback, S(h), l, OnRefused);
}

}  // extern "C"
