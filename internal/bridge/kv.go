package bridge

// The board<->kv route mirrors a local board and a JetStream key-value
// bucket both ways. One goroutine owns the route's state; it handles, one
// at a time, the bucket's updates (one ordered watcher, kv.WatchAll) and
// the board's (one BoardWatcher over every key, fed from a goroutine).
//
// For each key the route remembers its step (kvStep): the board revision
// and the bucket revision known to hold the same value. Then:
//
//   - A bucket update at a revision at or below the step's is already on
//     the board (it is the route's own write coming back, or was applied
//     before): skipped. Any later one is applied to the board (unless the
//     board already holds that value) and becomes the step. The bucket is
//     the source of truth: a board value not yet in step is overwritten
//     (counted as a conflict).
//   - A board entry at a revision at or below the step's board revision is
//     the route's own write coming back, or was overwritten by a bucket
//     update since: skipped. Any later one is a local write and goes to
//     the bucket with kv.Update(key, value, step.Bucket) (a delete: a
//     delete marker expecting that revision). If the bucket moved on
//     meanwhile (another machine wrote the key), JetStream refuses it: a
//     conflict; the update that won is in the watcher's queue and will be
//     applied to the board.
//
// Because this goroutine records the revision kv.Update returns before it
// reads the next bucket update, its own writes never come back as remote
// ones: no echo. The steps are saved in a state file beside the board
// after each change, so a restarted route knows which side changed while
// it was away.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shmbus/shmbus"
)

// Directions and operations of the board_updates_total metric.
const (
	dirToBucket = "board->kv"
	dirToBoard  = "kv->board"
	opPut       = "put"
	opDelete    = "delete"
)

type mirror struct {
	r     Route
	cfg   *Config
	m     *Metrics
	board *shmbus.Board
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	path  string // the state file
	st    kvState
	buf   []byte
	dirty bool
}

func openMirror(r Route, cfg *Config, m *Metrics, nc *nats.Conn) (*mirror, error) {
	b, err := shmbus.OpenBoard(r.Board, &shmbus.OpenOptions{Dir: cfg.Dir})
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, err
	}
	path := filepath.Join(busDir(cfg.Dir), "shmbus-bridge.board."+r.Board+".kv."+r.Bucket+".state")
	return &mirror{r: r, cfg: cfg, m: m, board: b, js: js, path: path, buf: make([]byte, b.MaxValue())}, nil
}

func (mi *mirror) Close() error { return mi.board.Close() }

// setup finds the bucket (making it unless NoCreate) and loads the state.
func (mi *mirror) setup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, mi.cfg.AckTimeout)
	defer cancel()
	kv, err := mi.js.KeyValue(ctx, mi.r.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && !mi.cfg.NoCreate {
		kv, err = mi.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: mi.r.Bucket, Storage: jetstream.FileStorage, MaxValueSize: int32(max(mi.board.MaxValue(), 1)),
		})
		if errors.Is(err, jetstream.ErrBucketExists) { // another bridge made it first
			kv, err = mi.js.KeyValue(ctx, mi.r.Bucket)
		}
	}
	if err != nil {
		return fmt.Errorf("bucket %s: %w", mi.r.Bucket, err)
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", mi.r.Bucket, err)
	}
	var created int64
	if s, ok := status.(*jetstream.KeyValueBucketStatus); ok && s.StreamInfo() != nil {
		created = s.StreamInfo().Created.UnixNano()
	}
	mi.kv = kv
	mi.st = kvState{BoardCreated: mi.board.Header().CreatedNano, BucketCreated: created, Keys: map[string]kvStep{}}
	data, err := os.ReadFile(mi.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("state file: %w", err)
	}
	st, err := parseKVState(data)
	switch {
	case err != nil:
		mi.cfg.Logf("route %s: %v: starting afresh (the bucket wins)", mi.r.Text, err)
	case st.BoardCreated != mi.st.BoardCreated || st.BucketCreated != mi.st.BucketCreated:
		mi.cfg.Logf("route %s: the board or the bucket was made again since the state file: starting afresh (the bucket wins)", mi.r.Text)
	default:
		mi.st.Keys = st.Keys
	}
	return nil
}

// run mirrors until ctx is done (nil) or a failure (the route starts again).
func (mi *mirror) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	w, err := mi.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch bucket %s: %w", mi.r.Bucket, err)
	}
	defer w.Stop()
	// The bucket's present values first: the steps must know the bucket's
	// revisions before any board entry is forwarded.
	for initial := true; initial; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("bucket %s: watcher stopped", mi.r.Bucket)
			}
			if e == nil {
				initial = false
				break
			}
			if err := mi.fromBucket(e); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
	if err := mi.save(); err != nil {
		return err
	}
	batches := make(chan []shmbus.BoardEntry)
	errc := make(chan error, 1)
	wg.Go(func() {
		bw := mi.board.WatchPrefix(0, "")
		for {
			es, err := bw.Next(ctx)
			if err != nil {
				errc <- err
				return
			}
			select {
			case batches <- es:
			case <-ctx.Done():
				return
			}
		}
	})
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("bucket %s: watcher stopped", mi.r.Bucket)
			}
			if e == nil {
				continue
			}
			if err := mi.fromBucket(e); err != nil {
				return err
			}
		case es := <-batches:
			for _, e := range es {
				if err := mi.fromBoard(ctx, e); err != nil {
					return err
				}
			}
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch board: %w", err)
		case <-ctx.Done():
			return nil
		}
		if err := mi.save(); err != nil {
			return err
		}
	}
}

