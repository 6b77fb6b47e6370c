package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
)

// subFlags are the flags sub and listen share (recv's output flags, and
// the subscription's options).
type subFlags struct {
	count     int
	timeout   time.Duration
	format    string
	lossy     bool
	from      string
	events    bool
	ephemeral bool
}

func (sf *subFlags) add(cmd *cobra.Command, named bool) {
	f := cmd.Flags()
	f.VarP(intValue{&sf.count, "count", 0, math.MaxInt}, "count", "n", "receive N messages and events (0 = until the timeout or an interrupt)")
	f.Var(durValue{&sf.timeout}, "timeout", "give up after DUR for all of them (0 = forever)")
	f.Var(enumValue{&sf.format, []string{"text", "json", "raw"}}, "format", "output format")
	f.BoolVar(&sf.lossy, "lossy", false, "a new subscription that never holds producers back (it is told what it missed)")
	f.Var(enumValue{&sf.from, []string{"latest", "oldest"}}, "from", "where a new subscription starts")
	f.BoolVar(&sf.events, "events", false, "also print the bus's peer events: attached, detached, died")
	if named {
		f.BoolVar(&sf.ephemeral, "ephemeral", false, "a new subscription that goes away when this command ends or dies")
	}
	completeEnums(cmd)
}

const subOutput = `Formats (as recv's):
  text  each message followed by a newline; an event as the line
        "event KIND pid=PID role=ROLE slot=SLOT"
  json  one object per line: {"priority":P,"size":N,"data":"<base64>"}, or
        {"event":"died","pid":PID,"role":"producer","slot":SLOT}
  raw   the messages back to back, nothing added (no --events)

--timeout is the time allowed for all N messages: if fewer arrive, the
ones that did are written and the exit status is 3. With -n 0 it receives
until the timeout passes (exit status 0) or it is interrupted (130). A
message leaves the subscription only after its bytes have been written to
stdout, so a command killed in between leaves it for the next holder (at
least once: a last batch of at most 256 messages or 64 KiB may come
twice). A lossy subscription that was overrun says on stderr how many
messages of which priority it missed, "shmbus: warning: ...", and goes on.`

func (a *app) subCmd() *cobra.Command {
	sf := &subFlags{count: 1, format: "text", from: "latest"}
	cmd := &cobra.Command{
		Use:   "sub NAME SUBSCRIPTION",
		Short: "Receive every message of a fan-out bus through a subscription",
		Long: `Receive N messages (-n N, default 1) from the subscription SUBSCRIPTION of
the fan-out bus NAME (made with 'shmbus create NAME --subscriptions N') and
write them to stdout, the oldest message of the highest priority first.
Every subscription of a bus gets every message. The subscription is made
if it does not exist: blocking (producers wait for it when a lane is
full) unless --lossy, starting at the next message published unless --from
oldest, durable (it stays, and keeps its place, after this command ends,
until 'shmbus unsub') unless --ephemeral. One process holds a subscription
at a time: sub fails (exit status 1) while another live one does; if the
holder died, sub takes it over and resumes where it left off.

` + subOutput,
		Example: `  shmbus create events --subscriptions 8
  shmbus sub events audit -n 0             # every message, until interrupted
  shmbus sub events dashboard --lossy --events -n 0 --format json
  shmbus unsub events audit`,
		Args:              busAndSubscription,
		ValidArgsFunction: a.completeSubArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.subscribe(cmd.Context(), args[0], args[1], sf)
		},
	}
	sf.add(cmd, true)
	return cmd
}

func (a *app) listenCmd() *cobra.Command {
	sf := &subFlags{count: 0, format: "text", from: "latest"}
	cmd := &cobra.Command{
		Use:   "listen NAME",
		Short: "Print the messages (and peer events) of a fan-out bus as they come",
		Long: `Listen to the fan-out bus NAME through a new ephemeral subscription: print
every message published from now on (and with --events the bus's peer
events: a producer, consumer or subscriber attached, detached or died),
until interrupted (-n 0, the default) or -n N of them. The subscription goes
away when listen ends, or once it is proven dead if it is killed, so it
never holds producers back for long; with --lossy it never does.

Together with 'shmbus notify' this informs a group of processes: each
listens, anyone notifies, everyone gets every notification, and with
--events everyone also learns when a peer dies.

` + subOutput,
		Example: `  shmbus listen events --events
  shmbus notify events reload`,
		Args:              busArgs(1),
		ValidArgsFunction: a.completeBuses,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.subscribe(cmd.Context(), args[0], "", sf)
		},
	}
	sf.add(cmd, false)
	return cmd
}

