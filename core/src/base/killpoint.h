// Kill points: named places in the sync exchange where a test can have the process killed with
// SIGKILL (as the OOM killer or a power cut would), to check that nothing is lost or applied
// twice whatever step it dies at (tests/integration/kill_matrix_test.cc, docs/RELIABILITY.md
// "Kill matrix"). Armed by the environment: CAIRN_KILL_AT=<point>:<n> kills the process the
// n-th time it reaches <point>. Compiled only with -DCAIRN_KILL_POINTS=ON (the test presets);
// otherwise, as in everything that ships, KillPoint is an empty inline function.
#ifndef CAIRN_BASE_KILLPOINT_H_
#define CAIRN_BASE_KILLPOINT_H_

namespace cairn {

// The points, in exchange order (a point's name is its string).
//   client.push.before_send    an op batch is ready, not sent
//   client.push.sent           an op batch queued for the socket, no Ack yet
//   client.ack.before_record   an Ack received, the outbox not yet trimmed
//   client.apply.before        a server batch received, not applied
//   replica.apply.before_commit  inside the apply's transaction, before COMMIT
//   client.snapshot.staged     a snapshot chunk staged, more to come
//   client.snapshot.before_finish  the whole snapshot staged, not yet swapped in
//   client.stream.before_ack   a StreamAck received, the records not yet dropped
//   server.push.before_commit  a push applied to the server's state, before COMMIT
//   server.push.committed      a push committed, its Ack not sent
//   server.log.sent            a log batch queued for a client
//   server.snapshot.sent       a snapshot chunk queued for a client
//   server.stream.committed    telemetry records committed, their StreamAck not sent
#if defined(CAIRN_KILL_POINTS)
void KillPoint(const char* name);
#else
inline void KillPoint(const char*) {}
#endif

}  // namespace cairn

#endif  // CAIRN_BASE_KILLPOINT_H_
