package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
)

func (a *app) statCmd() *cobra.Command {
	var (
		asJSON     bool
		watch      bool
		interval   = time.Second
		iterations int
	)
	cmd := &cobra.Command{
		Use:   "stat NAME",
		Short: "Show a bus's configuration, depth, counters and peers",
		Long: `Show the configuration of the bus NAME, how many messages and ring bytes
wait in each priority, its counters and the processes attached to it.
stat attaches without taking a peer slot or a role.

The messages waiting (MSGS) are counted in the lanes, by walking the records
between the consumer's release position and the producers' claim position,
and the ring bytes in use come from those positions: both are exact on a
quiet bus. The IN and OUT counters are added to the bus by producers and the
consumer every 256 messages and whenever they go idle, so they may trail by
a few hundred messages while traffic flows, and a peer killed in mid-flight
never adds its last batch: their difference is not what waits.

A sem-mode bus shows the id of its System V semaphore set, as ipcs(1)
lists it.

Figures of a million or more are shown rounded to three digits with k, M,
G or T (powers of 1000); --json has them exact.

--watch redraws the screen every --interval until interrupted (which ends it
with exit status 0), under a line with the interval and the time, and adds
the rates since the previous refresh: messages and bytes per second in and
out of each priority (from the counters, so they trail as the counters do).
With --json it prints one object per refresh and line instead.`,
		Args:              busArgs(1),
		ValidArgsFunction: a.completeBuses,
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval <= 0 {
				return usagef("stat: --interval must be positive")
			}
			bus, err := shmbus.Open(args[0], a.openOptions())
			if err != nil {
				return err
			}
			defer bus.Close()
			if !watch {
				return a.stat(bus, asJSON)
			}
			ctx := cmd.Context()
			t := time.NewTicker(interval)
			defer t.Stop()
			w := &watcher{interval: interval}
			for i := 0; iterations == 0 || i < iterations; i++ {
				if i > 0 {
					select {
					case <-ctx.Done():
						return nil // the normal end of --watch
					case <-t.C:
					}
				}
				if err := a.watchOnce(w, bus, asJSON); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVarP(&watch, "watch", "w", false, "refresh every --interval until interrupted")
	f.Var(durValue{&interval}, "interval", "refresh --watch every DUR")
	f.Var(intValue{&iterations, "number of refreshes", 0, math.MaxInt}, "iterations", "stop --watch after N refreshes (0 = never)")
	f.MarkHidden("iterations")
	return cmd
}

// busStat is what stat shows, also its JSON form.
type busStat struct {
	Name             string     `json:"name"`
	Path             string     `json:"path"`
	Size             uint64     `json:"size"`
	Mode             string     `json:"mode"`
	FormatVersion    uint32     `json:"format_version"`
	Priorities       int        `json:"priorities"`
	LaneCapacity     uint64     `json:"lane_capacity"`
	RecordLimit      uint32     `json:"record_limit"`
	MaxRecordPayload int        `json:"max_record_payload"`
	MaxMessage       int        `json:"max_message"`
	Producers        string     `json:"producers"`
	FailFast         bool       `json:"fail_fast"`
	Wake             string     `json:"wake"`
	SemID            *int32     `json:"sem_id,omitempty"` // sem mode: the System V semaphore set
	PeerSlots        uint32     `json:"peer_slots"`
	Created          time.Time  `json:"created"`
	CreatorPID       uint32     `json:"creator_pid"`
	Messages         uint64     `json:"messages"`
	Bytes            uint64     `json:"bytes"`
	Unfinished       int        `json:"unfinished,omitempty"`
	Unpublished      uint64     `json:"unpublished,omitempty"`
	Unreadable       bool       `json:"unreadable,omitempty"`
	CountersTrail    bool       `json:"counters_trail"`
	Lanes            []laneStat `json:"lanes"`
	ConsumerSleeps   uint64     `json:"consumer_sleeps"`
	ConsumerWakes    uint64     `json:"consumer_wakes"`
	Dropped          uint64     `json:"dropped"`
	Peers            []peerStat `json:"peers"`

	// Fan-out buses only (see sub.go).
	SubscriptionSlots int       `json:"subscription_slots,omitempty"`
	Subscriptions     []subStat `json:"subscriptions,omitempty"`
}

type laneStat struct {
	Priority       int    `json:"priority"`
	Messages       uint64 `json:"messages"`              // counted in the lane, head to tail
	Bytes          uint64 `json:"bytes"`                 // ring bytes in use (tail - head)
	Unfinished     int    `json:"unfinished,omitempty"`  // messages with fragments in the lane but no last one
	Unpublished    uint64 `json:"unpublished,omitempty"` // ring bytes claimed and not published
	Unreadable     bool   `json:"unreadable,omitempty"`  // the count stopped at a record it could not read
	MsgsIn         uint64 `json:"msgs_in"`
	BytesIn        uint64 `json:"bytes_in"`
	MsgsOut        uint64 `json:"msgs_out"`
	BytesOut       uint64 `json:"bytes_out"`
	FullEvents     uint64 `json:"full_events"`
	Recovered      uint64 `json:"recovered"`
	ProducerSleeps uint64 `json:"producer_sleeps"`
	ProducerWakes  uint64 `json:"producer_wakes"`
	ConsumerRings  uint64 `json:"consumer_rings"` // producers of this lane woke the consumer
}

type peerStat struct {
	Slot   int       `json:"slot"`
	PID    int       `json:"pid"`
	Role   string    `json:"role"`
	Alive  bool      `json:"alive"`
	Joined time.Time `json:"joined"`
}

func statBus(bus *shmbus.Bus) (*busStat, error) {
	st, err := bus.Stats()
	if err != nil {
		return nil, err
	}
	depth, err := bus.Waiting()
	if err != nil {
		return nil, err
	}
	cfg := bus.Config()
	s := &busStat{
		Name:             bus.Name(),
		Path:             bus.Path(),
		Size:             uint64(cfg.Size),
		FormatVersion:    uint32(cfg.FormatVersion),
		Priorities:       cfg.Priorities,
		MaxRecordPayload: cfg.MaxRecordPayload,
		MaxMessage:       cfg.MaxMessage,
		Producers:        cfg.Producers.String(),
		FailFast:         cfg.FailFast,
		Wake:             cfg.Wake.String(),
		PeerSlots:        uint32(cfg.PeerSlots),
		Created:          cfg.Created,
		CreatorPID:       uint32(cfg.CreatorPID),
		ConsumerSleeps:   st.ConsumerSleeps,
		ConsumerWakes:    st.ConsumerWakes,
		Dropped:          st.Dropped,
		CountersTrail:    true,
		Lanes:            []laneStat{},
		Peers:            []peerStat{},
	}
	if cfg.Wake == shmbus.WakeSem {
		id := int32(cfg.SemID)
		s.SemID = &id
	}
	s.LaneCapacity = uint64(cfg.LaneCapacity)
	s.RecordLimit = uint32(cfg.RecordLimit)
	if cfg.Mode != 0 {
		s.Mode = fmt.Sprintf("%04o", cfg.Mode)
	}
	for i, l := range st.Lanes {
		ls := laneStat{
			Priority:       i,
			Messages:       depth[i].Messages,
			Bytes:          depth[i].Bytes,
			Unfinished:     depth[i].Unfinished,
			Unpublished:    depth[i].Unpublished,
			Unreadable:     depth[i].Unreadable,
			MsgsIn:         l.MsgsIn,
			BytesIn:        l.BytesIn,
			MsgsOut:        l.MsgsOut,
			BytesOut:       l.BytesOut,
			FullEvents:     l.FullEvents,
			Recovered:      l.Recovered,
			ProducerSleeps: l.SpaceSleeps,
			ProducerWakes:  l.SpaceWakes,
			ConsumerRings:  l.DataWakes,
		}
		s.Messages += ls.Messages
		s.Bytes += ls.Bytes
		s.Unfinished += ls.Unfinished
		s.Unpublished += ls.Unpublished
		s.Unreadable = s.Unreadable || ls.Unreadable
		s.Lanes = append(s.Lanes, ls)
	}
	for _, p := range st.Peers {
		s.Peers = append(s.Peers, peerStat{Slot: p.Slot, PID: p.PID, Role: p.Role, Alive: p.Alive, Joined: p.Joined})
	}
	if err := addSubscriptions(bus, s); err != nil {
		return nil, err
	}
	return s, nil
}

// stat prints one report on bus.
func (a *app) stat(bus *shmbus.Bus, asJSON bool) error {
	s, err := statBus(bus)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(a.stdout, s)
	}
	var b bytes.Buffer
	s.writeText(&b)
	_, err = a.stdout.Write(b.Bytes())
	return err
}

// watcher keeps the previous report of stat --watch, for the rates.
type watcher struct {
	interval time.Duration
	prev     *busStat
	prevAt   time.Time
}

// watchOnce prints one refresh of --watch: in text, the screen cleared, a
// header line, the report and the rates since the previous refresh.
func (a *app) watchOnce(w *watcher, bus *shmbus.Bus, asJSON bool) error {
	s, err := statBus(bus)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(a.stdout, s)
	}
	now := time.Now()
	var b bytes.Buffer
	b.WriteString("\x1b[H\x1b[2J")
	writeWatchHeader(&b, w.interval, s.Name, now)
	s.writeText(&b)
	fmt.Fprintln(&b)
	writeRates(&b, w.prev, s, now.Sub(w.prevAt))
	w.prev, w.prevAt = s, now
	_, err = a.stdout.Write(b.Bytes())
	return err
}

