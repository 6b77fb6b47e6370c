package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
)

// lsEntry is one bus in ls, also its JSON form: the name and either the
// bus's figures or, for a bus that could not be read, its error (and no
// figures, which would be made up).
type lsEntry struct {
	Name string `json:"name"`
	*lsFigures
	Error string `json:"error,omitempty"`
}

type lsFigures struct {
	Size       uint64 `json:"size"`
	Priorities int    `json:"priorities"`
	Messages   uint64 `json:"messages"`
	Bytes      uint64 `json:"bytes"`
	// What else the count of the lanes found (see stat).
	Unfinished  int    `json:"unfinished,omitempty"`
	Unpublished uint64 `json:"unpublished,omitempty"`
	Unreadable  bool   `json:"unreadable,omitempty"`
	Peers       int    `json:"peers"`
	Wake        string `json:"wake"`
	// Fan-out buses: subscriptions in use, and how many hold producers back.
	Subscriptions int `json:"subscriptions,omitempty"`
	HoldingBack   int `json:"holding_back,omitempty"`
}

func (a *app) lsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the buses",
		Long: `List the buses in the directory: size of the segment, priorities, messages
waiting, ring bytes in use and live peers. Messages and bytes are counted in
the lanes (as stat counts them); bytes that belong to no complete message
(an unfinished large message, space a producer claimed and has not
published) are named in the STATUS column. A bus that cannot be opened
(corrupt, not a segment, permission denied, ...) is listed with its error;
the exit status is still 0. With --json, ls prints one object per bus and
line: {"name":...,"size":...} or, for a bus it cannot read,
{"name":...,"error":...}.`,
		Aliases: []string{"list"},
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			names, err := shmbus.List(a.dir)
			if err != nil {
				return err
			}
			entries := []lsEntry{}
			for _, name := range names {
				entries = append(entries, a.lsEntry(name))
			}
			if asJSON {
				for _, e := range entries {
					if err := writeJSON(a.stdout, e); err != nil {
						return err
					}
				}
				return nil
			}
			w := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSIZE\tPRIO\tMSGS\tBYTES\tPEERS\tWAKE\tSTATUS")
			for _, e := range entries {
				if e.Error != "" {
					fmt.Fprintf(w, "%s\t-\t-\t-\t-\t-\t-\t%s\n", e.Name, e.Error)
					continue
				}
				status := "ok"
				if t := (&busStat{Unfinished: e.Unfinished, Unpublished: e.Unpublished, Unreadable: e.Unreadable}).unusual(); t != "" {
					status = strings.TrimPrefix(t, ", ")
				}
				if e.Subscriptions > 0 {
					status += fmt.Sprintf(", %d subscription(s), %d holding producers back", e.Subscriptions, e.HoldingBack)
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", e.Name, humanSize(e.Size), e.Priorities,
					e.Messages, e.Bytes, e.Peers, e.Wake, status)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per bus and line")
	return cmd
}

func (a *app) lsEntry(name string) lsEntry {
	e := lsEntry{Name: name}
	bus, err := shmbus.Open(name, &shmbus.OpenOptions{Dir: a.dir, Wait: 100 * time.Millisecond})
	if err != nil {
		e.Error = err.Error()
		return e
	}
	defer bus.Close()
	s, err := statBus(bus)
	if err != nil {
		e.Error = err.Error()
		return e
	}
	f := &lsFigures{Size: s.Size, Priorities: s.Priorities, Messages: s.Messages, Bytes: s.Bytes, Wake: s.Wake,
		Unfinished: s.Unfinished, Unpublished: s.Unpublished, Unreadable: s.Unreadable}
	for _, p := range s.Peers {
		if p.Alive {
			f.Peers++
		}
	}
	for _, sub := range s.Subscriptions {
		f.Subscriptions++
		if sub.HoldsBack {
			f.HoldingBack++
		}
	}
	e.lsFigures = f
	return e
}
