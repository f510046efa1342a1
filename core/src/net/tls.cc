#include "net/tls.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/x509_crt.h>

#include <unistd.h>

#include "net/conn.h"

namespace cairn::net {

namespace {

constexpr const char* kSystemCaBundle = "/etc/ssl/certs/ca-certificates.crt";

// The TLS 1.2 suites offered and accepted: AEAD ciphers (AES-GCM, ChaCha20-Poly1305) with
// ephemeral ECDH key exchange only (forward secrecy). No CBC (padding-oracle and Lucky 13
// history), no static RSA key exchange, no NULL or export ciphers. Best first; 0 ends the list.
// (mbedTLS 2.28 has no TLS 1.3; with a 3.x that does, its TLS 1.3 suites, all AEAD, must be
// added here, or 1.3 handshakes fail.)
const int kCipherSuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    0};

std::string MbedError(int rc) {
  char buf[160];
  mbedtls_strerror(rc, buf, sizeof(buf));
  return buf;
}

Status TlsError(const std::string& what, int rc) {
  return Status(Code::kENETWORK, "TLS " + what + ": " + MbedError(rc));
}

}  // namespace

struct TlsConfig::Impl {
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_ssl_config conf;
  mbedtls_x509_crt certs;  // server: its chain; client: the trusted CAs
  mbedtls_pk_context key;
  bool is_server = false;

  Impl() {
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_ssl_config_init(&conf);
    mbedtls_x509_crt_init(&certs);
    mbedtls_pk_init(&key);
  }
  ~Impl() {
    mbedtls_pk_free(&key);
    mbedtls_x509_crt_free(&certs);
    mbedtls_ssl_config_free(&conf);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
  }

  Status Init(int endpoint) {
    static const char kPers[] = "cairn-tls";
    int rc = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
                                   reinterpret_cast<const unsigned char*>(kPers), sizeof(kPers));
    if (rc != 0) return TlsError("random generator", rc);
    rc = mbedtls_ssl_config_defaults(&conf, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM,
                                     MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) return TlsError("configuration", rc);
    mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
    // TLS 1.2 or newer (mbedTLS 2.28 speaks 1.2; see kCipherSuites for 1.3).
    mbedtls_ssl_conf_min_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(&conf, kCipherSuites);
#if defined(MBEDTLS_SSL_RENEGOTIATION)
    // mbedTLS's default, said here: a renegotiation request is refused (no_renegotiation).
    mbedtls_ssl_conf_renegotiation(&conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
#endif
    is_server = endpoint == MBEDTLS_SSL_IS_SERVER;
    return Status::OK();
  }
};

TlsConfig::TlsConfig() : impl_(std::make_unique<Impl>()) {}
TlsConfig::~TlsConfig() = default;

Result<std::unique_ptr<TlsConfig>> TlsConfig::Server(const std::string& cert_file,
                                                     const std::string& key_file) {
  std::unique_ptr<TlsConfig> c(new TlsConfig());
  Impl* i = c->impl_.get();
  CAIRN_RETURN_IF_ERROR(i->Init(MBEDTLS_SSL_IS_SERVER));
  int rc = mbedtls_x509_crt_parse_file(&i->certs, cert_file.c_str());
  if (rc != 0) return Status::Invalid("cannot load certificate " + cert_file + ": " + MbedError(rc));
  rc = mbedtls_pk_parse_keyfile(&i->key, key_file.c_str(), nullptr);
  if (rc != 0) return Status::Invalid("cannot load private key " + key_file + ": " + MbedError(rc));
  rc = mbedtls_ssl_conf_own_cert(&i->conf, &i->certs, &i->key);
  if (rc != 0) return Status::Invalid("certificate and key do not fit: " + MbedError(rc));
  // Clients authenticate with tokens, not certificates.
  mbedtls_ssl_conf_authmode(&i->conf, MBEDTLS_SSL_VERIFY_NONE);
  return c;
}

