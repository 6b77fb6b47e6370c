package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit statuses.
const (
	exitOK        = 0
	exitFailure   = 1   // runtime error: missing bus, corrupt segment, permission, too large, busy, ...
	exitUsage     = 2   // unknown command or flag, bad flag value, wrong arguments, invalid bus name
	exitTimeout   = 3   // --timeout passed before the command could finish
	exitInterrupt = 130 // SIGINT or SIGTERM
	exitPipe      = 141 // broken pipe: stdout's reader, or a stream's reader, went away (128+SIGPIPE)
)

// errUsage marks the errors of a command line that makes no sense; wrap it
// with usagef.
var errUsage = errors.New("usage error")

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return errUsage }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// quietError is msg, wrapping err without repeating err's text.
type quietError struct {
	msg string
	err error
}

func (e *quietError) Error() string { return e.msg }
func (e *quietError) Unwrap() error { return e.err }

// timeoutError is a --timeout that passed; it wraps context.DeadlineExceeded.
type timeoutError struct{ after time.Duration }

func (e *timeoutError) Error() string { return "timed out after " + e.after.String() }
func (e *timeoutError) Unwrap() error { return context.DeadlineExceeded }

// interruptedError is a SIGINT or SIGTERM; it wraps context.Canceled.
type interruptedError struct{}

func (interruptedError) Error() string { return "interrupted" }
func (interruptedError) Unwrap() error { return context.Canceled }

// streamError is ctxError for the error of a stream copy, which may come
// from elsewhere (stdin, stdout) after the context ended.
func streamError(ctx context.Context, err error, timeout time.Duration) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		err = cerr
	}
	return ctxError(err, timeout)
}

// ctxError turns a context's error into a timeoutError or an
// interruptedError for the message; any other error is returned as it is.
func ctxError(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, context.Canceled):
		return interruptedError{}
	case errors.Is(err, context.DeadlineExceeded):
		return &timeoutError{timeout}
	}
	return err
}

// exitStatus is the one place errors become exit statuses. started says
// whether a command's body ran: every error before that (flags, arguments,
// unknown commands) comes from cobra and is a usage error.
func exitStatus(err error, started bool) int {
	switch {
	case err == nil:
		return exitOK
	case !started, errors.Is(err, errUsage), errors.Is(err, shmbus.ErrBadName):
		return exitUsage
	case isBrokenPipe(err), errors.Is(err, shmbus.ErrReaderGone):
		return exitPipe
	case errors.Is(err, context.Canceled):
		return exitInterrupt
	case errors.Is(err, context.DeadlineExceeded):
		return exitTimeout
	}
	return exitFailure
}

// onBus is err of verb ("recv", "send stream") on the bus called name, with
// note after it. An error of the library that names the bus already (an
// *shmbus.Error) is kept as it is, with note added; any other is put after
// "verb prep bus NAME".
func onBus(verb, prep, name string, err error, note string) error {
	if e, ok := errors.AsType[*shmbus.Error](err); ok && e.Kind == "bus" && e.Name == name {
		return &notedError{err: err, note: note}
	}
	return fmt.Errorf("%s %s bus %q: %w%s", verb, prep, name, err, note)
}

// notedError is err with a note after its text.
type notedError struct {
	err  error
	note string
}

func (e *notedError) Error() string { return e.err.Error() + e.note }
func (e *notedError) Unwrap() error { return e.err }

// writeJSON writes v as one line of compact JSON: the form of every --json
// output (one object per line, so that a stream of them reads as JSON
// Lines).
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// errorLine is the one line printed for err on stderr: "shmbus: ...". An
// error of the library (an *shmbus.Error or *shmbus.CheckError, perhaps
// with a note after it) has that prefix already.
func errorLine(err error) string {
	line := strings.Join(strings.Fields(err.Error()), " ")
	head := err
	for {
		n, ok := head.(*notedError)
		if !ok {
			break
		}
		head = n.err
	}
	switch head.(type) {
	case *shmbus.Error, *shmbus.CheckError:
		return line
	}
	return "shmbus: " + line
}

// app is one invocation of the command: its streams and global flags.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	dir    string // --dir; "" is $SHMBUS_DIR or /dev/shm
}

// run runs the command line args (without the program name) and returns
// the exit status. main and the tests call it.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
	defer stop()

	started := false
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintln(stderr, errorLine(fmt.Errorf("internal error: %v", r)))
			code = exitFailure
		}
	}()

	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.PersistentPreRun = func(*cobra.Command, []string) { started = true }
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	code = exitStatus(err, started)
	if err != nil {
		fmt.Fprintln(stderr, errorLine(err))
	}
	return code
}

