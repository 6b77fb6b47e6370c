package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
)

func (a *app) rmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove buses",
		Long: `Remove each bus NAME: its segment file, its System V semaphore set (sem
mode) and any reassembly files. Processes still attached keep working on
their mapping until they detach.

rm refuses a bus whose lanes still hold anything (messages, parts of
messages, or space a producer claimed), judged by the lanes' positions, and
one it cannot
open (corrupt, not a segment), unless --force is given. --force also
ignores buses that do not exist. The semaphore set of a sem-mode bus is
found even when the segment is truncated or its header damaged (by a key
derived from the file); a set rm finds but cannot prove to be the bus's is
left, and rm exits 1 naming it and the 'ipcrm -s ID' that removes it. rm goes on with the other names after a
failure and reports the failures in one line.`,
		Aliases:           []string{"remove"},
		ValidArgsFunction: a.completeBuses,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("%s: missing bus name (see '%s --help')", cmd.Name(), cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, name := range args {
				if err := a.rm(name, force); err != nil {
					errs = append(errs, err)
				}
			}
			return joinErrors(errs)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even with undelivered messages or a damaged segment; ignore missing buses")
	return cmd
}

func (a *app) rm(name string, force bool) error {
	if !force {
		bus, err := shmbus.Open(name, a.openOptions())
		if err != nil {
			if errors.Is(err, shmbus.ErrNotExist) || errors.Is(err, shmbus.ErrBadName) {
				return err
			}
			return fmt.Errorf("%w (use --force to remove it anyway)", err)
		}
		s, err := statBus(bus)
		bus.Close()
		if err != nil {
			return fmt.Errorf("%w (use --force to remove it anyway)", err)
		}
		// A fan-out bus keeps what every subscription has read until a
		// producer needs the room: what is undelivered is what some
		// subscription has not read yet.
		if s.SubscriptionSlots > 0 {
			if sub, msgs := s.mostBehind(); msgs > 0 {
				return fmt.Errorf("bus %q has %d message(s) not yet delivered to subscription %q; use --force to remove it anyway",
					name, msgs, sub)
			}
		} else if s.Bytes > 0 {
			// Judged by the lanes' positions, never by counters that can
			// drift: a lane whose head is at its tail holds nothing.
			return fmt.Errorf("bus %q has %d undelivered message(s) (%d ring bytes%s); use --force to remove it anyway",
				name, s.Messages, s.Bytes, s.unusual())
		}
	}
	err := shmbus.Remove(a.dir, name)
	if force && errors.Is(err, shmbus.ErrNotExist) {
		return nil
	}
	return err
}

// multiError is several errors on one line; its exit status is the first's.
type multiError []error

func (m multiError) Error() string {
	s := make([]string, len(m))
	for i, e := range m {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (m multiError) Unwrap() error { return m[0] }

func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return multiError(errs)
}
