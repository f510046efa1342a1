// The server's defences (docs/RELIABILITY.md, "Security"): what TLS it speaks (1.2 or newer,
// AEAD suites only, no renegotiation), the client's host name check, and hostile peers: slow
// handshakes, too many connections from one address or in all, frames larger than a peer that
// has not said Hello may send, floods of oversized frames. Raw peers are written here with
// mbedTLS and plain sockets, so they can do what Cairn's own client never does.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/x509_crt.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "net/tls.h"
#include "oplog/validate.h"
#include "support/raw_socket.h"
#include "support/server_thread.h"

namespace cairn {
namespace {

using testing::ClosedByServer;
using testing::Dial;
using testing::LengthPrefix;
using testing::OpenReplica;
using testing::Options;
using testing::SendAll;
using testing::ServerThread;
using testing::SyncOnce;
using testing::TempDir;

// A TLS client made directly with mbedTLS, blocking, with a 5 s read timeout: it can be told
// to offer old versions, weak suites or renegotiation.
class RawTlsClient {
 public:
  RawTlsClient() {
    mbedtls_net_init(&net_);
    mbedtls_ssl_init(&ssl_);
    mbedtls_ssl_config_init(&conf_);
    mbedtls_x509_crt_init(&ca_);
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_init(&drbg_);
  }
  ~RawTlsClient() {
    mbedtls_net_free(&net_);
    mbedtls_ssl_free(&ssl_);
    mbedtls_ssl_config_free(&conf_);
    mbedtls_x509_crt_free(&ca_);
    mbedtls_ctr_drbg_free(&drbg_);
    mbedtls_entropy_free(&entropy_);
  }
  // Connects and runs the handshake; mbedTLS's result (0: established).
  int Handshake(uint16_t port, const std::string& ca_file,
                const std::function<void(mbedtls_ssl_config*)>& tweak = nullptr) {
    int rc = mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_, nullptr, 0);
    if (rc == 0) rc = mbedtls_x509_crt_parse_file(&ca_, ca_file.c_str());
    if (rc == 0) {
      rc = mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                       MBEDTLS_SSL_PRESET_DEFAULT);
    }
    if (rc != 0) return rc;
    mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, &drbg_);
    mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&conf_, &ca_, nullptr);
    mbedtls_ssl_conf_read_timeout(&conf_, 5000);
    if (tweak) tweak(&conf_);
    if ((rc = mbedtls_ssl_setup(&ssl_, &conf_)) != 0) return rc;
    if ((rc = mbedtls_ssl_set_hostname(&ssl_, "localhost")) != 0) return rc;
    const std::string port_text = std::to_string(port);
    rc = mbedtls_net_connect(&net_, "127.0.0.1", port_text.c_str(), MBEDTLS_NET_PROTO_TCP);
    if (rc != 0) return rc;
    mbedtls_ssl_set_bio(&ssl_, &net_, mbedtls_net_send, nullptr, mbedtls_net_recv_timeout);
    do {
      rc = mbedtls_ssl_handshake(&ssl_);
    } while (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE);
    return rc;
  }
  mbedtls_ssl_context* ssl() { return &ssl_; }

 private:
  mbedtls_net_context net_;
  mbedtls_ssl_context ssl_;
  mbedtls_ssl_config conf_;
  mbedtls_x509_crt ca_;
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
};

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string cmd = std::string("python3 ") + CAIRN_TEST_SRCDIR +
                      "/../examples/make_dev_certs.py " + dir_.path();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  server::ServerOptions TlsOptions() {
    server::ServerOptions o = Options(dir_);
    o.tls_cert_file = dir_.File("server.pem");
    o.tls_key_file = dir_.File("server.key");
    return o;
  }
  sync::SyncOptions TlsClient() {
    sync::SyncOptions o;
    o.tls = true;
    o.ca_file = dir_.File("ca.pem");
    o.server_name = "localhost";
    return o;
  }
  // A replica with one write syncs with `server` (its own file each time).
  Status LegitimateSync(const ServerThread& server, const sync::SyncOptions& o = {}) {
    auto r = OpenReplica(dir_.File("legit" + std::to_string(++n_) + ".db"));
    if (!r) return Status::Internal("open");
    Status st = r->Put("notes", "n" + std::to_string(n_), {{"v", Value::Int(n_)}}).status();
    if (!st.ok()) return st;
    return SyncOnce(r.get(), server.address(), o);
  }
  // Opens `n` connections and keeps them: the next one is closed at once, the `n` stay open.
  std::vector<int> FillAndOverflow(const ServerThread& server, int n) {
    std::vector<int> held;
    for (int i = 0; i < n; ++i) {
      held.push_back(Dial(server.port()));
      EXPECT_GE(held.back(), 0);
    }
    const int extra = Dial(server.port());
    EXPECT_GE(extra, 0);
    EXPECT_TRUE(ClosedByServer(extra, 5000));
    if (extra >= 0) close(extra);
    for (int fd : held) EXPECT_FALSE(ClosedByServer(fd, 50));
    return held;
  }
  // LegitimateSync, retried for up to 2.5 s while the server has not yet seen a connection go.
  Status SyncOnceThereIsRoom(const ServerThread& server) {
    Status st;
    for (int attempt = 0; attempt < 50; ++attempt) {
      st = LegitimateSync(server);
      if (st.ok()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return st;
  }
  TempDir dir_;
  int n_ = 0;
};

// --- TLS ---

TEST_F(SecurityTest, ModernClientGetsTls12WithAnAeadSuite) {
  ServerThread server(TlsOptions());
  RawTlsClient c;
  ASSERT_EQ(c.Handshake(server.port(), dir_.File("ca.pem")), 0);
  EXPECT_STREQ(mbedtls_ssl_get_version(c.ssl()), "TLSv1.2");
  const std::string suite = mbedtls_ssl_get_ciphersuite(c.ssl());
  EXPECT_TRUE(suite.find("-GCM-") != std::string::npos ||
              suite.find("CHACHA20-POLY1305") != std::string::npos)
      << suite;
  EXPECT_NE(suite.find("ECDHE"), std::string::npos) << suite;  // forward secrecy
}

TEST_F(SecurityTest, TlsBelow12IsRefused) {
  ServerThread server(TlsOptions());
  for (int minor : {MBEDTLS_SSL_MINOR_VERSION_1, MBEDTLS_SSL_MINOR_VERSION_2}) {
    SCOPED_TRACE("TLS 1." + std::to_string(minor - 1));
    RawTlsClient c;
    // The server answers with a fatal alert (protocol_version): refused by it, not by the
    // client's own settings.
    EXPECT_EQ(c.Handshake(server.port(), dir_.File("ca.pem"),
                          [&](mbedtls_ssl_config* conf) {
                            mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                                         MBEDTLS_SSL_MINOR_VERSION_1);
                            mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, minor);
                          }),
              MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE);
  }
  EXPECT_TRUE(LegitimateSync(server, TlsClient()).ok());
}

