package bridge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrConfig is wrapped by every error about a route or a configuration
// that makes no sense; the command maps it to exit status 2.
var ErrConfig = errors.New("bad bridge configuration")

// Kind is what a route does.
type Kind int

const (
	// BusToStream reads a local bus (its consumer role) and publishes every
	// message to a JetStream stream: exactly once into the stream.
	BusToStream Kind = iota + 1
	// StreamToBus reads a JetStream stream through a durable pull consumer
	// and sends every message to a local bus: nothing lost; across a
	// bridge crash, at most the message being sent comes twice.
	StreamToBus
	// SubjectToBus subscribes to a core NATS subject and sends what
	// arrives to a local bus: at most once (nothing is stored while the
	// bridge is away, and a bridge that falls behind loses messages).
	SubjectToBus
	// BoardKV mirrors a local board and a JetStream key-value bucket both
	// ways: the bucket decides between concurrent writes (docs/bridge.md,
	// "Boards and KV buckets").
	BoardKV
)

func (k Kind) String() string {
	switch k {
	case BusToStream:
		return "bus->stream"
	case StreamToBus:
		return "stream->bus"
	case SubjectToBus:
		return "subject->bus"
	case BoardKV:
		return "board<->kv"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Route is one direction of traffic between a bus and NATS.
//
//	bus:NAME->stream:SUBJECT    SUBJECT may hold {bus} and {priority}
//	stream:FILTER->bus:NAME     FILTER a subject, wildcards allowed
//	subject:SUBJECT->bus:NAME   core NATS, at most once
//	board:NAME<->kv:BUCKET      a board and a KV bucket, both ways
type Route struct {
	Kind    Kind
	Bus     string // the local bus
	Board   string // the local board (BoardKV)
	Bucket  string // the KV bucket (BoardKV)
	Subject string // the subject template (BusToStream), filter (StreamToBus) or subject (SubjectToBus)
	Text    string // the route as written, for logs and the metrics' route label
}

// ParseRoute parses one route.
func ParseRoute(s string) (Route, error) {
	s = strings.TrimSpace(s)
	r := Route{Text: s}
	if strings.Contains(s, "<->") {
		src, dst, _ := strings.Cut(s, "<->")
		board, okb := strings.CutPrefix(src, "board:")
		bucket, okk := strings.CutPrefix(dst, "kv:")
		if !okb || !okk {
			return r, fmt.Errorf("%w: route %q: only board:NAME<->kv:BUCKET goes both ways", ErrConfig, s)
		}
		if err := checkBusName(board); err != nil {
			return r, fmt.Errorf("%w: route %q: bad board name %q", ErrConfig, s, board)
		}
		if !validBucket(bucket) {
			return r, fmt.Errorf("%w: route %q: bad bucket name %q (letters, digits, '-' and '_')", ErrConfig, s, bucket)
		}
		r.Kind, r.Board, r.Bucket = BoardKV, board, bucket
		return r, nil
	}
	src, dst, ok := strings.Cut(s, "->")
	if !ok {
		return r, fmt.Errorf("%w: route %q: want SOURCE->DESTINATION, e.g. bus:NAME->stream:SUBJECT", ErrConfig, s)
	}
	sk, sv, ok1 := strings.Cut(src, ":")
	dk, dv, ok2 := strings.Cut(dst, ":")
	if !ok1 || !ok2 || sv == "" || dv == "" {
		return r, fmt.Errorf("%w: route %q: each end is KIND:VALUE (bus:NAME, stream:SUBJECT, subject:SUBJECT)", ErrConfig, s)
	}
	switch {
	case sk == "bus" && dk == "stream":
		r.Kind, r.Bus, r.Subject = BusToStream, sv, dv
	case sk == "stream" && dk == "bus":
		r.Kind, r.Bus, r.Subject = StreamToBus, dv, sv
	case sk == "subject" && dk == "bus":
		r.Kind, r.Bus, r.Subject = SubjectToBus, dv, sv
	default:
		return r, fmt.Errorf("%w: route %q: no route from %s to %s (known: bus->stream, stream->bus, subject->bus)", ErrConfig, s, sk, dk)
	}
	if err := checkBusName(r.Bus); err != nil {
		return r, fmt.Errorf("%w: route %q: %v", ErrConfig, s, err)
	}
	subj := r.Subject
	if r.Kind == BusToStream {
		subj = expand(subj, r.Bus, 0)
		if strings.ContainsAny(subj, "*>") {
			return r, fmt.Errorf("%w: route %q: a publish subject cannot hold wildcards", ErrConfig, s)
		}
	} else if strings.Contains(subj, "{") {
		return r, fmt.Errorf("%w: route %q: only a bus->stream subject has {bus} and {priority}", ErrConfig, s)
	}
	if err := checkSubject(subj); err != nil {
		return r, fmt.Errorf("%w: route %q: %v", ErrConfig, s, err)
	}
	return r, nil
}

// expand fills a subject template.
func expand(tmpl, bus string, prio int) string {
	return strings.NewReplacer("{bus}", bus, "{priority}", fmt.Sprint(prio)).Replace(tmpl)
}

func checkBusName(name string) error {
	if name == "" || len(name) > 200 || strings.Contains(name, "..") {
		return fmt.Errorf("bad bus name %q", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("bad bus name %q", name)
		}
	}
	return nil
}

// checkSubject accepts a NATS subject: dot-separated non-empty tokens
// without white space; '>' only as the last token.
func checkSubject(s string) error {
	toks := strings.Split(s, ".")
	for i, t := range toks {
		if t == "" || strings.ContainsAny(t, " \t\r\n{}") {
			return fmt.Errorf("bad subject %q", s)
		}
		if strings.Contains(t, ">") && (t != ">" || i != len(toks)-1) {
			return fmt.Errorf("bad subject %q: '>' must be the last token", s)
		}
		if strings.Contains(t, "*") && t != "*" {
			return fmt.Errorf("bad subject %q: '*' must be a whole token", s)
		}
	}
	return nil
}

// Config is a bridge's whole configuration.
type Config struct {
	Routes []Route
	Dir    string // where the buses are ("" is $SHMBUS_DIR or /dev/shm)

	Server  string        // NATS URL(s), comma-separated
	Auth    Auth          // credentials; never taken from the command line
	Options []nats.Option // more connection options (tests: an in-process connection)

	DeadLetter string        // subject of messages a stream->bus route cannot deliver
	Window     int           // bus->stream: messages published and not yet acknowledged, at most
	WindowSize int           // bus->stream: their bytes, at most
	FetchSize  int           // stream->bus: bytes pulled ahead of the bus, at most (at least twice the server's max_payload)
	AckWait    time.Duration // stream->bus: JetStream redelivers what is not acknowledged in this time
	AckTimeout time.Duration // bus->stream: an acknowledgement not back in this time is a failure
	Duplicates time.Duration // duplicate window of the streams the bridge creates
	NoCreate   bool          // do not create a stream for a bus->stream route that has none

	Logf func(format string, args ...any) // nil: silent
}

// Defaults for Config's zero fields.
const (
	DefaultDeadLetter = "shmbus.deadletter"
	DefaultWindow     = 512
	DefaultWindowSize = 32 << 20
	DefaultFetchSize  = 8 << 20
	DefaultAckWait    = 30 * time.Second
	DefaultAckTimeout = 5 * time.Second
	DefaultDuplicates = 2 * time.Minute
)

func (c *Config) setDefaults() {
	if c.Server == "" {
		c.Server = nats.DefaultURL
	}
	if c.DeadLetter == "" {
		c.DeadLetter = DefaultDeadLetter
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.WindowSize <= 0 {
		c.WindowSize = DefaultWindowSize
	}
	if c.FetchSize <= 0 {
		c.FetchSize = DefaultFetchSize
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.Duplicates <= 0 {
		c.Duplicates = DefaultDuplicates
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// Check validates c as a whole.
func (c *Config) Check() error {
	if len(c.Routes) == 0 {
		return fmt.Errorf("%w: no routes (give --route or a config file)", ErrConfig)
	}
	seen := map[string]bool{}
	boards := map[string]bool{}
	for _, r := range c.Routes {
		// A board route keeps a state file per board: one route per board.
		if r.Kind == BoardKV {
			if boards[r.Board] {
				return fmt.Errorf("%w: two routes mirror board %q", ErrConfig, r.Board)
			}
			boards[r.Board] = true
		}
		// A bus has one consumer: two routes out of one bus would fight
		// over it. Several routes into one bus are fine.
		if r.Kind == BusToStream {
			if seen[r.Bus] {
				return fmt.Errorf("%w: two routes read bus %q", ErrConfig, r.Bus)
			}
			seen[r.Bus] = true
		}
	}
	if err := checkSubject(c.DeadLetter); err != nil || strings.ContainsAny(c.DeadLetter, "*>") {
		return fmt.Errorf("%w: dead-letter subject %q", ErrConfig, c.DeadLetter)
	}
	if strings.Contains(c.Server, "@") {
		return fmt.Errorf("%w: credentials in the server URL would show in ps; use the environment or a file (see --help)", ErrConfig)
	}
	return nil
}

// ParseFile reads a configuration file: one setting per line, "KEY VALUE",
// where KEY is one of the command's long flag names (route may repeat);
// blank lines and lines starting with '#' are ignored. It returns the
// settings in order, for the command to apply as if they were flags.
func ParseFile(r io.Reader) ([][2]string, error) {
	var out [][2]string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		v = strings.TrimSpace(v)
		if v == "" {
			return nil, fmt.Errorf("%w: config line %d: %q has no value", ErrConfig, n, k)
		}
		out = append(out, [2]string{k, v})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: config: %v", ErrConfig, err)
	}
	return out, nil
}

// validBucket accepts a JetStream KV bucket name: letters, digits, '-' and
// '_'.
func validBucket(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
