package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/layout"
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

--watch redraws the screen every --interval until interrupted (which ends it
with exit status 0); with --json it prints one object per line instead.`,
		Args:              busArgs(1),
		ValidArgsFunction: a.completeBuses,
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval <= 0 {
				return usagef("stat: --interval must be positive")
			}
			if iterations < 0 {
				return usagef("stat: --iterations must not be negative")
			}
			bus, err := shmbus.Open(args[0], a.openOptions())
			if err != nil {
				return err
			}
			defer bus.Close()
			if !watch {
				return a.stat(bus, asJSON, false)
			}
			ctx := cmd.Context()
			t := time.NewTicker(interval)
			defer t.Stop()
			for i := 0; iterations == 0 || i < iterations; i++ {
				if i > 0 {
					select {
					case <-ctx.Done():
						return nil // the normal end of --watch
					case <-t.C:
					}
				}
				if err := a.stat(bus, asJSON, true); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVarP(&watch, "watch", "w", false, "refresh every --interval until interrupted")
	f.DurationVar(&interval, "interval", interval, "refresh --watch every `DUR`")
	f.IntVar(&iterations, "iterations", 0, "stop --watch after this many refreshes (0 = never)")
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
	Peers            []peerStat `json:"peers"`
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
	h := bus.Header()
	s := &busStat{
		Name:             bus.Name(),
		Path:             bus.Path(),
		Size:             h.TotalSize,
		FormatVersion:    h.Version,
		Priorities:       bus.Priorities(),
		MaxRecordPayload: bus.MaxRecordPayload(),
		MaxMessage:       bus.MaxMessage(),
		Producers:        "single",
		FailFast:         h.Flags&layout.FlagFailFast != 0,
		Wake:             bus.WakeMode().String(),
		PeerSlots:        h.PeerSlots,
		Created:          time.Unix(0, h.CreatedNano),
		CreatorPID:       h.CreatorPID,
		ConsumerSleeps:   st.ConsumerSleeps,
		ConsumerWakes:    st.ConsumerWakes,
		CountersTrail:    true,
		Lanes:            []laneStat{},
		Peers:            []peerStat{},
	}
	if h.Flags&layout.FlagMultiProducer != 0 {
		s.Producers = "multi"
	}
	if len(h.Lanes) > 0 {
		s.LaneCapacity = h.Lanes[0].Capacity
		s.RecordLimit = h.Lanes[0].RecordLimit
	}
	if fi, err := os.Stat(bus.Path()); err == nil {
		s.Mode = fmt.Sprintf("%04o", fi.Mode().Perm())
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
	return s, nil
}

// stat prints one report on bus; clear clears the screen first (unless JSON).
func (a *app) stat(bus *shmbus.Bus, asJSON, clear bool) error {
	s, err := statBus(bus)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if asJSON {
		if err := json.NewEncoder(&b).Encode(s); err != nil {
			return err
		}
	} else {
		if clear {
			b.WriteString("\x1b[H\x1b[2J")
		}
		s.writeText(&b)
	}
	_, err = a.stdout.Write(b.Bytes())
	return err
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
	fmt.Fprintf(w, "peer slots:\t%d\n", s.PeerSlots)
	fmt.Fprintf(w, "waiting:\t%s\n", s.waiting())
	fmt.Fprintf(w, "consumer sleeps/wakes:\t%d/%d\n", s.ConsumerSleeps, s.ConsumerWakes)
	w.Flush()

	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "PRIO\tMSGS\tRING BYTES\tMSGS IN\tBYTES IN\tMSGS OUT\tBYTES OUT\tFULL\tRECOVERED\tP.SLEEPS\tP.WAKES\t")
	for _, l := range s.Lanes {
		fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", l.Priority, l.Messages, l.Bytes,
			l.MsgsIn, l.BytesIn, l.MsgsOut, l.BytesOut, l.FullEvents, l.Recovered, l.ProducerSleeps, l.ProducerWakes)
	}
	w.Flush()
	fmt.Fprintln(out, "MSGS and RING BYTES are counted in the lanes; the IN and OUT counters are")
	fmt.Fprintln(out, "added in batches and may trail (a killed peer's last batch is never added).")
	fmt.Fprintln(out)
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