// watchWidth is the width the header line of --watch fills.
const watchWidth = 80

// writeWatchHeader writes watch(1)'s kind of header: the interval and the
// command on the left, the time on the right, then an empty line.
func writeWatchHeader(out io.Writer, interval time.Duration, name string, now time.Time) {
	left := fmt.Sprintf("Every %v: shmbus stat %s", interval, name)
	right := now.Format("2006-01-02 15:04:05")
	pad := max(watchWidth-len(left)-len(right), 2)
	fmt.Fprintf(out, "%s%*s%s\n\n", left, pad, "", right)
}

// writeRates writes, per priority, the messages and bytes per second that
// went in and out between prev and cur, elapsed apart.
func writeRates(out io.Writer, prev, cur *busStat, elapsed time.Duration) {
	if prev == nil || elapsed <= 0 || len(prev.Lanes) != len(cur.Lanes) {
		fmt.Fprintln(out, "rates: from the next refresh on")
		return
	}
	fmt.Fprintf(out, "rates over the last %v:\n", elapsed.Round(time.Millisecond))
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "PRIO\tMSGS/S IN\tBYTES/S IN\tMSGS/S OUT\tBYTES/S OUT\t")
	secs := elapsed.Seconds()
	rate := func(a, b uint64) string { return compactFloat(float64(sub(a, b)) / secs) }
	for i, l := range cur.Lanes {
		p := prev.Lanes[i]
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t\n", l.Priority, rate(l.MsgsIn, p.MsgsIn), rate(l.BytesIn, p.BytesIn),
			rate(l.MsgsOut, p.MsgsOut), rate(l.BytesOut, p.BytesOut))
	}
	w.Flush()
}

