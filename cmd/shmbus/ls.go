package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
)

// lsEntry is one bus in ls, also its JSON form.
type lsEntry struct {
	Name       string `json:"name"`
	Size       uint64 `json:"size,omitempty"`
	Priorities int    `json:"priorities,omitempty"`
	Messages   uint64 `json:"messages"`
	Bytes      uint64 `json:"bytes"`
	// What else the count of the lanes found (see stat).
	Unfinished  int    `json:"unfinished,omitempty"`
	Unpublished uint64 `json:"unpublished,omitempty"`
	Unreadable  bool   `json:"unreadable,omitempty"`
	Peers       int    `json:"peers"`
	Wake        string `json:"wake,omitempty"`
	Error       string `json:"error,omitempty"`
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
the exit status is still 0.`,
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
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(entries)
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
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", e.Name, humanSize(e.Size), e.Priorities,
					e.Messages, e.Bytes, e.Peers, e.Wake, status)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
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
	e.Size, e.Priorities, e.Messages, e.Bytes, e.Wake = s.Size, s.Priorities, s.Messages, s.Bytes, s.Wake
	e.Unfinished, e.Unpublished, e.Unreadable = s.Unfinished, s.Unpublished, s.Unreadable
	for _, p := range s.Peers {
		if p.Alive {
			e.Peers++
		}
	}
	return e
}
