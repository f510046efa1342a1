// TLS for net::Conn through mbedTLS 2.28 (Debian's), with libuv doing the I/O: mbedTLS reads
// ciphertext from a buffer the connection fills and writes ciphertext back through the
// connection (custom BIO), so the same Conn code serves plain TCP and TLS.
//
// Policy: TLS 1.2 or newer; AEAD suites with ECDHE key exchange only; no renegotiation. A
// client verifies the server's certificate chain against the configured CAs (a private CA with
// `--ca`, else the system's bundle) and the host name (which must be given), and refuses the
// connection when either fails; this is on by default and cannot be skipped.
#ifndef CAIRN_NET_TLS_H_
#define CAIRN_NET_TLS_H_

#include <memory>
#include <string>

#include "base/result.h"

namespace cairn::net {

class Conn;

// Shared settings (certificates, keys, RNG) for many sessions. Not thread-safe: one loop.
class TlsConfig {
 public:
  // A server with its certificate chain and private key (PEM files).
  static Result<std::unique_ptr<TlsConfig>> Server(const std::string& cert_file,
                                                   const std::string& key_file);
  // A client trusting the CAs in `ca_file` (PEM); empty: the system's CA bundle.
  static Result<std::unique_ptr<TlsConfig>> Client(const std::string& ca_file);
  ~TlsConfig();

  struct Impl;
  Impl* impl() const { return impl_.get(); }

 private:
  TlsConfig();
  std::unique_ptr<Impl> impl_;
};

class TlsSession {
 public:
  // `server_name`: the host name the client checks the certificate against (client only).
  static Result<std::unique_ptr<TlsSession>> Create(TlsConfig* config,
                                                    const std::string& server_name);
  ~TlsSession();
  // Called by Conn::Start: a client sends its hello.
  Status Start(Conn* conn);
  // Ciphertext from the socket. Plaintext goes to conn->OnPlaintext; the end of the handshake
  // to conn->OnTlsOpen. An error (a bad certificate, a peer that does not speak TLS) is returned.
  Status OnCiphertext(const char* data, size_t len);
  // Encrypts `plaintext` and writes it through the connection (REQUIRES: handshake done).
  Status Write(const std::string& plaintext);

  struct Impl;

 private:
  TlsSession();
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::net

#endif  // CAIRN_NET_TLS_H_