// Each suite alone: the AEAD ones are taken, every CBC one is refused.
TEST_F(SecurityTest, OnlyAeadSuitesAreAccepted) {
  ServerThread server(TlsOptions());
  auto handshake_with = [&](int suite) {
    static int list[2];
    list[0] = suite;
    list[1] = 0;
    RawTlsClient c;
    return c.Handshake(server.port(), dir_.File("ca.pem"),
                       [](mbedtls_ssl_config* conf) { mbedtls_ssl_conf_ciphersuites(conf, list); });
  };
  for (int suite : {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}) {
    EXPECT_EQ(handshake_with(suite), 0) << mbedtls_ssl_get_ciphersuite_name(suite);
  }
  for (int suite : {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
                    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
                    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
                    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384,
                    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256,
                    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384}) {
    // Built into this mbedTLS (so the client offers it), and refused by the server's alert
    // (handshake_failure: no suite in common).
    ASSERT_NE(mbedtls_ssl_ciphersuite_from_id(suite), nullptr) << suite;
    EXPECT_EQ(handshake_with(suite), MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE)
        << mbedtls_ssl_get_ciphersuite_name(suite);
  }
}

TEST_F(SecurityTest, RenegotiationIsRefused) {
  ServerThread server(TlsOptions());
  RawTlsClient c;
  ASSERT_EQ(c.Handshake(server.port(), dir_.File("ca.pem"),
                        [](mbedtls_ssl_config* conf) {
                          mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_ENABLED);
                        }),
            0);
  int rc;
  do {
    rc = mbedtls_ssl_renegotiate(c.ssl());
  } while (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE);
  EXPECT_NE(rc, 0) << "the server renegotiated";
  EXPECT_TRUE(LegitimateSync(server, TlsClient()).ok());
}

