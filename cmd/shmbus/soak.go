package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/bench"
	"github.com/shmbus/shmbus/layout"
	"github.com/spf13/cobra"
)

func (a *app) soakCmd() *cobra.Command {
	var (
		opts bench.SoakOptions
		wake string
	)
	cmd := &cobra.Command{
		Use:   "soak",
		Short: "Run producers and a consumer on a temporary bus, checking every message",
		Long: `Soak creates a temporary multi-producer bus, runs --producers producers
(each attached on its own) sending checksummed, sequence-numbered messages of
random sizes, some larger than a record, at random priorities, and one
consumer that checks every message for damage, duplication, order and loss.
It prints the counts once a second and a summary at the end, and exits with
status 1 if anything was wrong. Interrupted (SIGINT, SIGTERM), it stops the
producers, prints the summary so far and exits with status 130 (1 if it had
found errors by then). The bus is removed at the end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Wake = shmbus.WakeFutex
			if wake == "sem" {
				opts.Wake = shmbus.WakeSem
			}
			if opts.Duration <= 0 {
				return usagef("soak: --duration must be positive")
			}
			opts.Dir = a.dir
			opts.Progress = func(r bench.SoakReport) { fmt.Fprintf(a.stderr, "soak: %v\n", r) }
			rep, err := bench.Soak(cmd.Context(), opts)
			if errors.Is(err, context.Canceled) {
				fmt.Fprintf(a.stdout, "soak: %v\n", rep)
				if rep.Errors != 0 {
					return fmt.Errorf("soak: interrupted after %d errors", rep.Errors)
				}
				return fmt.Errorf("soak: %w after %d messages", interruptedError{}, rep.Messages)
			}
			if err != nil {
				return fmt.Errorf("soak: %w", err)
			}
			fmt.Fprintf(a.stdout, "soak: %v\n", rep)
			if rep.Errors != 0 {
				return fmt.Errorf("soak: %d errors", rep.Errors)
			}
			return nil
		},
	}
	f := cmd.Flags()
	opts.Duration, opts.Producers, opts.Priorities, wake = 30*time.Second, 3, 3, "futex"
	f.Var(durValue{&opts.Duration}, "duration", "how long producers send")
	// Each producer and the consumer take a peer slot of the bus.
	maxProducers := shmbus.DefaultPeerSlots - 1
	f.Var(intValue{&opts.Producers, "number of producers", 1, maxProducers}, "producers",
		fmt.Sprintf("N producers (1..%d)", maxProducers))
	f.Var(intValue{&opts.Priorities, "number of priorities", 1, layout.MaxLanes}, "priorities",
		fmt.Sprintf("N priority levels (1..%d)", layout.MaxLanes))
	f.Var(enumValue{&wake, []string{"futex", "sem"}}, "wake", "how sleepers are woken")
	completeEnums(cmd)
	return cmd
}
