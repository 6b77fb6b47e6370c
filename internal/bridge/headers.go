package bridge

import (
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// Headers of a message the bridge publishes. Nats-Msg-Id is JetStream's
// own (the duplicate window drops a second message with the same id).
const (
	HdrMsgID    = "Nats-Msg-Id"
	HdrPriority = "Shmbus-Priority" // decimal priority on the source bus
	HdrProducer = "Shmbus-Producer" // SLOT/PID of the producer on the source bus
	HdrBus      = "Shmbus-Bus"      // on chunks: the source bus's name
	HdrSize     = "Shmbus-Size"     // on chunks: the whole message's size
	HdrCRC      = "Shmbus-Crc32c"   // on chunks (optional otherwise): CRC-32C (Castagnoli) of the whole message, 8 hex digits
	HdrChunk    = "Shmbus-Chunk"    // INDEX/COUNT, on messages in more than one chunk
	HdrMessage  = "Shmbus-Message"  // the id shared by the chunks of one message
	HdrError    = "Shmbus-Error"    // on a dead letter: why the message was not delivered
	HdrRoute    = "Shmbus-Route"    // on a dead letter: the route that refused it
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// ErrHeaders is wrapped by the errors of messages whose headers a route
// cannot use; such messages are dead-lettered.
var ErrHeaders = errors.New("bad shmbus headers")

// frame is what the headers of one received NATS message say.
type frame struct {
	prio    int
	size    int    // the whole message
	crc     uint32 // of the whole message
	hasCRC  bool
	index   int // chunk index, 0 for a message in one piece
	count   int // chunks, 1 for a message in one piece
	message string
}

// parseFrame reads the shmbus headers of a message with a payload of n
// bytes for a bus of prios priorities. Everything in them comes from the
// network and is checked: a priority out of range, sizes that do not add
// up, a chunk index past the count.
func parseFrame(h nats.Header, n, prios int) (frame, error) {
	var f frame
	ps := h.Get(HdrPriority)
	if ps == "" {
		return f, fmt.Errorf("%w: no %s header", ErrHeaders, HdrPriority)
	}
	p, err := strconv.Atoi(ps)
	if err != nil || p < 0 || p >= prios {
		return f, fmt.Errorf("%w: %s %q is not a priority of the bus (0..%d)", ErrHeaders, HdrPriority, ps, prios-1)
	}
	f.prio, f.size, f.count = p, n, 1
	if s := h.Get(HdrSize); s != "" {
		if f.size, err = strconv.Atoi(s); err != nil || f.size < 0 {
			return f, fmt.Errorf("%w: %s %q", ErrHeaders, HdrSize, s)
		}
	}
	if s := h.Get(HdrCRC); s != "" {
		c, err := strconv.ParseUint(s, 16, 32)
		if err != nil {
			return f, fmt.Errorf("%w: %s %q", ErrHeaders, HdrCRC, s)
		}
		f.crc, f.hasCRC = uint32(c), true
	}
	cs := h.Get(HdrChunk)
	if cs == "" {
		if f.size != n {
			return f, fmt.Errorf("%w: %s %d on a %d-byte message in one piece", ErrHeaders, HdrSize, f.size, n)
		}
		return f, nil
	}
	is, ns, ok := strings.Cut(cs, "/")
	i, err1 := strconv.Atoi(is)
	c, err2 := strconv.Atoi(ns)
	if !ok || err1 != nil || err2 != nil || c < 1 || i < 0 || i >= c {
		return f, fmt.Errorf("%w: %s %q", ErrHeaders, HdrChunk, cs)
	}
	f.index, f.count = i, c
	if f.message = h.Get(HdrMessage); f.message == "" {
		return f, fmt.Errorf("%w: a chunk without %s", ErrHeaders, HdrMessage)
	}
	if h.Get(HdrSize) == "" || n > f.size || c == 1 && n != f.size {
		return f, fmt.Errorf("%w: chunk of %d bytes of a message of %d", ErrHeaders, n, f.size)
	}
	return f, nil
}