// A TLS client on a plain port is told at once: Cairn's ClientHello (AEAD suites only: under 256
// bytes) is no Cairn frame, but it read as one announcing about 66 KB, which the server waited
// for until the handshake timeout. The client's sync now fails on the server's answer, with a
// TLS error, not by running out of time.
TEST_F(SecurityTest, TlsClientOnAPlainPortFailsAtOnce) {
  server::ServerOptions o = Options(dir_);
  o.handshake_timeout_ms = 60000;
  o.conn.frame_timeout_ms = 60000;
  ServerThread server(o);
  auto r = OpenReplica(dir_.File("tls-on-plain.db"));
  ASSERT_TRUE(r->Put("notes", "n", {{"v", Value::Int(1)}}).ok());
  sync::SyncOptions so = TlsClient();
  so.server = "127.0.0.1:" + std::to_string(server.port());
  so.backoff_min_ms = 10;
  sync::SyncClient c(r.get(), so);
  Status st = c.SyncOnce(20000);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.code(), Code::kETIMEDOUT) << st.ToString();
  EXPECT_TRUE(LegitimateSync(server).ok());
}

// The sizes docs/protocol.md "Limits" rests on cannot be configured away: a frame limit below
// what the largest transaction needs or above what a client takes, a batch of more ops than a
// client decodes, no budget before Hello: the server refuses to start (EINVAL).
TEST_F(SecurityTest, LimitsOutsideTheirRangeAreRefusedAtStart) {
  auto start = [&](const std::function<void(server::ServerOptions*)>& set) {
    server::ServerOptions o = Options(dir_);
    set(&o);
    return server::SyncServer::Create(o).status();
  };
  EXPECT_TRUE(start([](server::ServerOptions* o) {
                o->conn.limits.max_frame_bytes = protocol::kMinMaxFrameBytes;
              }).ok());
  EXPECT_TRUE(start([](server::ServerOptions* o) {
                o->conn.limits.max_frame_bytes = protocol::kMaxMaxFrameBytes;
              }).ok());
  EXPECT_EQ(start([](server::ServerOptions* o) {
              o->conn.limits.max_frame_bytes = protocol::kMinMaxFrameBytes - 1;
            }).code(),
            Code::kEINVAL);
  EXPECT_EQ(start([](server::ServerOptions* o) {
              o->conn.limits.max_frame_bytes = protocol::kMaxMaxFrameBytes + 1;
            }).code(),
            Code::kEINVAL);
  EXPECT_EQ(start([](server::ServerOptions* o) {
              o->max_batch_ops = static_cast<uint32_t>(kMaxTransactionOps) + 1;
            }).code(),
            Code::kEINVAL);
  EXPECT_EQ(start([](server::ServerOptions* o) { o->max_unauthenticated_bytes = 0; }).code(),
            Code::kEINVAL);
}

// Without a name there is nothing to check the certificate against: refused, not skipped.
TEST_F(SecurityTest, ClientTlsNeedsAHostName) {
  auto config = net::TlsConfig::Client(dir_.File("ca.pem"));
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto session = net::TlsSession::Create(config.value().get(), "");
  EXPECT_EQ(session.status().code(), Code::kEINVAL);
}

// A peer trickling its TLS handshake is cut at the handshake timeout, not the idle timeout.
TEST_F(SecurityTest, SlowTlsHandshakeIsCut) {
  server::ServerOptions o = TlsOptions();
  o.handshake_timeout_ms = 1000;
  o.conn.idle_timeout_ms = 60000;
  ServerThread server(o);
  int fd = Dial(server.port());
  ASSERT_GE(fd, 0);
  // A handshake record header announcing 200 bytes, then one byte every 100 ms.
  ASSERT_TRUE(SendAll(fd, std::string("\x16\x03\x01\x00\xc8", 5)));
  bool closed = false;
  for (int i = 0; i < 100 && !closed; ++i) {
    if (!SendAll(fd, std::string(1, '\x01'))) {
      closed = true;
      break;
    }
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) closed = ClosedByServer(fd, 100);
  }
  EXPECT_TRUE(closed) << "still open after 10 s";
  close(fd);
  EXPECT_TRUE(LegitimateSync(server, TlsClient()).ok());
}

