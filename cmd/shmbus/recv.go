package main

import (
	"bytes"
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
timeout, until it is interrupted: exit status 130). A message leaves the bus
only after its bytes have been written to stdout (the write system call
returned), so a recv that is killed (SIGKILL, the OOM killer, a crash) loses
nothing: what it had not written stays on the bus for the next consumer.
The price is at-least-once delivery: a recv killed between writing messages
and releasing them leaves that last batch (at most 256 messages or 64 KiB,
written with one writev) to be received again. recv writes straight from the bus's
memory, without copying; a message cut short by a failed write stays on the
bus too. A stdout closed by its reader (a broken pipe) ends recv with exit
status 141.

A large message the consumer has no room to reassemble (its file system is
full) is dropped: recv says so on stderr, "shmbus: warning: ...", naming
its priority, size and producer, and goes on with the other messages; it
exits with status 1 once done, as for any error.

With --stream, recv writes the byte stream sent by 'shmbus send --stream'
to stdout, exactly, and exits 0 at its end. A stream ends like a pipe: if
its writer, after sending its first bytes, dies or detaches without ending
the stream, recv writes out what arrived and exits 1 saying the writer is
gone (it notices within a fraction of a second); before any bytes arrive,
recv waits for a writer. If the writer gave up (interrupted, timed out), recv
exits 1 saying the stream was aborted.`,
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

	out := &recvOutput{format: r.format, w: newVecWriter(r.a.stdout)}
	got, dropped := 0, 0
	err = func() error {
		for r.count == 0 || got < r.count {
			if err := ctx.Err(); err != nil {
				return err
			}
			// Messages leave the bus only once their bytes are written
			// out (write(2) returned): a recv killed in between leaves
			// them for the next consumer.
			n, err := c.Deliver(max(r.count-got, 0), out.write)
			got += n
			if errors.Is(err, shmbus.ErrDropped) {
				// Skipped already; the others are still to come.
				dropped++
				fmt.Fprintln(r.a.stderr, "shmbus: warning: "+strings.Join(strings.Fields(err.Error()), " "))
				continue
			}
			if err != nil {
				return err
			}
			if n == 0 {
				if err := c.Wait(ctx); err != nil {
					return err
				}
			}
		}
		return nil
	}()
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
	return onBus("recv", "from", r.name, err, fmt.Sprintf(" (after %d message(s))", got))
}

// recvOutput writes batches of messages handed over by Consumer.Deliver in
// one format.
type recvOutput struct {
	format string
	w      *vecWriter
	iov    [][]byte
	ends   []int64 // ends[i]: output bytes up to the end of message i
	json   bytes.Buffer
}

var newline = []byte{'\n'}

// write writes msgs and returns how many of them were written whole.
func (o *recvOutput) write(msgs [][]byte, prio int) (int, error) {
	o.iov, o.ends = o.iov[:0], o.ends[:0]
	var end int64
	switch o.format {
	case "json":
		o.json.Reset()
		enc := json.NewEncoder(&o.json)
		for _, m := range msgs {
			enc.Encode(jsonMessage{Priority: prio, Size: len(m), Data: m}) // cannot fail
			o.ends = append(o.ends, int64(o.json.Len()))
		}
		o.iov = append(o.iov, o.json.Bytes())
	case "raw":
		for _, m := range msgs {
			end += int64(len(m))
			o.iov, o.ends = append(o.iov, m), append(o.ends, end)
		}
	default:
		for _, m := range msgs {
			end += int64(len(m)) + 1
			o.iov, o.ends = append(o.iov, m, newline), append(o.ends, end)
		}
	}
	n, err := o.w.write(o.iov)
	clear(o.iov)
	k := 0
	for k < len(o.ends) && o.ends[k] <= n {
		k++
	}
	if err != nil {
		return k, fmt.Errorf("write stdout: %w", err)
	}
	return k, nil
}

// stream writes the byte stream on the bus to stdout.
func (r *receiver) stream(ctx context.Context, c *shmbus.Consumer) error {
	n, err := io.Copy(newVecWriter(r.a.stdout), shmbus.NewStreamReader(ctx, c))
	if err != nil {
		err = streamError(ctx, err, r.timeout)
		return onBus("recv stream", "from", r.name, err, fmt.Sprintf(" (after %d bytes)", n))
	}
	return nil
}
