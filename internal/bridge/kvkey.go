package bridge

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Board keys are 1 to 255 arbitrary bytes; KV keys are [-/_=.a-zA-Z0-9]+,
// neither starting nor ending with '.' and without "..". A board key that
// is a valid KV key and does not start with '=' is its own KV key; any other
// is '=' followed by its bytes in unpadded base64url. The mapping is a
// bijection between board keys and the KV keys it produces: decodeKey
// refuses the KV keys encodeKey never makes.

const (
	keyEscape = '='
	maxKey    = 255 // board.CheckKey's limit
)

var errKVKey = errors.New("KV key has no board key")

func plainKey(k string) bool {
	if k == "" || len(k) > maxKey || k[0] == keyEscape || k[0] == '.' || k[len(k)-1] == '.' || strings.Contains(k, "..") {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '/' || c == '_' || c == '=' || c == '.') {
			return false
		}
	}
	return true
}

// encodeKey is the KV key of board key k.
func encodeKey(k string) string {
	if plainKey(k) {
		return k
	}
	return string(keyEscape) + base64.RawURLEncoding.EncodeToString([]byte(k))
}

// decodeKey is the board key of KV key s, or an error wrapping errKVKey for
// a key no board key encodes to (written to the bucket by someone else).
func decodeKey(s string) (string, error) {
	if s == "" || s[0] != keyEscape {
		if !plainKey(s) {
			return "", fmt.Errorf("%w: %q", errKVKey, s)
		}
		return s, nil
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s[1:])
	// The decoder skips CR and LF: only the canonical spelling of b names
	// it, so that each board key has exactly one bucket key.
	if err != nil || len(b) == 0 || len(b) > maxKey || plainKey(string(b)) ||
		base64.RawURLEncoding.EncodeToString(b) != s[1:] {
		return "", fmt.Errorf("%w: %q", errKVKey, s)
	}
	return string(b), nil
}

// kvStep is where a key was last in step between the board and the bucket:
// the board revision and the bucket revision that held the same value (or
// both no value).
type kvStep struct {
	Board  uint64 `json:"b"`
	Bucket uint64 `json:"r"`
}

// kvState is a board route's state file (JSON): which board and bucket it
// belongs to (their creation times: a board or bucket made again under the
// same name starts afresh) and each key's step, by KV key.
type kvState struct {
	BoardCreated  int64             `json:"board_created"`
	BucketCreated int64             `json:"bucket_created"`
	Keys          map[string]kvStep `json:"keys"`
}

var errKVState = errors.New("bad board route state file")

// parseKVState decodes a state file. The file lives in the buses'
// directory, writable by others with access to it: every key is checked.
func parseKVState(data []byte) (kvState, error) {
	var st kvState
	if err := json.Unmarshal(data, &st); err != nil {
		return kvState{}, fmt.Errorf("%w: %v", errKVState, err)
	}
	for k := range st.Keys {
		if _, err := decodeKey(k); err != nil {
			return kvState{}, fmt.Errorf("%w: %v", errKVState, err)
		}
	}
	if st.Keys == nil {
		st.Keys = map[string]kvStep{}
	}
	return st, nil
}
