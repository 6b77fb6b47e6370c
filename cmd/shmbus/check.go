package main

import (
	"fmt"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
)

func (a *app) checkCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check NAME",
		Short: "Check a bus's segment for damage",
		Long: `Check reads the bus NAME without attaching to it and checks the header,
every lane's positions and records, the roles and the peer table. It prints
"NAME: ok" for a consistent bus; for a damaged one it names the first fault
and exits with status 1. Records being written by live producers are not
faults.`,
		Args:              busArgs(1),
		ValidArgsFunction: a.completeBuses,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := shmbus.Check(a.dir, args[0]); err != nil {
				return err // "check bus NAME: ..."
			}
			fmt.Fprintf(a.stdout, "%s: ok\n", args[0])
			return nil
		},
	}
}