// --- Hostile peers on a plain port ---

TEST_F(SecurityTest, SlowLorisPeersDoNotStopOthers) {
  server::ServerOptions o = Options(dir_);
  o.handshake_timeout_ms = 1500;
  ServerThread server(o);
  std::vector<int> slow;
  for (int i = 0; i < 40; ++i) {
    int fd = Dial(server.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, LengthPrefix(100)));  // a Hello that never comes
    slow.push_back(fd);
  }
  std::thread trickle([&] {
    for (int round = 0; round < 10; ++round) {
      for (int fd : slow) (void)send(fd, "x", 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  EXPECT_TRUE(LegitimateSync(server).ok());
  trickle.join();
  for (int fd : slow) {
    EXPECT_TRUE(ClosedByServer(fd, 10000));
    close(fd);
  }
  EXPECT_TRUE(LegitimateSync(server).ok());
}

TEST_F(SecurityTest, ConnectionsPerAddressAreLimited) {
  server::ServerOptions o = Options(dir_);
  o.max_connections_per_address = 6;
  ServerThread server(o);
  std::vector<int> held = FillAndOverflow(server, 6);
  EXPECT_NE(server.log().find("too many connections from 127.0.0.1"), std::string::npos)
      << server.log();
  // One goes away: room for one more.
  close(held.back());
  held.pop_back();
  Status st = SyncOnceThereIsRoom(server);
  EXPECT_TRUE(st.ok()) << st.ToString();
  for (int fd : held) close(fd);
}

TEST_F(SecurityTest, ConnectionsInAllAreLimited) {
  server::ServerOptions o = Options(dir_);
  o.max_connections = 3;
  ServerThread server(o);
  for (int fd : FillAndOverflow(server, 3)) close(fd);
  Status st = SyncOnceThereIsRoom(server);
  EXPECT_TRUE(st.ok()) << st.ToString();
}

TEST(AddressKeyTest, Ipv6CountsPerSlash64AndMappedIpv4AsIpv4) {
  EXPECT_EQ(server::AddressKey("10.1.2.3"), "10.1.2.3");
  EXPECT_EQ(server::AddressKey("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
  EXPECT_EQ(server::AddressKey("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64");
  EXPECT_NE(server::AddressKey("2001:db8:1:3::1"), server::AddressKey("2001:db8:1:2::1"));
  EXPECT_EQ(server::AddressKey("::ffff:10.1.2.3"), "10.1.2.3");
  EXPECT_EQ(server::AddressKey("::1"), "::/64");
  EXPECT_EQ(server::AddressKey(""), "");  // an unknown peer: one shared key, still counted
}

// Before Hello a peer may send only a small frame: announcing a large one (legal after Hello)
// closes the connection at once instead of buffering it.
TEST_F(SecurityTest, LargeFrameBeforeHelloIsRefusedAtItsHeader) {
  server::ServerOptions o = Options(dir_);
  o.conn.frame_timeout_ms = 60000;
  o.handshake_timeout_ms = 60000;
  ServerThread server(o);
  int fd = Dial(server.port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, LengthPrefix(4u << 20)));  // 4 MiB: under the 16 MiB frame limit
  EXPECT_TRUE(ClosedByServer(fd, 5000));
  close(fd);
  // The server says why (its log line follows the close).
  bool said = false;
  for (int i = 0; i < 100 && !said; ++i) {
    said = server.log().find("exceeds the limit of 262144 before Hello") != std::string::npos;
    if (!said) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(said) << server.log();
}

TEST_F(SecurityTest, FloodOfOversizedFramesDoesNotHurtOthers) {
  ServerThread server(Options(dir_));
  std::atomic<bool> stop{false};
  std::atomic<int> closed{0}, sent{0};
  std::thread flood([&] {
    while (!stop) {
      int fd = Dial(server.port());
      if (fd < 0) continue;
      if (SendAll(fd, LengthPrefix(0xfffffff0u) + std::string(1024, 'x'))) ++sent;
      if (ClosedByServer(fd, 5000)) ++closed;
      close(fd);
    }
  });
  for (int i = 0; i < 5; ++i) {
    Status st = LegitimateSync(server);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  stop = true;
  flood.join();
  EXPECT_GT(sent.load(), 0);
  EXPECT_EQ(closed.load(), sent.load());
}

}  // namespace
}  // namespace cairn
