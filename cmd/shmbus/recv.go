package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/shmbus/shmbus"
	"github.com/spf13/cobra"
)

func (a *app) recvCmd() *cobra.Command {
	var (
		count   = 1
		timeout time.Duration
		format  = "text"
		stream  bool
	)
	cmd := &cobra.Command{
		Use:   "recv NAME",
		Short: "Receive messages, or a byte stream to stdout",
		Long: `Receive N messages (-n N, default 1) from the bus NAME and write them
to stdout, the oldest message of the highest priority first. recv takes the
bus's consumer role: one recv (or other consumer) per bus at a time.

Formats:
  text  each message followed by a newline
  json  one object per line: {"priority":P,"size":N,"data":"<base64>"}
        (standard base64 of the message)
  raw   the messages back to back, nothing added

--timeout is the time allowed for all N messages: if fewer arrive, the
ones that did are written and the exit status is 3. With -n 0, recv
receives until the timeout passes, then exits with status 0 (or, without a
timeout, until it is interrupted: exit status 130). A message is taken off
the bus only when it is handed to recv, and recv writes every message it
took before it exits, interrupted or not.

A large message the consumer has no room to reassemble (its file system is
full) is dropped: recv says so on stderr, "shmbus: warning: ...", naming
its priority, size and producer, and goes on with the other messages; it
exits with status 1 once done, as for any error.

With --stream, recv writes the byte stream sent by 'shmbus send --stream'
to stdout, exactly, and exits 0 at its end.`,
		Example: `  shmbus recv orders                  # one message
  shmbus recv orders -n 0 --timeout 5s # everything for five seconds
  shmbus recv orders -n 10 --format json
  shmbus recv --stream pipe | tar x`,
		Args:              busArgs(1),
		ValidArgsFunction: a.completeBuses,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case stream && (cmd.Flags().Changed("count") || cmd.Flags().Changed("format")):
				return usagef("recv: --stream takes neither -n nor --format")
			}
			r := &receiver{a: a, name: args[0], count: count, timeout: timeout, format: format}
			return r.run(cmd.Context(), stream)
		},
	}
	f := cmd.Flags()
	f.VarP(intValue{&count, "count", 0, math.MaxInt}, "count", "n", "receive N messages (0 = until the timeout or an interrupt)")
	f.Var(durValue{&timeout}, "timeout", "give up after DUR for all the messages (0 = forever)")
	f.Var(enumValue{&format, []string{"text", "json", "raw"}}, "format", "output format")
	f.BoolVar(&stream, "stream", false, "write the byte stream sent by 'send --stream' to stdout")
	completeEnums(cmd)
	return cmd
}

// maxRecvBuffer caps the receive buffer allocated up front.
const maxRecvBuffer = 256 << 20

type receiver struct {
	a       *app
	name    string
	count   int
	timeout time.Duration
	format  string
}

// jsonMessage is one message in --format json.
type jsonMessage struct {
	Priority int    `json:"priority"`
	Size     int    `json:"size"`
	Data     []byte `json:"data"`
}

func (r *receiver) run(ctx context.Context, stream bool) error {
	bus, err := shmbus.Open(r.name, r.a.openOptions())
	if err != nil {
		return err
	}
	defer bus.Close()
	c, err := bus.NewConsumer()
	if err != nil {
		return err // ErrBusy: "the consumer role is held by pid N"
	}
	defer c.Close()
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	if stream {
		return r.stream(ctx, c)
	}

	w := bufio.NewWriterSize(r.a.stdout, 64<<10)
	enc := json.NewEncoder(w)
	// One buffer for every message: the bus's largest, unless the bus
	// allows absurd sizes; then a larger message grows it (once) to its size.
	buf := make([]byte, min(bus.MaxMessage(), maxRecvBuffer))
	got, dropped := 0, 0
	err = func() error {
		for r.count == 0 || got < r.count {
			if err := ctx.Err(); err != nil {
				return err
			}
			n, prio, err := c.TryReceive(buf)
			if errors.Is(err, shmbus.ErrEmpty) {
				// Nothing waiting: show what we have before sleeping.
				if err := w.Flush(); err != nil {
					return err
				}
				n, prio, err = c.Receive(ctx, buf)
			}
			if errors.Is(err, shmbus.ErrDropped) {
				// Skipped already; the others are still to come.
				dropped++
				fmt.Fprintln(r.a.stderr, "shmbus: warning: "+strings.Join(strings.Fields(err.Error()), " "))
				continue
			}
			var sb *shmbus.ShortBufferError
			if errors.As(err, &sb) {
				buf = make([]byte, sb.Need) // the message stays; take it next time
				continue
			}
			if err != nil {
				return err
			}
			got++
			msg := buf[:n]
			switch r.format {
			case "json":
				err = enc.Encode(jsonMessage{Priority: prio, Size: n, Data: msg})
			case "raw":
				_, err = w.Write(msg)
			default:
				if _, err = w.Write(msg); err == nil {
					err = w.WriteByte('\n')
				}
			}
			if err != nil {
				return fmt.Errorf("write stdout: %w", err)
			}
		}
		return nil
	}()
	if ferr := w.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write stdout: %w", ferr)
	}
	switch {
	case dropped > 0 && (err == nil || r.count == 0 && errors.Is(err, context.DeadlineExceeded)):
		return fmt.Errorf("recv from bus %q: %w: %d message(s) could not be held (received %d)", r.name, shmbus.ErrDropped, dropped, got)
	case err == nil:
		return nil
	case r.count == 0 && errors.Is(err, context.DeadlineExceeded):
		return nil // -n 0 ends at the timeout
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		want := ""
		if r.count > 0 {
			want = fmt.Sprintf(" of %d", r.count)
		}
		return fmt.Errorf("recv from bus %q: %w: received %d%s message(s)", r.name, ctxError(err, r.timeout), got, want)
	}
	return fmt.Errorf("%s: %w (after %d message(s))", onBus("recv", "from", r.name, err), err, got)
}

// stream writes the byte stream on the bus to stdout.
func (r *receiver) stream(ctx context.Context, c *shmbus.Consumer) error {
	n, err := io.Copy(r.a.stdout, shmbus.NewStreamReader(ctx, c))
	if err != nil {
		err = streamError(ctx, err, r.timeout)
		return fmt.Errorf("%s: %w (after %d bytes)", onBus("recv stream", "from", r.name, err), err, n)
	}
	return nil
}