Result<std::unique_ptr<TlsConfig>> TlsConfig::Client(const std::string& ca_file) {
  std::unique_ptr<TlsConfig> c(new TlsConfig());
  Impl* i = c->impl_.get();
  CAIRN_RETURN_IF_ERROR(i->Init(MBEDTLS_SSL_IS_CLIENT));
  const std::string file = ca_file.empty() ? kSystemCaBundle : ca_file;
  int rc = mbedtls_x509_crt_parse_file(&i->certs, file.c_str());
  // The system bundle may hold a few certificates mbedTLS cannot parse (rc > 0): the rest count.
  if (rc < 0 || (rc > 0 && !ca_file.empty())) {
    return Status::Invalid("cannot load CA certificates from " + file + ": " +
                           (rc < 0 ? MbedError(rc) : std::to_string(rc) + " failed to parse"));
  }
  mbedtls_ssl_conf_authmode(&i->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  mbedtls_ssl_conf_ca_chain(&i->conf, &i->certs, nullptr);
  return c;
}

struct TlsSession::Impl {
  mbedtls_ssl_context ssl;
  Conn* conn = nullptr;
  std::string in;     // ciphertext received, not yet consumed
  size_t in_pos = 0;
  bool open = false;
  bool is_server = false;

  Impl() { mbedtls_ssl_init(&ssl); }
  ~Impl() { mbedtls_ssl_free(&ssl); }

  static int Send(void* ctx, const unsigned char* buf, size_t len) {
    auto* self = static_cast<Impl*>(ctx);
    self->conn->WriteRaw(std::string(reinterpret_cast<const char*>(buf), len));
    return static_cast<int>(len);
  }
  static int Recv(void* ctx, unsigned char* buf, size_t len) {
    auto* self = static_cast<Impl*>(ctx);
    size_t avail = self->in.size() - self->in_pos;
    if (avail == 0) return MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = std::min(avail, len);
    std::memcpy(buf, self->in.data() + self->in_pos, n);
    self->in_pos += n;
    if (self->in_pos == self->in.size()) {
      self->in.clear();
      self->in_pos = 0;
    }
    return static_cast<int>(n);
  }

  Status Handshake() {
    int rc = mbedtls_ssl_handshake(&ssl);
    if (rc == 0) {
      open = true;
      conn->OnTlsOpen();
      return Status::OK();
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) return Status::OK();
    if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
      char info[512];
      mbedtls_x509_crt_verify_info(info, sizeof(info), "", mbedtls_ssl_get_verify_result(&ssl));
      std::string why(info);
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      for (char& ch : why) {
        if (ch == '\n') ch = ';';
      }
      return Status(Code::kENETWORK, "TLS: the server's certificate was refused: " + why);
    }
    return TlsError("handshake failed (is the peer speaking TLS?)", rc);
  }
};

TlsSession::TlsSession() : impl_(std::make_unique<Impl>()) {}
TlsSession::~TlsSession() = default;

Result<std::unique_ptr<TlsSession>> TlsSession::Create(TlsConfig* config,
                                                       const std::string& server_name) {
  std::unique_ptr<TlsSession> s(new TlsSession());
  int rc = mbedtls_ssl_setup(&s->impl_->ssl, &config->impl()->conf);
  if (rc != 0) return TlsError("session", rc);
  s->impl_->is_server = config->impl()->is_server;
  if (!s->impl_->is_server) {
    // The name the certificate must carry: checked by the handshake (SAN or CN). mbedTLS 2.28
    // skips the check when no name is set, so an empty one is refused here.
    if (server_name.empty()) {
      return Status::Invalid("TLS needs the server's host name to check its certificate");
    }
    rc = mbedtls_ssl_set_hostname(&s->impl_->ssl, server_name.c_str());
    if (rc != 0) return TlsError("host name", rc);
  }
  mbedtls_ssl_set_bio(&s->impl_->ssl, s->impl_.get(), Impl::Send, Impl::Recv, nullptr);
  return s;
}

Status TlsSession::Start(Conn* conn) {
  impl_->conn = conn;
  if (impl_->is_server) return Status::OK();  // waits for the client's hello
  return impl_->Handshake();
}

Status TlsSession::OnCiphertext(const char* data, size_t len) {
  impl_->in.append(data, len);
  if (!impl_->open) {
    CAIRN_RETURN_IF_ERROR(impl_->Handshake());
    if (!impl_->open) return Status::OK();
  }
  unsigned char buf[16 * 1024];
  for (;;) {
    int rc = mbedtls_ssl_read(&impl_->ssl, buf, sizeof(buf));
    if (rc > 0) {
      impl_->conn->OnPlaintext(reinterpret_cast<const char*>(buf), static_cast<size_t>(rc));
      if (impl_->conn->closing()) return Status::OK();
      continue;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) return Status::OK();
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
      return Status(Code::kENETWORK, "connection closed by the peer");
    }
    return TlsError("read", rc);
  }
}

Status TlsSession::Write(const std::string& plaintext) {
  if (!impl_->open) return Status::Internal("TLS write before the handshake completed");
  const auto* p = reinterpret_cast<const unsigned char*>(plaintext.data());
  size_t left = plaintext.size();
  while (left > 0) {
    int rc = mbedtls_ssl_write(&impl_->ssl, p, left);
    if (rc < 0) return TlsError("write", rc);
    p += rc;
    left -= static_cast<size_t>(rc);
  }
  return Status::OK();
}

}  // namespace cairn::net