// compactCount writes a count exactly below a million, else rounded to three
// digits with k, M, G, T, P or E (powers of 1000), so that a column of
// counters stays at most 6 characters wide.
func compactCount(n uint64) string {
	if n < 1e6 {
		return strconv.FormatUint(n, 10)
	}
	return compactFloat(float64(n))
}

// compactFloat writes v with at most three significant digits and a unit
// of powers of 1000: 0, 0.5, 12, 999, 1.23k, 45.6M.
func compactFloat(v float64) string {
	const units = " kMGTPE"
	i := 0
	for v >= 999.5 && i < len(units)-1 {
		v /= 1000
		i++
	}
	var s string
	switch {
	case v == 0:
		s = "0"
	case v < 9.995:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	case v < 99.95:
		s = strconv.FormatFloat(v, 'f', 1, 64)
	default:
		s = strconv.FormatFloat(v, 'f', 0, 64)
	}
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s + strings.TrimSpace(units[i:i+1])
}

// waiting says what waits on the bus, as counted in its lanes.
func (s *busStat) waiting() string {
	return fmt.Sprintf("%d messages, %d ring bytes%s", s.Messages, s.Bytes, s.unusual())
}

// unusual lists what else the count of the lanes found, if anything.
func (s *busStat) unusual() string {
	t := ""
	if s.Unfinished > 0 {
		t += fmt.Sprintf(", %d unfinished message(s)", s.Unfinished)
	}
	if s.Unpublished > 0 {
		t += fmt.Sprintf(", %d bytes claimed, not yet published", s.Unpublished)
	}
	if s.Unreadable {
		t += " (the count stopped at a record that changed or is damaged)"
	}
	return t
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (s *busStat) writeText(out io.Writer) {
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(w, "bus:\t%s\n", s.Name)
	fmt.Fprintf(w, "path:\t%s\n", s.Path)
	fmt.Fprintf(w, "size:\t%s (%d bytes)\n", humanSize(s.Size), s.Size)
	fmt.Fprintf(w, "mode:\t%s\n", s.Mode)
	fmt.Fprintf(w, "format version:\t%d\n", s.FormatVersion)
	fmt.Fprintf(w, "created:\t%s by pid %d\n", s.Created.Format(time.RFC3339), s.CreatorPID)
	fmt.Fprintf(w, "priorities:\t%d\n", s.Priorities)
	fmt.Fprintf(w, "lane capacity:\t%s\n", formatSize(int(s.LaneCapacity)))
	fmt.Fprintf(w, "record limit:\t%d bytes (max record payload %d)\n", s.RecordLimit, s.MaxRecordPayload)
	fmt.Fprintf(w, "max message:\t%s\n", formatSize(s.MaxMessage))
	fmt.Fprintf(w, "producers:\t%s\n", s.Producers)
	fmt.Fprintf(w, "fail-fast:\t%s\n", yesNo(s.FailFast))
	fmt.Fprintf(w, "wake:\t%s\n", s.Wake)
	if s.SemID != nil {
		fmt.Fprintf(w, "semaphore set:\tid %d (ipcs -s -i %d)\n", *s.SemID, *s.SemID)
	}
	fmt.Fprintf(w, "peer slots:\t%d\n", s.PeerSlots)
	fmt.Fprintf(w, "waiting:\t%s\n", s.waiting())
	fmt.Fprintf(w, "consumer sleeps/wakes:\t%d/%d\n", s.ConsumerSleeps, s.ConsumerWakes)
	fmt.Fprintf(w, "dropped:\t%d messages the consumer had no room to reassemble\n", s.Dropped)
	w.Flush()

	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 8, 2, ' ', tabwriter.AlignRight)
	// At most 6 characters a figure (compact): 96 columns at most.
	fmt.Fprintln(w, "PRIO\tMSGS\tRING BYTES\tMSGS IN\tBYTES IN\tMSGS OUT\tBYTES OUT\tFULL\tRECOV\tP.SLEEP\tP.WAKE\t")
	for _, l := range s.Lanes {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", l.Priority, compactCount(l.Messages), compactCount(l.Bytes),
			compactCount(l.MsgsIn), compactCount(l.BytesIn), compactCount(l.MsgsOut), compactCount(l.BytesOut), compactCount(l.FullEvents),
			compactCount(l.Recovered), compactCount(l.ProducerSleeps), compactCount(l.ProducerWakes))
	}
	w.Flush()
	fmt.Fprintln(out, "MSGS and RING BYTES are counted in the lanes; the IN and OUT counters are")
	fmt.Fprintln(out, "added in batches and may trail (a killed peer's last batch is never added).")
	fmt.Fprintln(out)
	s.writeSubscriptions(out)
	if len(s.Peers) == 0 {
		fmt.Fprintln(out, "no peers attached")
		return
	}
	w = tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "SLOT\tPID\tROLE\tALIVE\tJOINED")
	for _, p := range s.Peers {
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%s\n", p.Slot, p.PID, p.Role, yesNo(p.Alive), p.Joined.Format(time.RFC3339))
	}
	w.Flush()
}

// sub is a-b, or 0 when counters that trail make it negative.
func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}
