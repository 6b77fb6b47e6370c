package proc

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// stat holds the fields of /proc/PID/stat this package needs.
type stat struct {
	pid   int
	comm  []byte // without the parentheses; aliases the input
	state byte   // field 3
	start uint64 // field 22, starttime
}

var errMalformed = errors.New("malformed stat")

// parseStat parses the content of /proc/PID/stat ("pid (comm) state ppid ... starttime ...").
// comm may contain any byte, including spaces and ')', so the fields after it are taken
// from after the LAST ')'. It never panics; malformed input yields an error.
func parseStat(b []byte) (stat, error) {
	lparen := bytes.IndexByte(b, '(')
	rparen := bytes.LastIndexByte(b, ')')
	if lparen < 0 || rparen < lparen {
		return stat{}, fmt.Errorf("%w: no (comm)", errMalformed)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:lparen])))
	if err != nil || pid <= 0 {
		return stat{}, fmt.Errorf("%w: bad pid %q", errMalformed, b[:lparen])
	}
	// fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
	fields := bytes.Fields(b[rparen+1:])
	if len(fields) < 20 {
		return stat{}, fmt.Errorf("%w: %d fields after comm, want at least 20", errMalformed, len(fields))
	}
	if len(fields[0]) != 1 {
		return stat{}, fmt.Errorf("%w: bad state %q", errMalformed, fields[0])
	}
	start, err := strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return stat{}, fmt.Errorf("%w: bad starttime %q", errMalformed, fields[19])
	}
	return stat{pid: pid, comm: b[lparen+1 : rparen], state: fields[0][0], start: start}, nil
}
