package main

import (
	"errors"
	"fmt"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
)

func (a *app) checkCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check NAME",
		Short: "Check a bus's segment for damage",
		Long: `Check reads the bus NAME without attaching to it and checks the header,
every lane's positions, records and free space, the roles and the peer
table. It prints "NAME: ok" for a consistent bus; for a damaged one it prints
every fault found, one a line as "NAME: FAULT", and exits with status 1.
Records being written by live producers are not faults.`,
		Args:              busArgs(1),
		ValidArgsFunction: a.completeBuses,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := shmbus.Check(a.dir, args[0])
			if ce, ok := errors.AsType[*shmbus.CheckError](err); ok {
				for _, f := range ce.Faults {
					fmt.Fprintf(a.stdout, "%s: %v\n", args[0], f)
				}
				noun := "faults"
				if len(ce.Faults) == 1 {
					noun = "fault"
				}
				return fmt.Errorf("check bus %q: %d %s: %w", args[0], len(ce.Faults), noun, shmbus.ErrCorrupt)
			}
			if err != nil {
				return err // "check bus NAME: ..."
			}
			fmt.Fprintf(a.stdout, "%s: ok\n", args[0])
			return nil
		},
	}
}