func (a *app) subscribe(ctx context.Context, name, subName string, sf *subFlags) error {
	if sf.events && sf.format == "raw" {
		return usagef("sub: --events needs --format text or json")
	}
	bus, err := shmbus.Open(name, a.openOptions())
	if err != nil {
		return err
	}
	defer bus.Close()
	opts := &shmbus.SubscribeOptions{Lossy: sf.lossy, Events: sf.events, Ephemeral: sf.ephemeral}
	if sf.from == "oldest" {
		opts.From = shmbus.FromOldest
	}
	s, err := bus.Subscribe(ctx, subName, opts)
	if err != nil {
		return err
	}
	defer s.Close()
	if sf.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, sf.timeout)
		defer cancel()
	}
	out := &recvOutput{format: sf.format, w: newVecWriter(a.stdout)}
	got := 0
	err = func() error {
		for sf.count == 0 || got < sf.count {
			if err := ctx.Err(); err != nil {
				return err
			}
			if sf.events {
				if ev, ok := s.TakeEvent(); ok {
					if err := writeEvent(a.stdout, sf.format, ev); err != nil {
						return err
					}
					got++
					continue
				}
			}
			n, err := s.Deliver(max(sf.count-got, 0), out.write)
			got += n
			var lag *shmbus.LaggedError
			if errors.As(err, &lag) {
				fmt.Fprintln(a.stderr, "shmbus: warning: "+strings.Join(strings.Fields(err.Error()), " "))
				continue
			}
			if err != nil {
				return err
			}
			if n == 0 {
				if err := s.Wait(ctx); err != nil {
					return err
				}
			}
		}
		return nil
	}()
	switch {
	case err == nil:
		return s.Close()
	case sf.count == 0 && errors.Is(err, context.DeadlineExceeded):
		return s.Close() // -n 0 ends at the timeout
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		want := ""
		if sf.count > 0 {
			want = fmt.Sprintf(" of %d", sf.count)
		}
		return fmt.Errorf("sub to bus %q: %w: received %d%s", name, ctxError(err, sf.timeout), got, want)
	}
	return onBus("sub", "to", name, err, fmt.Sprintf(" (after %d message(s))", got))
}

// jsonEvent is one peer event in --format json.
type jsonEvent struct {
	Event string `json:"event"`
	PID   int    `json:"pid"`
	Role  string `json:"role"`
	Slot  int    `json:"slot"`
}

func writeEvent(w io.Writer, format string, ev *shmbus.PeerEvent) error {
	var err error
	if format == "json" {
		b, _ := json.Marshal(jsonEvent{Event: ev.Kind.String(), PID: ev.PID, Role: ev.Role, Slot: ev.Slot})
		_, err = w.Write(append(b, '\n'))
	} else {
		_, err = fmt.Fprintf(w, "event %s pid=%d role=%s slot=%d\n", ev.Kind, ev.PID, ev.Role, ev.Slot)
	}
	if err != nil {
		return fmt.Errorf("write stdout: %w", err)
	}
	return nil
}

func (a *app) unsubCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "unsub NAME SUBSCRIPTION",
		Short: "Remove a subscription of a fan-out bus",
		Long: `Remove the subscription SUBSCRIPTION of the fan-out bus NAME, so that it
no longer holds producers back. It fails (exit status 1) while a live
process holds the subscription, or if there is none of that name.`,
		Args:              busAndSubscription,
		ValidArgsFunction: a.completeSubArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			bus, err := shmbus.Open(args[0], a.openOptions())
			if err != nil {
				return err
			}
			defer bus.Close()
			if err := bus.Unsubscribe(args[1]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "removed subscription %q of bus %q\n", args[1], args[0])
			return bus.Close()
		},
	}
	return cmd
}

