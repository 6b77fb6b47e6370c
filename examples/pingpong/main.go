// Command pingpong demonstrates shmbus between two processes: it starts a
// copy of itself, measures round trips (ping on one bus, pong on another)
// and one-way throughput, and prints what it measured. The buses are
// created in $SHMBUS_DIR (default /dev/shm) and removed at the end.
//
//	go run ./examples/pingpong [-n 200000] [-size 64] [-wake futex|sem]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"time"

	"github.com/shmbus/shmbus"
)

const childEnv = "SHMBUS_PINGPONG_CHILD"

func main() {
	n := flag.Int("n", 200000, "round trips to measure")
	size := flag.Int("size", 64, "message size in bytes")
	wake := flag.String("wake", "futex", "wake mode: futex or sem")
	flag.Parse()
	var err error
	if role := os.Getenv(childEnv); role != "" {
		err = child(role, *n, *size)
	} else {
		err = parent(*n, *size, *wake)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pingpong:", err)
		os.Exit(1)
	}
}

func parent(n, size int, wakeName string) error {
	wake := shmbus.WakeFutex
	if wakeName == "sem" {
		wake = shmbus.WakeSem
	}
	base := fmt.Sprintf("pingpong-%d", os.Getpid())
	opts := &shmbus.Options{Producers: shmbus.SingleProducer, Wake: wake}
	ping, err := shmbus.Create(base+"-ping", opts)
	if err != nil {
		return err
	}
	defer ping.Remove()
	pong, err := shmbus.Create(base+"-pong", opts)
	if err != nil {
		return err
	}
	defer pong.Remove()
	// Remove the buses on Ctrl-C too.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), childEnv+"="+base)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	p, err := ping.NewProducer()
	if err != nil {
		return err
	}
	c, err := pong.NewConsumer()
	if err != nil {
		return err
	}
	msg := make([]byte, size)
	buf := make([]byte, max(size, 8))
	rtts := make([]time.Duration, 0, n)
	warm := n / 10
	for i := 0; i < n+warm; i++ {
		t0 := time.Now()
		if err := p.Send(ctx, msg, 0); err != nil {
			return err
		}
		if _, _, err := c.Receive(ctx, buf); err != nil {
			return err
		}
		if i >= warm {
			rtts = append(rtts, time.Since(t0))
		}
	}
	slices.Sort(rtts)
	q := func(f float64) time.Duration { return rtts[int(f*float64(len(rtts)-1))] }
	fmt.Printf("shmbus %s wake, %d-byte messages between two processes\n", wake, size)
	fmt.Printf("round trip:  p50 %v  p99 %v  p99.9 %v  max %v  (%d round trips)\n",
		q(0.5), q(0.99), q(0.999), rtts[len(rtts)-1], len(rtts))

	// One way: the child sends as fast as it can, in batches.
	total := 20 * n
	t0 := time.Now()
	got := 0
	for got < total {
		k, err := c.Poll(0, func([]byte, int) {})
		if err != nil {
			return err
		}
		got += k
		if k == 0 {
			if err := c.Wait(ctx); err != nil {
				return err
			}
		}
	}
	d := time.Since(t0)
	fmt.Printf("one way:     %.1f M msgs/s, %.0f MB/s  (%d messages)\n",
		float64(total)/d.Seconds()/1e6, float64(total*size)/d.Seconds()/1e6, total)
	return cmd.Wait()
}

func child(base string, n, size int) error {
	ping, err := shmbus.Open(base+"-ping", nil)
	if err != nil {
		return err
	}
	defer ping.Close()
	pong, err := shmbus.Open(base+"-pong", nil)
	if err != nil {
		return err
	}
	defer pong.Close()
	c, err := ping.NewConsumer()
	if err != nil {
		return err
	}
	p, err := pong.NewProducer()
	if err != nil {
		return err
	}
	ctx := context.Background()
	buf := make([]byte, max(size, 8))
	for i := 0; i < n+n/10; i++ {
		k, _, err := c.Receive(ctx, buf)
		if err != nil {
			return err
		}
		if err := p.Send(ctx, buf[:k], 0); err != nil {
			return err
		}
	}
	msgs := make([][]byte, 64)
	for i := range msgs {
		msgs[i] = make([]byte, size)
	}
	for sent := 0; sent < 20*n; {
		k, err := p.SendBatch(ctx, msgs[:min(64, 20*n-sent)], 0)
		if err != nil && !errors.Is(err, shmbus.ErrFull) {
			return err
		}
		sent += k
	}
	return p.Close()
}