// fromBucket applies a bucket update to the board.
func (mi *mirror) fromBucket(e jetstream.KeyValueEntry) error {
	kvKey := e.Key()
	key, err := decodeKey(kvKey)
	if err != nil {
		mi.refuse("key", err)
		return nil
	}
	step, known := mi.st.Keys[kvKey]
	if known && e.Revision() <= step.Bucket {
		return nil // on the board already
	}
	deleted := e.Operation() != jetstream.KeyValuePut
	cur, rev, err := mi.board.Get(key, mi.buf)
	present := err == nil
	if err != nil && !errors.Is(err, shmbus.ErrNotFound) {
		return err
	}
	if present && !deleted && bytes.Equal(cur, e.Value()) || !present && deleted {
		mi.step(kvKey, kvStep{Board: rev, Bucket: e.Revision()})
		return nil
	}
	if rev > step.Board && (known || present) {
		// A local write not yet in step loses to the bucket.
		mi.m.BoardConflicts.WithLabelValues(mi.r.Text).Inc()
		mi.cfg.Logf("route %s: key %q: the bucket's revision %d overwrites a local write", mi.r.Text, key, e.Revision())
	}
	op := opPut
	if deleted {
		op = opDelete
		rev, err = mi.board.Delete(key)
	} else {
		rev, err = mi.board.Put(key, e.Value())
	}
	switch {
	case errors.Is(err, shmbus.ErrTooLarge), errors.Is(err, shmbus.ErrFull):
		// The board keeps what it has; a later local write of the key
		// replaces the bucket's value.
		mi.refuse("board", err)
		step.Bucket = e.Revision()
		mi.step(kvKey, step)
		return nil
	case errors.Is(err, shmbus.ErrNotFound): // deleted meanwhile: nothing to do
		_, rev, _ = mi.board.Get(key, mi.buf)
	case err != nil:
		return err
	default:
		mi.m.BoardUpdates.WithLabelValues(mi.r.Text, dirToBoard, op).Inc()
	}
	mi.step(kvKey, kvStep{Board: rev, Bucket: e.Revision()})
	return nil
}

// fromBoard forwards a local write to the bucket.
func (mi *mirror) fromBoard(ctx context.Context, e shmbus.BoardEntry) error {
	kvKey := encodeKey(e.Key)
	step := mi.st.Keys[kvKey]
	if e.Rev <= step.Board {
		return nil // the route's own write, or overwritten by the bucket since
	}
	ctx, cancel := context.WithTimeout(ctx, mi.cfg.AckTimeout)
	defer cancel()
	var rev uint64
	var err error
	op := opPut
	if e.Deleted {
		op = opDelete
		if step.Bucket == 0 { // the bucket never had the key
			mi.step(kvKey, kvStep{Board: e.Rev})
			return nil
		}
		// A delete marker as kv.Delete writes it, published here to learn
		// its revision.
		m := &nats.Msg{Subject: "$KV." + mi.r.Bucket + "." + kvKey, Header: nats.Header{"KV-Operation": {"DEL"}}}
		var ack *jetstream.PubAck
		if ack, err = mi.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(step.Bucket)); err == nil {
			rev = ack.Sequence
		}
	} else {
		rev, err = mi.kv.Update(ctx, kvKey, e.Value, step.Bucket)
	}
	switch {
	case isConflict(err):
		// Another machine wrote the key since step.Bucket: its update is
		// on its way and will overwrite this write on the board.
		mi.m.BoardConflicts.WithLabelValues(mi.r.Text).Inc()
		mi.cfg.Logf("route %s: key %q: the bucket moved past revision %d; its value wins", mi.r.Text, e.Key, step.Bucket)
		step.Board = e.Rev
		mi.step(kvKey, step)
		return nil
	case tooLarge(err), errors.Is(err, jetstream.ErrInvalidKey):
		// The bucket keeps its value; the board keeps this one.
		mi.refuse("bucket", err)
		step.Board = e.Rev
		mi.step(kvKey, step)
		return nil
	case err != nil:
		return fmt.Errorf("bucket %s: %s %q: %w", mi.r.Bucket, op, e.Key, err)
	}
	mi.m.BoardUpdates.WithLabelValues(mi.r.Text, dirToBucket, op).Inc()
	mi.step(kvKey, kvStep{Board: e.Rev, Bucket: rev})
	return nil
}

// isConflict tells a write the bucket refused because the key's revision
// was not the one expected.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// tooLarge tells a value larger than the bucket's max_value_size or the
// server's max_payload.
func tooLarge(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrMaxPayload) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum
}

func (mi *mirror) refuse(what string, err error) {
	mi.m.Refused.WithLabelValues(mi.r.Text).Inc()
	mi.cfg.Logf("route %s: %s refused: %v", mi.r.Text, what, err)
}

func (mi *mirror) step(kvKey string, s kvStep) {
	mi.st.Keys[kvKey] = s
	mi.dirty = true
}

// save writes the state file if it changed: a new file (made with
// O_EXCL under a random name, so nothing planted in a shared directory is
// followed) renamed over the old, so a crash leaves one or the other.
func (mi *mirror) save() error {
	if !mi.dirty {
		return nil
	}
	data, err := json.Marshal(mi.st)
	if err == nil {
		err = replaceFile(mi.path, data)
	}
	if err != nil {
		mi.m.Errors.WithLabelValues(mi.r.Text, "state").Inc()
		return fmt.Errorf("state file: %w", err)
	}
	mi.dirty = false
	return nil
}

func replaceFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
