// Package ring implements the lanes of a shmbus segment: lock-free rings of
// variable-length records in shared memory, written by one producer (SPSC)
// or several producers in several processes (MPSC) and read by one
// consumer, with doorbells to sleep on when there is nothing to do.
//
// # Positions
//
// A lane has two 64-bit byte positions in its control block, each on its own
// 128-byte block: the tail (end of the space claimed by producers) and the
// head (end of the space the consumer has released). They only grow; the
// ring offset of a position is position & (capacity-1). Positions are only
// ever compared by difference, so they may start anywhere (tests start them
// just below 2^32 and 2^64) and wrap modulo 2^64.
//
// # Records and publication
//
// A record is an 8-byte header, then the payload, padded to 8 bytes. The
// header's first word is the record length (header + payload, without the
// padding) and is the commit flag: zero means "not published". A producer
// writes the payload and the header's second word (type, fragment flags,
// producer slot), then stores the length; the consumer loads the length
// and, if it is non-zero, reads the rest. Both are sequentially consistent
// atomics, so the load that sees the length also sees everything written
// before it (release/acquire would do; Go gives more).
//
// The consumer polls the length word at its read position, not the tail:
// the record's own cache line is the one it needs anyway.
//
// Invariant Z: every byte of the ring outside [head, tail) is zero. The
// consumer zeroes what it releases before storing the new head, and
// producers write only inside space they claimed, so a length word the
// consumer reads is either zero or was stored by a producer of this lap;
// bytes of an earlier lap can never look published.
//
// A record that would cross the end of the ring is preceded by a padding
// record running to the end, so every record is contiguous. Padding is a
// record of type padding, published like any other, that the consumer skips.
//
// # Claims
//
// A producer claims a contiguous span, then fills and publishes it; it holds
// one claim at a time, and publishes the records of a claim in order. With
// one producer (SPSC) the claim is a plain store of the tail: the producer
// is wait-free, and reads the head only when its cached copy says the lane
// is full. With several (MPSC) it is a CAS on the tail: lock-free, since a
// failed CAS means another producer's succeeded.
//
// Each producer owns a peer slot whose claim record for the lane says what
// it is claiming: Pos and End are stored before the tail moves, and OK =
// Pos+1 after. The consumer reads this only when it is stuck: the tail is
// past its read position but the length word there is still zero. If the
// claimant is provably dead (pid gone or reused, or a zombie; never a time
// limit alone) the consumer turns the rest of its claim into padding and
// goes on. Consumer.Recover states the rules and why they cannot pad over a
// live producer's records. A dead peer's slot is not reused while its claim
// may still cover unreleased space, so that evidence is never lost.
//
// # Doorbells
//
// See doorbell.go: an eventcount per direction (data available, for the
// consumer; space available, per lane, for producers), where a ringer that
// finds nobody asleep pays one load and no system call, and every sleep is
// bounded so that a lost wake-up (a producer dying between publish and
// ring) costs latency, never liveness.
//
// # Fan-out lanes
//
// On a fan-out bus a lane has no consumer but several read cursors, one per
// subscription (subscribe.go); producers are unchanged, except that one that
// finds the lane full first cleans it, moving the head up to the slowest
// blocking cursor (clean.go).
//
// # What is trusted
//
// Nothing read from the segment is used as an index without a check: a
// record's length and type are validated against the lane's geometry
// (layout.Record.Check), positions against the capacity, and a failure is
// an error wrapping ErrCorrupt, never an out-of-range access.
package ring
