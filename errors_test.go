package shmbus

import (
	"errors"
	"io/fs"
	"testing"
)

// TestErrorText checks that each layer adds its context once: a missing
// bus or board reads "shmbus: open bus "x": no such bus" and still wraps
// ErrNotExist and the operating system's error, and a call on an attached
// bus names the bus once.
func TestErrorText(t *testing.T) {
	for _, tc := range []struct {
		what string
		err  error
		want string
	}{
		{"Open", func() error { _, err := Open("nope", nil); return err }(), `shmbus: open bus "nope": no such bus`},
		{"OpenBoard", func() error { _, err := OpenBoard("nope", nil); return err }(), `shmbus: open board "nope": no such board`},
		{"Check", Check("", "nope"), `shmbus: check bus "nope": no such bus`},
		{"Remove", Remove("", "nope"), `shmbus: remove bus "nope": no such bus`},
		{"RemoveBoard", RemoveBoard("", "nope"), `shmbus: remove board "nope": no such board`},
	} {
		if tc.err == nil || tc.err.Error() != tc.want {
			t.Errorf("%s: %v, want %q", tc.what, tc.err, tc.want)
			continue
		}
		var pe *fs.PathError
		var e *Error
		if !errors.Is(tc.err, ErrNotExist) || !errors.As(tc.err, &pe) || !errors.As(tc.err, &e) || e.Name != "nope" {
			t.Errorf("%s: %v does not wrap ErrNotExist, an *fs.PathError and an *Error naming the bus", tc.what, tc.err)
		}
	}

	b := newBus(t, nil)
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _, err = c.TryReceive(nil)
	var e *Error
	if want := `shmbus: bus "` + b.Name() + `": receive: lane empty`; err == nil || err.Error() != want || !errors.As(err, &e) || e.Name != b.Name() {
		t.Errorf("TryReceive on an empty bus: %v, want %q from an *Error", err, want)
	}
}
