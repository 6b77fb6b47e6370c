package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/layout"
	"github.com/spf13/cobra"
)

func (a *app) createCmd() *cobra.Command {
	var (
		capacity    = shmbus.DefaultLaneCapacity
		maxMessage  = shmbus.DefaultMaxMessage
		recordLimit int
		priorities  = 1
		peers       = shmbus.DefaultPeerSlots
		producers   = "multi"
		wake        = "futex"
		mode        = uint32(shmbus.DefaultMode)
		failFast    bool
		subs        int
		asJSON      bool
		force       bool
	)
	capFlag := newSizeValue(&capacity)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a bus",
		Long: `Create the bus NAME and print its size (with --json, the bus's
configuration as stat --json shows it). Every page of the segment is
reserved up front (priorities × capacity, plus a little), so a create
larger than the directory's free space, or, on a tmpfs such as /dev/shm,
than the memory available, is refused before anything is written (exit
status 1) unless --force is given. An interrupted create (SIGINT, SIGTERM)
stops, removes what it had made, and exits with status 130.

Every lane (one per priority) is a ring of --capacity bytes; a message of up
to one record (an eighth of a lane by default) travels in one piece, a larger
one, up to --max-message, in fragments. A value outside the range its flag's
help gives (a capacity that is not a power of two from 1KiB to 1GiB, more
than 64 priorities, ...) is a usage error (exit status 2); a combination the
library refuses (a record limit above half the capacity) is a runtime error
(exit status 1).`,
		Example: `  shmbus create orders --priorities 4 --capacity 4MiB
  shmbus create events --subscriptions 16
  shmbus create log --producers single --wake sem --mode 0660`,
		Args: busArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkCapacity(capFlag); err != nil {
				return err
			}
			opts := &shmbus.Options{
				Priorities:   priorities,
				LaneCapacity: capacity,
				RecordLimit:  recordLimit,
				MaxMessage:   maxMessage,
				Producers:    shmbus.MultiProducer,
				FailFast:     failFast,
				Wake:         shmbus.WakeFutex,
				Mode:         fs.FileMode(mode),
				PeerSlots:    peers,
				Dir:          a.dir,
				// A fan-out bus: every message to every subscription (see sub).
				Subscriptions: subs,
			}
			if producers == "single" {
				opts.Producers = shmbus.SingleProducer
			}
			if wake == "sem" {
				opts.Wake = shmbus.WakeSem
			}
			name := args[0]
			var size int64
			var err error
			if force {
				size, err = shmbus.SegmentSize(opts)
			} else {
				size, err = shmbus.CheckRoom(opts)
			}
			var room *shmbus.NoRoomError
			if errors.As(err, &room) {
				return fmt.Errorf("create bus %q: the segment would be %s (%d × %s lanes and headers), more than the %s of %s in %s; use --force to create it anyway",
					name, humanSize(room.Size), priorities, formatSize(capacity), humanSize(room.Room), room.What, room.Dir)
			}
			if err != nil && !errors.Is(err, shmbus.ErrConfig) {
				return fmt.Errorf("create bus %q: %w", name, err)
			}
			// A configuration error is Create's to report.
			bus, err := shmbus.CreateContext(cmd.Context(), name, opts)
			if errors.Is(err, context.Canceled) {
				return fmt.Errorf("create bus %q: %w (nothing was left behind)", name, interruptedError{})
			}
			if err != nil {
				return err
			}
			defer bus.Close()
			if asJSON {
				s, err := statBus(bus)
				if err != nil {
					return err
				}
				if err := writeJSON(a.stdout, s); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "created bus %q: %d × %s lanes, %s segment (%s)\n",
					name, priorities, formatSize(capacity), humanSize(uint64(size)), bus.Path())
			}
			return bus.Close()
		},
	}
	f := cmd.Flags()
	f.Var(capFlag, "capacity", "bytes per lane (a power of two, 1KiB..1GiB)")
	f.Var(intValue{&priorities, "number of priorities", 1, layout.MaxLanes}, "priorities",
		fmt.Sprintf("N priority levels (1..%d), 0 (least urgent) to N-1", layout.MaxLanes))
	f.Var(enumValue{&producers, []string{"single", "multi"}}, "producers", "one producer at a time (wait-free) or any number")
	f.Var(newSizeValue(&maxMessage), "max-message", "largest message")
	f.Var(newSizeValue(&recordLimit), "record-limit", "largest record in a lane, header included (default capacity/8)")
	f.Var(modeValue{&mode}, "mode", "permission bits of the segment (and semaphore set)")
	f.Var(enumValue{&wake, []string{"futex", "sem"}}, "wake", "how sleepers are woken: futexes or a System V semaphore set")
	f.Var(intValue{&peers, "number of peers", 1, layout.MaxPeerSlots}, "peers",
		fmt.Sprintf("at most N peers (producers and the consumer) attached at once (1..%d)", layout.MaxPeerSlots))
	f.Var(intValue{&subs, "number of subscriptions", 0, layout.MaxSubscriptions}, "subscriptions",
		fmt.Sprintf("make a fan-out bus with room for N subscriptions (1..%d): every message to every subscriber, no queue consumer", layout.MaxSubscriptions))
	f.BoolVar(&failFast, "fail-fast", false, "a full lane fails sends at once instead of making them wait")
	f.BoolVar(&asJSON, "json", false, "print the new bus's configuration as JSON (as stat --json)")
	f.BoolVar(&force, "force", false, "create even if the segment is larger than the free space (or, on tmpfs, the available memory)")
	completeEnums(cmd)
	return cmd
}

// checkCapacity refuses a --capacity that no bus can have, echoing it as
// typed.
func checkCapacity(v sizeValue) error {
	n := *v.n
	if n < layout.MinCapacity || n > layout.MaxCapacity || n&(n-1) != 0 {
		return usagef("create: invalid capacity %q for --capacity: want a power of two from %s to %s",
			v.Typed(), formatSize(layout.MinCapacity), formatSize(layout.MaxCapacity))
	}
	return nil
}
