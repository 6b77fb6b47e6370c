package shmbus_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/shmbus/shmbus"
)

// Processes share their current leader on a board: whoever finds no leader
// takes the role with CompareAndPut at revision 0; the others watch.
func ExampleBoard() {
	b, err := shmbus.CreateBoard("example-cluster", &shmbus.BoardOptions{Keys: 16, MaxValue: 64})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Remove()

	rev, err := b.CompareAndPut("leader", 0, []byte("host-a"))
	fmt.Println("host-a leads:", err == nil)
	_, err = b.CompareAndPut("leader", 0, []byte("host-b"))
	fmt.Println("host-b refused:", errors.Is(err, shmbus.ErrRevision))

	// A watcher (in real use, in another process) sees the hand-over.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan shmbus.BoardEntry)
	go func() {
		e, err := b.Watch(ctx, "leader", rev)
		if err != nil {
			log.Fatal(err)
		}
		done <- e
	}()
	if _, err := b.CompareAndPut("leader", rev, []byte("host-b")); err != nil {
		log.Fatal(err)
	}
	e := <-done
	fmt.Printf("new leader: %s\n", e.Value)

	buf := make([]byte, 64)
	v, _, err := b.Get("leader", buf)
	fmt.Printf("get: %s %v\n", v, err)
	// Output:
	// host-a leads: true
	// host-b refused: true
	// new leader: host-b
	// get: host-b <nil>
}