func (a *app) notifyCmd() *cobra.Command {
	var (
		prio    int
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "notify NAME EVENT...",
		Short: "Send small messages (events) to every subscriber of a fan-out bus",
		Long: `Send each EVENT as one message on the bus NAME at --priority: on a fan-out
bus every subscription receives it ('shmbus listen NAME' prints them). It
waits for room as send does, up to --timeout (exit status 3).`,
		Example: `  shmbus notify events reload
  shmbus notify events -p 1 'shutdown in 5 minutes'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return fmt.Errorf("%s: want a bus name and at least one event (see '%s --help')", cmd.Name(), cmd.CommandPath())
			}
			return nil
		},
		ValidArgsFunction: a.completeBuses,
		RunE: func(cmd *cobra.Command, args []string) error {
			bus, err := shmbus.Open(args[0], a.openOptions())
			if err != nil {
				return err
			}
			defer bus.Close()
			p, err := bus.NewProducer()
			if err != nil {
				return err
			}
			defer p.Close()
			for i, ev := range args[1:] {
				ctx, cancel := cmd.Context(), context.CancelFunc(func() {})
				if timeout > 0 {
					ctx, cancel = context.WithTimeout(ctx, timeout)
				}
				err := p.Send(ctx, []byte(ev), prio)
				cancel()
				if err != nil {
					return onBus("notify", "on", args[0], ctxError(err, timeout), fmt.Sprintf(" (after %d event(s))", i))
				}
			}
			return p.Close()
		},
	}
	cmd.Flags().VarP(intValue{&prio, "priority", 0, 63}, "priority", "p", "priority of the events")
	cmd.Flags().Var(durValue{&timeout}, "timeout", "give up on an event after DUR (0 = wait forever)")
	return cmd
}

// completeSubArgs completes a bus name, then the names of its
// subscriptions.
func (a *app) completeSubArgs(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return a.completeBuses(cmd, args, toComplete)
	}
	if len(args) > 1 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	bus, err := shmbus.Open(args[0], a.openOptions())
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	defer bus.Close()
	infos, err := bus.Subscriptions()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []cobra.Completion
	for _, s := range infos {
		if strings.HasPrefix(s.Name, toComplete) {
			out = append(out, s.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// subStat is one subscription in stat, also its JSON form.
type subStat struct {
	Name      string    `json:"name"`
	Lossy     bool      `json:"lossy"`
	Durable   bool      `json:"durable"`
	Events    bool      `json:"events"`
	HolderPID int       `json:"holder_pid"` // 0: nobody
	Held      bool      `json:"held"`       // by a live process
	HoldsBack bool      `json:"holds_back"` // producers can free nothing in some lane until it moves
	Created   time.Time `json:"created"`
	LagMsgs   []uint64  `json:"lag_messages"` // per priority
	LagBytes  []uint64  `json:"lag_bytes"`
}

// addSubscriptions fills in the subscriptions of a fan-out bus.
func addSubscriptions(bus *shmbus.Bus, s *busStat) error {
	fan, n := bus.FanOut()
	if !fan {
		return nil
	}
	s.SubscriptionSlots = n
	infos, err := bus.Subscriptions()
	if err != nil {
		return err
	}
	s.Subscriptions = []subStat{}
	for _, i := range infos {
		st := subStat{Name: i.Name, Lossy: i.Lossy, Durable: i.Durable, Events: i.Events, HolderPID: i.HolderPID,
			Held: i.Held, HoldsBack: i.HoldsBack, Created: i.Created}
		for _, l := range i.Lag {
			st.LagMsgs = append(st.LagMsgs, l.Messages)
			st.LagBytes = append(st.LagBytes, l.Bytes)
		}
		s.Subscriptions = append(s.Subscriptions, st)
	}
	return nil
}

// writeSubscriptions writes the subscriptions part of stat's text.
func (s *busStat) writeSubscriptions(out io.Writer) {
	if s.SubscriptionSlots == 0 {
		return
	}
	fmt.Fprintf(out, "fan-out bus: %d of %d subscriptions in use\n", len(s.Subscriptions), s.SubscriptionSlots)
	if len(s.Subscriptions) == 0 {
		fmt.Fprintln(out)
		return
	}
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "SUBSCRIPTION\tKIND\tHOLDER\tLAG MSGS\tLAG BYTES\tHOLDS BACK")
	for _, sub := range s.Subscriptions {
		kind := "blocking"
		if sub.Lossy {
			kind = "lossy"
		}
		if sub.Durable {
			kind += ",durable"
		} else {
			kind += ",ephemeral"
		}
		if sub.Events {
			kind += ",events"
		}
		holder := "-"
		if sub.HolderPID != 0 {
			holder = fmt.Sprint(sub.HolderPID)
			if !sub.Held {
				holder += " (dead)"
			}
		}
		var msgs, bytes uint64
		for i := range sub.LagMsgs {
			msgs += sub.LagMsgs[i]
			bytes += sub.LagBytes[i]
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", sub.Name, kind, holder, compactCount(msgs), compactCount(bytes), yesNo(sub.HoldsBack))
	}
	w.Flush()
	fmt.Fprintln(out)
}

// mostBehind is the subscription with the most messages not yet read (lag
// in messages over all priorities; lossy ones included), and that number.
func (s *busStat) mostBehind() (string, uint64) {
	name, most := "", uint64(0)
	for _, sub := range s.Subscriptions {
		var n uint64
		for _, m := range sub.LagMsgs {
			n += m
		}
		if n > most {
			name, most = sub.Name, n
		}
	}
	return name, most
}

// busAndSubscription checks the arguments of sub and unsub: a bus name and
// a subscription name.
func busAndSubscription(cmd *cobra.Command, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("%s: want a bus name and a subscription name, got %d arguments (see '%s --help')",
			cmd.Name(), len(args), cmd.CommandPath())
	}
	return nil
}
