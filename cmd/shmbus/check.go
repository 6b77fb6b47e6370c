package main

import (
	"errors"
	"fmt"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
)

// checkResult is the JSON form of check.
type checkResult struct {
	Name   string   `json:"name"`
	OK     bool     `json:"ok"`
	Error  string   `json:"error,omitempty"`
	Faults []string `json:"faults,omitempty"` // each fault of a damaged bus
}

func (a *app) checkCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check NAME",
		Short: "Check a bus's segment for damage",
		Long: `Check reads the bus NAME without attaching to it and checks the header,
every lane's positions, records and free space, the roles and the peer
table. It prints "NAME: ok" for a consistent bus; for a damaged one it prints
every fault found, one a line as "NAME: FAULT", and exits with status 1.
Records being written by live producers are not faults.

With --json it prints {"name":NAME,"ok":true}, or {"name":NAME,"ok":false,
"error":"...","faults":["...",...]} for a damaged bus (and still says why on
stderr and exits with status 1).`,
		Args:              busArgs(1),
		ValidArgsFunction: a.completeBuses,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := shmbus.Check(a.dir, args[0]) // "check bus NAME: ..."
			ce, damaged := errors.AsType[*shmbus.CheckError](err)
			if asJSON {
				r := checkResult{Name: args[0], OK: err == nil}
				if err != nil {
					r.Error = err.Error()
				}
				if damaged {
					for _, f := range ce.Faults {
						r.Faults = append(r.Faults, f.Error())
					}
				}
				if werr := writeJSON(a.stdout, r); werr != nil && err == nil {
					return werr
				}
				return err
			}
			if damaged {
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
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "%s: ok\n", args[0])
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