const rootLong = `shmbus creates and inspects shared-memory message buses and carries
messages and byte streams over them.

A bus NAME is the file shmbus.NAME in /dev/shm, or in $SHMBUS_DIR, or in the
directory given with --dir. Names are 1-200 characters of [A-Za-z0-9._-]
that start with a letter, a digit or "_" (not "-", which reads as an
option, nor ".", which hides the file), without "..".

Values of flags, by the name the help gives them:
  SIZE   a whole number of bytes, optionally followed (without a space) by
         a unit: k, M, G or T, also written KiB, MiB, GiB, TiB (powers of
         1024; any case), or B: 4096, 64k, 64KiB, 1M, 1MiB. KB, MB, ...
         are refused: they may mean powers of 1000.
  DUR    a duration: a number with a unit (500ms, 2s, 1m30s) or a plain
         number of seconds (2, 0.5). A --timeout of 0 waits forever.
  N      a whole number, within the range the flag's help gives
  OCTAL  permission bits in octal: 0600, 0660
  LIST   comma-separated values: 8,64,1k or pipe,shmbus-futex
  PATH   a file or directory
A value that does not parse, or lies outside the range the help gives, is a
usage error. One the library refuses in combination (a --record-limit
larger than half the --capacity, ...) is a runtime error.

Errors are one line on stderr, "shmbus: ...". Exit status:
  0    success
  1    runtime error: no such bus, corrupt segment, permission denied,
       message too large, consumer or producer role busy, lane full on a
       fail-fast bus, configuration refused by the library, ...
  2    usage error: unknown command or flag, unparsable flag value, wrong
       number of arguments, invalid bus name
  3    timeout: --timeout passed before the messages arrived or were sent
  130  interrupted by SIGINT or SIGTERM (nothing is lost: a message is only
       taken off the bus once it has been written out)
  141  broken pipe: recv's stdout was closed by its reader, or the reader
       of a 'send --stream' went away (as a shell reports a process killed
       by SIGPIPE)`

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "shmbus",
		Short:         "Shared-memory message buses from the shell",
		Long:          rootLong,
		Version:       moduleVersion(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			hint := ""
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				hint = fmt.Sprintf(": did you mean %s?", strings.Join(s, " or "))
			}
			return fmt.Errorf("unknown command %q%s (see 'shmbus --help')", args[0], hint)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("missing command (see 'shmbus --help')")
		},
	}
	root.SuggestionsMinimumDistance = 2 // "crate": did you mean create?
	root.SetVersionTemplate("shmbus {{.Version}}\n")
	root.PersistentFlags().StringVar(&a.dir, "dir", "", "look for buses in the directory `PATH` (default $SHMBUS_DIR or /dev/shm)")
	root.MarkPersistentFlagDirname("dir")
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(
		a.createCmd(),
		a.sendCmd(),
		a.recvCmd(),
		a.subCmd(),
		a.unsubCmd(),
		a.notifyCmd(),
		a.listenCmd(),
		a.statCmd(),
		a.lsCmd(),
		a.rmCmd(),
		a.checkCmd(),
		a.soakCmd(),
		a.benchCmd(),
		a.daemonCmd(),
		a.boardCmd(),
		a.bridgeCmd(),
		a.versionCmd(),
	)
	return root
}

// flagError is the error of a flag that does not parse: one line that
// names the command and the flag and echoes the value as typed.
func flagError(cmd *cobra.Command, err error) error {
	var iv *pflag.InvalidValueError
	if errors.As(err, &iv) {
		name := "--" + iv.GetFlag().Name
		var ve *valueError
		switch {
		case errors.As(iv, &ve):
			err = fmt.Errorf("invalid %s %q for %s: %s", ve.what, ve.text, name, ve.reason)
		case iv.GetFlag().Value.Type() == "bool":
			err = fmt.Errorf("invalid value %q for %s: want true or false", iv.GetValue(), name)
		default:
			err = fmt.Errorf("invalid value %q for %s: %w", iv.GetValue(), name, errors.Unwrap(iv))
		}
	}
	return fmt.Errorf("%s: %w (see '%s --help')", cmd.Name(), err, cmd.CommandPath())
}

// openOptions are the options of every Open.
func (a *app) openOptions() *shmbus.OpenOptions {
	return &shmbus.OpenOptions{Dir: a.dir}
}

// completeBuses completes bus names for shell completion.
func (a *app) completeBuses(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	names, err := shmbus.List(a.dir)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []cobra.Completion
	for _, n := range names {
		if strings.HasPrefix(n, toComplete) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// busArgs validates the number of NAME arguments.
func busArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s: want %d bus name(s), got %d arguments (see '%s --help')",
				cmd.Name(), n, len(args), cmd.CommandPath())
		}
		return nil
	}
}
