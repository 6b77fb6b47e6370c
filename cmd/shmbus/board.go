package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
)

// The board commands: shared keyed values (see docs/semantics.md, "Boards").

const boardLong = `Boards hold keyed values that any process can read and write: the latest
value of each key, with a revision that grows with every write. A board NAME
is the file shmbus-board.NAME beside the buses (boards and buses have names
of their own). Keys are 1 to 255 bytes; values up to the board's
--max-value.

Every command takes --json: one JSON object (or array, for ls) per result,
with the value as "value" when it is UTF-8 text and as "value_base64"
otherwise.

Exit status as for every shmbus command: 1 for a runtime error (no such
board or key, a revision that does not match in cas, a value too large, a
full board), 2 for a usage error (including an invalid key), 3 when watch's
--timeout passes, 130 when interrupted.`

// boardFlags are the flags every board command shares.
type boardFlags struct {
	json bool
}

func (a *app) boardCmd() *cobra.Command {
	bf := &boardFlags{}
	cmd := &cobra.Command{
		Use:   "board",
		Short: "Shared keyed values: create, put, get, cas, rm, ls, watch, check",
		Long:  boardLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("board: missing command (see 'shmbus board --help')")
		},
	}
	cmd.PersistentFlags().BoolVar(&bf.json, "json", false, "print JSON")
	cmd.AddCommand(
		a.boardCreateCmd(bf),
		a.boardPutCmd(bf),
		a.boardGetCmd(bf),
		a.boardCASCmd(bf),
		a.boardRmCmd(bf),
		a.boardLsCmd(bf),
		a.boardWatchCmd(bf),
		a.boardCheckCmd(bf),
	)
	return cmd
}

// boardArgs validates the number of arguments (between lo and hi).
func boardArgs(lo, hi int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return fmt.Errorf("%s: want %s, got %d arguments (see '%s --help')", cmd.Name(), what, len(args), cmd.CommandPath())
		}
		return nil
	}
}

func checkKey(verb, key string) error {
	if len(key) == 0 || len(key) > 255 {
		return usagef("%s: key %q: a key is 1 to 255 bytes", verb, key)
	}
	return nil
}

func (a *app) openBoard(name string) (*shmbus.Board, error) {
	return shmbus.OpenBoard(name, a.openOptions())
}

// boardJSON is one entry in --json output.
type boardJSON struct {
	Board       string `json:"board,omitempty"`
	Key         string `json:"key"`
	Rev         uint64 `json:"rev"`
	Value       string `json:"value,omitempty"`
	ValueBase64 []byte `json:"value_base64,omitempty"`
	Size        int    `json:"size"`
	Deleted     bool   `json:"deleted,omitempty"`
}

func entryJSON(e shmbus.BoardEntry) boardJSON {
	j := boardJSON{Key: e.Key, Rev: e.Rev, Size: len(e.Value), Deleted: e.Deleted}
	if utf8.Valid(e.Value) {
		j.Value = string(e.Value)
	} else {
		j.ValueBase64 = e.Value
	}
	return j
}

func (a *app) printJSON(v any) error { return writeJSON(a.stdout, v) }

// printValue writes a value as a line (a newline is added unless it ends
// with one).
func (a *app) printValue(v []byte) error {
	if _, err := a.stdout.Write(v); err != nil {
		return err
	}
	if len(v) == 0 || v[len(v)-1] != '\n' {
		_, err := io.WriteString(a.stdout, "\n")
		return err
	}
	return nil
}

