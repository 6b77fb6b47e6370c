package bridge

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzParseFrame feeds parseFrame header values as they could come off the
// network: it must return a frame that is consistent (priority in range,
// chunk index below the count, a chunk no larger than its message) or an
// error wrapping ErrHeaders, never panic.
func FuzzParseFrame(f *testing.F) {
	f.Add("3", "", "", "", "", 10, 4)
	f.Add("0", "100", "0000abcd", "1/3", "m", 40, 1)
	f.Add("-1", "x", "zz", "3/3", "", 0, 2)
	f.Add("1", "5", "", "", "", 10, 2)
	f.Fuzz(func(t *testing.T, prio, size, crc, chunk, message string, n, prios int) {
		if prios < 1 || prios > 64 || n < 0 {
			return
		}
		h := nats.Header{}
		for k, v := range map[string]string{HdrPriority: prio, HdrSize: size, HdrCRC: crc, HdrChunk: chunk, HdrMessage: message} {
			if v != "" {
				h.Set(k, v)
			}
		}
		fr, err := parseFrame(h, n, prios)
		if err != nil {
			if !errors.Is(err, ErrHeaders) {
				t.Fatalf("error %v does not wrap ErrHeaders", err)
			}
			return
		}
		if fr.prio < 0 || fr.prio >= prios || fr.index < 0 || fr.index >= fr.count || n > fr.size {
			t.Fatalf("inconsistent frame %+v for %d bytes, %d priorities", fr, n, prios)
		}
		if fr.count == 1 && fr.size != n {
			t.Fatalf("message in one piece of %d bytes claims %d", n, fr.size)
		}
	})
}
