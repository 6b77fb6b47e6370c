package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
)

// Exit statuses.
const (
	exitOK        = 0
	exitFailure   = 1   // runtime error: missing bus, corrupt segment, permission, too large, busy, ...
	exitUsage     = 2   // unknown command or flag, bad flag value, wrong arguments, invalid bus name
	exitTimeout   = 3   // --timeout passed before the command could finish
	exitInterrupt = 130 // SIGINT or SIGTERM
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
	case errors.Is(err, context.Canceled):
		return exitInterrupt
	case errors.Is(err, context.DeadlineExceeded):
		return exitTimeout
	}
	return exitFailure
}

// onBus is the start of an error message about the bus name: "verb" if
// err (from the library, whose errors name their bus) names it already,
// else "verb prep bus NAME".
func onBus(verb, prep, name string, err error) string {
	if strings.Contains(err.Error(), strconv.Quote(name)) {
		return verb
	}
	return fmt.Sprintf("%s %s bus %q", verb, prep, name)
}

// errorLine is the one line printed for err on stderr.
func errorLine(err error) string {
	return "shmbus: " + strings.Join(strings.Fields(err.Error()), " ")
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
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
without "..".

SIZE arguments are a whole number of bytes, optionally followed (without a
space) by B, KiB, MiB, GiB or TiB: 4096, 64KiB, 1MiB. Anything else is a
usage error. A value that parses but the library refuses as configuration
(a lane capacity that is not a power of two, too many priorities, ...) is a
runtime error.

DURATION arguments are Go durations: 500ms, 2s, 1m30s. A --timeout of 0
waits forever.

Errors are one line on stderr, "shmbus: ...". Exit status:
  0    success
  1    runtime error: no such bus, corrupt segment, permission denied,
       message too large, consumer or producer role busy, lane full on a
       fail-fast bus, configuration refused by the library, ...
  2    usage error: unknown command or flag, unparsable flag value, wrong
       number of arguments, invalid bus name
  3    timeout: --timeout passed before the messages arrived or were sent
  130  interrupted by SIGINT or SIGTERM (nothing is lost: a message is only
       taken off the bus once it has been written out)`

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "shmbus",
		Short:         "Shared-memory message buses from the shell",
		Long:          rootLong,
		Version:       moduleVersion(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("missing command (see 'shmbus --help')")
		},
	}
	root.SetVersionTemplate("shmbus {{.Version}}\n")
	root.PersistentFlags().StringVar(&a.dir, "dir", "", "look for buses in `DIR` (default $SHMBUS_DIR or /dev/shm)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w (see '%s --help')", cmd.Name(), err, cmd.CommandPath())
	})
	root.AddCommand(
		a.createCmd(),
		a.sendCmd(),
		a.recvCmd(),
		a.statCmd(),
		a.lsCmd(),
		a.rmCmd(),
		a.checkCmd(),
		a.soakCmd(),
		a.benchCmd(),
		a.daemonCmd(),
		a.bridgeCmd(),
		a.versionCmd(),
	)
	return root
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