func (a *app) boardCreateCmd(bf *boardFlags) *cobra.Command {
	var (
		keys     = shmbus.DefaultBoardKeys
		maxValue = shmbus.DefaultBoardMaxValue
		mode     = uint32(shmbus.DefaultMode)
		wake     = "futex"
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a board",
		Long: `Create the board NAME with room for --keys keys of values up to
--max-value bytes (both fixed for the board's life; the segment holds two
copies of every value). It prints nothing on success (with --json, the
board's name, path and sizes).`,
		Example: `  shmbus board create config --keys 64 --max-value 4KiB
  shmbus board create cluster --wake sem --mode 0660`,
		Args: boardArgs(1, 1, "a board name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keys < 1 {
				return usagef("create: --keys must be at least 1, not %d", keys)
			}
			opts := &shmbus.BoardOptions{Keys: keys, MaxValue: maxValue, Mode: fs.FileMode(mode), Dir: a.dir, Wake: shmbus.WakeFutex}
			if wake == "sem" {
				opts.Wake = shmbus.WakeSem
			}
			b, err := shmbus.CreateBoard(args[0], opts)
			if err != nil {
				return err
			}
			defer b.Close()
			if bf.json {
				return a.printJSON(map[string]any{"board": b.Name(), "path": b.Path(), "keys": b.Capacity(),
					"max_value": b.MaxValue(), "size": b.Header().TotalSize, "wake": b.WakeMode().String()})
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&keys, "keys", keys, "room for `N` keys")
	f.Var(newSizeValue(&maxValue), "max-value", "largest value")
	f.Var(modeValue{&mode}, "mode", "permission bits of the segment (and semaphore set)")
	f.Var(enumValue{&wake, []string{"futex", "sem"}}, "wake", "how watchers are woken: futexes or a System V semaphore set")
	return cmd
}

// readValue is VALUE, or standard input for "-".
func (a *app) readValue(arg string) ([]byte, error) {
	if arg != "-" {
		return []byte(arg), nil
	}
	return io.ReadAll(a.stdin)
}

func (a *app) printRev(bf *boardFlags, key string, rev uint64) error {
	if bf.json {
		return a.printJSON(map[string]any{"key": key, "rev": rev})
	}
	_, err := fmt.Fprintln(a.stdout, rev)
	return err
}

func (a *app) boardPutCmd(bf *boardFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "put NAME KEY VALUE",
		Short: "Set a key's value",
		Long: `Make VALUE the value of KEY on board NAME (VALUE "-" reads it from
standard input, all of it, newlines included) and print the new revision.`,
		Example: `  shmbus board put config leader host-3
  date | shmbus board put config started -`,
		Args: boardArgs(3, 3, "NAME KEY VALUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkKey("put", args[1]); err != nil {
				return err
			}
			v, err := a.readValue(args[2])
			if err != nil {
				return fmt.Errorf("put: read standard input: %w", err)
			}
			b, err := a.openBoard(args[0])
			if err != nil {
				return err
			}
			defer b.Close()
			rev, err := b.Put(args[1], v)
			if err != nil {
				return err
			}
			return a.printRev(bf, args[1], rev)
		},
	}
}

func (a *app) boardGetCmd(bf *boardFlags) *cobra.Command {
	var showRev bool
	cmd := &cobra.Command{
		Use:   "get NAME KEY",
		Short: "Print a key's value",
		Long: `Print the value of KEY on board NAME as a line (with --rev, its revision
first, then a space). A key without a value (never written, or deleted) is a
runtime error.`,
		Args: boardArgs(2, 2, "NAME KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkKey("get", args[1]); err != nil {
				return err
			}
			b, err := a.openBoard(args[0])
			if err != nil {
				return err
			}
			defer b.Close()
			v, rev, err := b.Get(args[1], nil)
			if err != nil {
				return err
			}
			if bf.json {
				return a.printJSON(entryJSON(shmbus.BoardEntry{Key: args[1], Value: v, Rev: rev}))
			}
			if showRev {
				fmt.Fprintf(a.stdout, "%d ", rev)
			}
			return a.printValue(v)
		},
	}
	cmd.Flags().BoolVar(&showRev, "rev", false, "print the revision before the value")
	return cmd
}

func (a *app) boardCASCmd(bf *boardFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cas NAME KEY REV VALUE",
		Short: "Set a key's value if its revision is still REV",
		Long: `Make VALUE (or standard input, for "-") the value of KEY only if the key's
revision is still REV, as get --rev printed it; REV 0 asks that the key have
no value. Prints the new revision; a different revision is a runtime error
(exit status 1) and writes nothing.`,
		Example: `  rev=$(shmbus board get config leader --rev | cut -d' ' -f1)
  shmbus board cas config leader "$rev" host-4`,
		Args: boardArgs(4, 4, "NAME KEY REV VALUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkKey("cas", args[1]); err != nil {
				return err
			}
			rev, err := strconv.ParseUint(args[2], 10, 64)
			if err != nil {
				return usagef("cas: %q is not a revision", args[2])
			}
			v, err := a.readValue(args[3])
			if err != nil {
				return fmt.Errorf("cas: read standard input: %w", err)
			}
			b, err := a.openBoard(args[0])
			if err != nil {
				return err
			}
			defer b.Close()
			nrev, err := b.CompareAndPut(args[1], rev, v)
			if err != nil {
				return err
			}
			return a.printRev(bf, args[1], nrev)
		},
	}
}

func (a *app) boardRmCmd(bf *boardFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME [KEY]",
		Short: "Delete a key, or remove a board",
		Long: `With KEY, delete the key's value (a tombstone revision, which watchers
see; the key keeps its place on the board) and print the tombstone's
revision. Without KEY, remove the board itself: its file and, in sem mode,
its semaphore set.`,
		Args: boardArgs(1, 2, "NAME [KEY]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if err := shmbus.RemoveBoard(a.dir, args[0]); err != nil {
					return err
				}
				if bf.json {
					return a.printJSON(map[string]any{"board": args[0], "removed": true})
				}
				return nil
			}
			if err := checkKey("rm", args[1]); err != nil {
				return err
			}
			b, err := a.openBoard(args[0])
			if err != nil {
				return err
			}
			defer b.Close()
			rev, err := b.Delete(args[1])
			if err != nil {
				return err
			}
			return a.printRev(bf, args[1], rev)
		},
	}
}

