package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/layout"
	"github.com/spf13/cobra"
)

func (a *app) sendCmd() *cobra.Command {
	var (
		prio    int
		timeout time.Duration
		raw     bool
		stream  bool
	)
	cmd := &cobra.Command{
		Use:   "send NAME [MESSAGE ...]",
		Short: "Send messages, or stdin as a byte stream",
		Long: `Send messages on the bus NAME at --priority.

Each MESSAGE argument is one message. Without MESSAGE arguments, stdin is
read: one message per line (the newline is not sent; a last line without a
newline counts too), or, with --raw, all of stdin as one message.

With --stream, stdin is carried as a byte stream (any size, any content) for
'shmbus recv --stream' to write out byte for byte; the end of stdin is sent
as an end marker. A stream ends like a pipe: once a reader (the bus's
consumer) has been seen, a reader that goes away before the end (exits,
dies, or gives the consumer role back) fails the send with a broken-pipe
error, exit status 141, within a fraction of a second. Before any reader
comes, send waits for one once the bus is full.

A send waits for room while the lane is full (a fail-fast bus refuses it
instead, exit status 1). --timeout limits that wait: for each message, or
for the whole stream with --stream; when it passes the command stops with
exit status 3 and the messages sent so far stay sent. A message larger than
the bus's maximum is refused with exit status 1.`,
		Example: `  shmbus send orders hello world          # two messages
  shmbus send orders -p 3 urgent
  journalctl -f | shmbus send logs           # one message per line
  shmbus send blobs --raw < image.png
  tar c dir | shmbus send --stream pipe`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return fmt.Errorf("%s: missing bus name (see '%s --help')", cmd.Name(), cmd.CommandPath())
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return a.completeBuses(cmd, args, toComplete)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name, msgs := args[0], args[1:]
			switch {
			case raw && stream:
				return usagef("send: --raw and --stream exclude each other")
			case (raw || stream) && len(msgs) > 0:
				return usagef("send: --raw and --stream send stdin, not MESSAGE arguments")
			}
			s := &sender{a: a, name: name, prio: prio, timeout: timeout}
			return s.run(cmd.Context(), msgs, raw, stream)
		},
	}
	f := cmd.Flags()
	f.VarP(intValue{&prio, "priority", 0, layout.MaxLanes - 1}, "priority", "p", "send at priority N, 0 (least urgent) to the bus's priorities-1")
	f.Var(durValue{&timeout}, "timeout", "wait at most DUR for room for each message, or for the whole --stream (0 = forever)")
	f.BoolVar(&raw, "raw", false, "send all of stdin as one message")
	f.BoolVar(&stream, "stream", false, "send stdin as a byte stream")
	return cmd
}

type sender struct {
	a       *app
	name    string
	prio    int
	timeout time.Duration

	bus  *shmbus.Bus
	p    *shmbus.Producer
	sent int
}

func (s *sender) run(ctx context.Context, msgs []string, raw, stream bool) error {
	bus, err := shmbus.Open(s.name, s.a.openOptions())
	if err != nil {
		return err
	}
	defer bus.Close()
	s.bus = bus
	p, err := bus.NewProducer()
	if err != nil {
		return err // ErrBusy: "the producer role is held by pid N"
	}
	defer p.Close()
	s.p = p

	if stream && s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	// A read of stdin that blocks (a terminal, a quiet pipe) must not keep
	// an interrupt or a stream's timeout waiting.
	in, stop := interruptibleReader(ctx, s.a.stdin)
	defer stop()

	switch {
	case stream:
		return s.stream(ctx, in)
	case raw:
		return s.raw(ctx, in)
	case len(msgs) > 0:
		for _, m := range msgs {
			if err := s.send(ctx, []byte(m)); err != nil {
				return err
			}
		}
		return nil
	}
	return s.lines(ctx, in)
}

// interruptibleReader returns a reader of r whose Read returns ctx's error
// once ctx is done, even while a Read of r blocks (r is read by another
// goroutine, which is left behind).
func interruptibleReader(ctx context.Context, r io.Reader) (io.Reader, func()) {
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, r)
		pw.CloseWithError(err)
	}()
	stop := context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })
	return pr, func() {
		stop()
		pr.Close()
	}
}

// send sends one message, waiting at most s.timeout for room.
func (s *sender) send(ctx context.Context, msg []byte) error {
	if s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	if err := s.p.Send(ctx, msg, s.prio); err != nil {
		switch {
		case errors.Is(err, shmbus.ErrTooLarge):
			return s.tooLarge(strconv.Itoa(len(msg)))
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("send to bus %q: %w waiting for room (%d message(s) sent before)",
				s.name, ctxError(err, s.timeout), s.sent)
		}
		return err
	}
	s.sent++
	return nil
}

// tooLarge is the error for message s.sent+1, of size bytes, larger than
// the bus accepts; it wraps shmbus.ErrTooLarge.
func (s *sender) tooLarge(size string) error {
	return &quietError{fmt.Sprintf("send to bus %q: message %d of %s bytes exceeds the bus's max message of %d bytes",
		s.name, s.sent+1, size, s.bus.MaxMessage()), shmbus.ErrTooLarge}
}

// lines sends stdin one line at a time.
func (s *sender) lines(ctx context.Context, in io.Reader) error {
	max := s.bus.MaxMessage()
	br := bufio.NewReaderSize(in, 64<<10)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > max+1 {
				return s.tooLarge(fmt.Sprintf("more than %d", max))
			}
			continue
		}
		if err != nil && err != io.EOF {
			return s.readError(ctx, err)
		}
		if n := len(line); n > 0 {
			if line[n-1] == '\n' {
				line = line[:n-1]
			}
			if err := s.send(ctx, line); err != nil {
				return err
			}
		}
		line = line[:0]
		if err == io.EOF {
			return nil
		}
	}
}

// raw sends all of stdin as one message.
func (s *sender) raw(ctx context.Context, in io.Reader) error {
	max := s.bus.MaxMessage()
	msg, err := io.ReadAll(io.LimitReader(in, int64(max)+1))
	if err != nil {
		return s.readError(ctx, err)
	}
	if len(msg) > max {
		rest, _ := io.Copy(io.Discard, in)
		return s.tooLarge(strconv.FormatInt(int64(len(msg))+rest, 10))
	}
	return s.send(ctx, msg)
}

// readError is the error for a failed read of stdin.
func (s *sender) readError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("send to bus %q: %w reading stdin (%d message(s) sent before)",
			s.name, ctxError(ctx.Err(), s.timeout), s.sent)
	}
	return fmt.Errorf("send to bus %q: read stdin: %w", s.name, err)
}

// stream sends stdin as a byte stream.
func (s *sender) stream(ctx context.Context, in io.Reader) error {
	w := shmbus.NewStreamWriter(ctx, s.p, s.prio)
	n, err := io.Copy(w, in)
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		// Tell the receiver the stream will not be finished, so that it
		// does not wait for ever (best effort: the bus may be full); one
		// that went away needs no telling.
		if !errors.Is(err, shmbus.ErrReaderGone) {
			w.Abort(time.Second)
		}
		err = streamError(ctx, err, s.timeout)
		return onBus("send stream", "to", s.name, err, fmt.Sprintf(" (after %d bytes of stdin)", n))
	}
	return nil
}
