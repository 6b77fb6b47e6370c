package bridge

import (
	"errors"
	"strings"
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

// FuzzKVKey: every board key encodes to a valid KV key that decodes back
// to it; every KV key either decodes to a board key that encodes back to
// it, or is refused with errKVKey.
func FuzzKVKey(f *testing.F) {
	for _, s := range []string{"plain", "=x", "a..b", ".", "\x00\xff", "=PXg", "=cGxhaW4", "=", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) >= 1 && len(s) <= maxKey {
			kv := encodeKey(s)
			if !kvKeyValid(kv) {
				t.Fatalf("encodeKey(%q) = %q: not a KV key", s, kv)
			}
			if back, err := decodeKey(kv); err != nil || back != s {
				t.Fatalf("decodeKey(encodeKey(%q)) = %q, %v", s, back, err)
			}
		}
		k, err := decodeKey(s)
		if err != nil {
			if !errors.Is(err, errKVKey) {
				t.Fatalf("decodeKey(%q): %v", s, err)
			}
			return
		}
		if len(k) < 1 || len(k) > maxKey || encodeKey(k) != s {
			t.Fatalf("decodeKey(%q) = %q, which encodes to %q", s, k, encodeKey(k))
		}
	})
}

// kvKeyValid is nats.go's rule for KV keys.
func kvKeyValid(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' || strings.Contains(k, "..") {
		return false
	}
	for _, c := range []byte(k) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-/_=.", c) >= 0) {
			return false
		}
	}
	return true
}

// FuzzParseKVState: a board route's state file, as anyone with access to
// the directory could have written it, decodes to keys that are all valid,
// or to an error wrapping errKVState; never a panic.
func FuzzParseKVState(f *testing.F) {
	f.Add([]byte(`{"board_created":1,"bucket_created":2,"keys":{"a":{"b":3,"r":4},"=AA":{"b":1,"r":1}}}`))
	f.Add([]byte(`{"keys":{"a b":{"b":1}}}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseKVState(data)
		if err != nil {
			if !errors.Is(err, errKVState) {
				t.Fatalf("error %v does not wrap errKVState", err)
			}
			return
		}
		if st.Keys == nil {
			t.Fatal("nil key map")
		}
		for k := range st.Keys {
			if _, err := decodeKey(k); err != nil {
				t.Fatalf("key %q accepted: %v", k, err)
			}
		}
	})
}

// FuzzParseCursor: a stream->bus state file of any bytes parses or gives
// an error wrapping errCursor; what parses encodes back to the same bytes.
func FuzzParseCursor(f *testing.F) {
	good := cursor{floor: 7, seq: 8, prio: 1, pos: 4096, recovered: 2, slot: 3, created: 99}.encode()
	f.Add(good[:])
	f.Add(good[:8])
	f.Add([]byte{})
	f.Add(good[:40])
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseCursor(data)
		if err != nil {
			if !errors.Is(err, errCursor) {
				t.Fatalf("error %v does not wrap errCursor", err)
			}
			return
		}
		if len(data) == cursorSize {
			if back := c.encode(); string(back[:]) != string(data) {
				t.Fatalf("%x parsed as %+v, encodes as %x", data, c, back)
			}
		}
	})
}