func (a *app) boardLsCmd(bf *boardFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "ls [NAME]",
		Short: "List a board's keys, or the boards",
		Long: `With NAME, list the keys of board NAME that have a value, sorted, with
their revision, size and value (text values shortened to 40 characters).
Without NAME, list the boards in the directory. With --json, one object a
line: {"name":...} for a board, or a key's entry as get --json prints it.`,
		Args: boardArgs(0, 1, "at most one board name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				names, err := shmbus.ListBoards(a.dir)
				if err != nil {
					return err
				}
				if bf.json {
					// One object a line, as ls --json lists buses.
					for _, n := range names {
						if err := a.printJSON(map[string]string{"name": n}); err != nil {
							return err
						}
					}
					return nil
				}
				for _, n := range names {
					fmt.Fprintln(a.stdout, n)
				}
				return nil
			}
			b, err := a.openBoard(args[0])
			if err != nil {
				return err
			}
			defer b.Close()
			es, err := b.List()
			if err != nil {
				return err
			}
			sort.Slice(es, func(i, j int) bool { return es[i].Key < es[j].Key })
			if bf.json {
				// One object a line, as ls --json lists buses.
				for _, e := range es {
					if err := a.printJSON(entryJSON(e)); err != nil {
						return err
					}
				}
				return nil
			}
			w := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(w, "KEY\tREV\tSIZE\tVALUE")
			for _, e := range es {
				fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", e.Key, e.Rev, len(e.Value), preview(e.Value))
			}
			return w.Flush()
		},
	}
}

// preview is a value shortened for a table.
func preview(v []byte) string {
	if !utf8.Valid(v) {
		return fmt.Sprintf("(%d bytes of binary)", len(v))
	}
	s := strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, string(v))
	if utf8.RuneCountInString(s) > 40 {
		s = string([]rune(s)[:37]) + "..."
	}
	return s
}

func (a *app) boardWatchCmd(bf *boardFlags) *cobra.Command {
	var (
		count   int
		after   uint64
		now     bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch NAME KEY",
		Short: "Print a key's value each time it changes",
		Long: `Print the value of KEY on board NAME as a line each time it changes, as
soon as it does (a deletion prints an empty line; with --json, an object with
"deleted": true). Writes faster than the watch are coalesced: it prints the
latest value, never an older one. --now prints the current value first;
--after REV starts after revision REV instead of the current one.

It stops after -n COUNT values (0 = never), when --timeout passes (exit
status 3), or when interrupted (130).`,
		Example: `  shmbus board watch config leader
  shmbus board watch config leader -n 1 --timeout 10s --json`,
		Args: boardArgs(2, 2, "NAME KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkKey("watch", args[1]); err != nil {
				return err
			}
			if count < 0 || timeout < 0 {
				return usagef("watch: -n and --timeout must not be negative")
			}
			b, err := a.openBoard(args[0])
			if err != nil {
				return err
			}
			defer b.Close()
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			start := after
			if !cmd.Flags().Changed("after") {
				_, rev, err := b.Get(args[1], nil)
				if err != nil && !errors.Is(err, shmbus.ErrNotFound) {
					return err
				}
				start = rev
				if now && rev > 0 {
					start = rev - 1
				}
			}
			for n := 0; count == 0 || n < count; n++ {
				e, err := b.Watch(ctx, args[1], start)
				if err != nil {
					return ctxError(err, timeout)
				}
				start = e.Rev
				if bf.json {
					err = a.printJSON(entryJSON(e))
				} else {
					err = a.printValue(e.Value)
				}
				if err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&count, "count", "n", 0, "stop after `N` values (0 = never)")
	f.Uint64Var(&after, "after", 0, "print every value after revision `REV` (default: the current revision)")
	f.BoolVar(&now, "now", false, "print the current value first")
	f.Var(durValue{&timeout}, "timeout", "give up after this long (0 = never)")
	return cmd
}

func (a *app) boardCheckCmd(bf *boardFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "check NAME",
		Short: "Check a board's consistency",
		Long: `Check board NAME: its header against the file, then every cell (states,
keys and where they sit, revisions, the copies they name). Prints "ok" (or,
with --json, {"board":NAME,"ok":true}); a fault is a runtime error naming it.`,
		Args: boardArgs(1, 1, "a board name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := shmbus.CheckBoard(a.dir, args[0]); err != nil {
				return err
			}
			if bf.json {
				return a.printJSON(map[string]any{"board": args[0], "ok": true})
			}
			_, err := fmt.Fprintln(a.stdout, "ok")
			return err
		},
	}
}
