/* cairn.h: the stable C API of Cairn, an offline-first sync engine. Include this header only.
 * Conventions: cairn/common.h. Replicas: cairn/replica.h. Telemetry streams: cairn/stream.h.
 * Sync: cairn/sync.h. */
#ifndef CAIRN_H
#define CAIRN_H

#include "cairn/common.h"
#include "cairn/replica.h"
#include "cairn/stream.h"
#include "cairn/sync.h"

#endif /* CAIRN_H */
