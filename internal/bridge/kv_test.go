package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/shmbus/shmbus"
)

var boardSeq int

// newBoard makes a board with a name unique to this test process.
func newBoard(t testing.TB) *shmbus.Board {
	t.Helper()
	boardSeq++
	name := fmt.Sprintf("bd%d-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9, boardSeq)
	b, err := shmbus.CreateBoard(name, &shmbus.BoardOptions{Keys: 128, MaxValue: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Remove(); err != nil && !errors.Is(err, shmbus.ErrNotExist) {
			t.Errorf("remove board: %v", err)
		}
	})
	return b
}

var bucketSeq int

func newBucketName() string {
	bucketSeq++
	return fmt.Sprintf("B%d_%d", os.Getpid(), bucketSeq)
}

func boardRoute(b *shmbus.Board, bucket string) string {
	return "board:" + b.Name() + "<->kv:" + bucket
}

// updates reads board_updates_total of br's only route.
func updates(br *Bridge, dir, op string) float64 {
	return testutil.ToFloat64(br.Metrics().BoardUpdates.WithLabelValues(br.cfg.Routes[0].Text, dir, op))
}

func conflicts(br *Bridge) float64 {
	return testutil.ToFloat64(br.Metrics().BoardConflicts.WithLabelValues(br.cfg.Routes[0].Text))
}

// boardValue is key's value on b, or "<none>".
func boardValue(t testing.TB, b *shmbus.Board, key string) string {
	t.Helper()
	v, _, err := b.Get(key, nil)
	if errors.Is(err, shmbus.ErrNotFound) {
		return "<none>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

func bucketValue(t testing.TB, kv jetstream.KeyValue, key string) string {
	t.Helper()
	e, err := kv.Get(context.Background(), encodeKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "<none>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(e.Value())
}

func waitValue(t testing.TB, b *shmbus.Board, key, want string) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%s on board %s to be %q", key, b.Name(), want), func() bool {
		return boardValue(t, b, key) == want
	})
}

// sync puts a fresh key on from and waits for it on to: both routes are
// then past their start.
func syncBoards(t testing.TB, from, to *shmbus.Board, key string) {
	t.Helper()
	if _, err := from.Put(key, []byte("here")); err != nil {
		t.Fatal(err)
	}
	waitValue(t, to, key, "here")
}

// wantCounts checks a route's board_updates_total.
func wantCounts(t testing.TB, name string, br *Bridge, toBucketPut, toBucketDel, toBoardPut, toBoardDel float64) {
	t.Helper()
	got := [4]float64{updates(br, dirToBucket, opPut), updates(br, dirToBucket, opDelete), updates(br, dirToBoard, opPut), updates(br, dirToBoard, opDelete)}
	if want := [4]float64{toBucketPut, toBucketDel, toBoardPut, toBoardDel}; got != want {
		t.Fatalf("%s: updates (board->kv put, delete, kv->board put, delete) = %v, want %v", name, got, want)
	}
}

// TestBoardKV: two boards (as on two hosts), each mirrored to one bucket.
// A put on one appears on the other and in the bucket, a delete too; each
// write crosses exactly once each way and nothing comes back (no echo);
// keys outside the KV alphabet round-trip.
func TestBoardKV(t *testing.T) {
	ns := startServer(t, false)
	_, js := ns.connect()
	bucket := newBucketName()
	a, b := newBoard(t), newBoard(t)
	brA, _ := runBridge(t, ns, boardRoute(a, bucket))
	brB, _ := runBridge(t, ns, boardRoute(b, bucket))
	syncBoards(t, a, b, "ready")
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}

	keys := []string{"plain", "a/b=c.d", "=starts-with-escape", ".dot", "two..dots", "sp ace", "\x00\xff\xfe", "ключ", strings.Repeat("k", 255)}
	for i := 0; i < 20; i++ {
		keys = append(keys, fmt.Sprintf("cfg.%d", i))
	}
	for i, k := range keys {
		if _, err := a.Put(k, []byte(fmt.Sprintf("v%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range keys {
		want := fmt.Sprintf("v%d", i)
		waitValue(t, b, k, want)
		if got := bucketValue(t, kv, k); got != want {
			t.Fatalf("bucket %q = %q, want %q", k, got, want)
		}
	}
	// The escaped keys are in the bucket under '=' and base64url.
	kvKeys, err := kv.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(kvKeys) != len(keys)+1 {
		t.Fatalf("bucket has %d keys, want %d", len(kvKeys), len(keys)+1)
	}
	for _, k := range kvKeys {
		bk, err := decodeKey(k)
		if err != nil {
			t.Fatalf("bucket key %q: %v", k, err)
		}
		if plainKey(bk) != (k[0] != '=') {
			t.Fatalf("bucket key %q for board key %q", k, bk)
		}
	}
	n := float64(len(keys) + 1)
	settle := func() { time.Sleep(300 * time.Millisecond) } // time for an echo to show, if there were one
	settle()
	wantCounts(t, "A", brA, n, 0, 0, 0)
	wantCounts(t, "B", brB, 0, 0, n, 0)

	// A delete on B: a tombstone in the bucket, the key gone on A.
	if _, err := b.Delete("sp ace"); err != nil {
		t.Fatal(err)
	}
	waitValue(t, a, "sp ace", "<none>")
	if got := bucketValue(t, kv, "sp ace"); got != "<none>" {
		t.Fatalf("bucket still has the deleted key: %q", got)
	}
	// ... and written again on A after the delete.
	if _, err := a.Put("sp ace", []byte("back")); err != nil {
		t.Fatal(err)
	}
	waitValue(t, b, "sp ace", "back")
	settle()
	wantCounts(t, "A", brA, n+1, 0, 0, 1)
	wantCounts(t, "B", brB, 0, 1, n+1, 0)
	if c := conflicts(brA) + conflicts(brB); c != 0 {
		t.Fatalf("%v conflicts without concurrent writes", c)
	}
	// A write to the bucket by another client reaches both boards.
	if _, err := kv.Put(context.Background(), "plain", []byte("from elsewhere")); err != nil {
		t.Fatal(err)
	}
	waitValue(t, a, "plain", "from elsewhere")
	waitValue(t, b, "plain", "from elsewhere")
}

// TestBoardKVConcurrent: both boards write the same keys at once; when the
// writers stop, both boards and the bucket hold the same value.
func TestBoardKVConcurrent(t *testing.T) {
	ns := startServer(t, false)
	_, js := ns.connect()
	bucket := newBucketName()
	a, b := newBoard(t), newBoard(t)
	brA, _ := runBridge(t, ns, boardRoute(a, bucket))
	brB, _ := runBridge(t, ns, boardRoute(b, bucket))
	syncBoards(t, a, b, "ready")
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"hot", "warm", "\x01bin"}
	const writes = 150
	var wg sync.WaitGroup
	for _, side := range []struct {
		name  string
		board *shmbus.Board
	}{{"a", a}, {"b", b}} {
		wg.Go(func() {
			for i := 0; i < writes; i++ {
				k := keys[i%len(keys)]
				var err error
				if i%10 == 9 {
					_, err = side.board.Delete(k)
					if errors.Is(err, shmbus.ErrNotFound) {
						err = nil
					}
				} else {
					_, err = side.board.Put(k, []byte(fmt.Sprintf("%s%d", side.name, i)))
				}
				if err != nil {
					t.Error(err)
					return
				}
				if i%16 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	converged := func() bool {
		for _, k := range keys {
			va, vb, vk := boardValue(t, a, k), boardValue(t, b, k), bucketValue(t, kv, k)
			if va != vb || vb != vk {
				return false
			}
		}
		return true
	}
	waitFor(t, 30*time.Second, "boards and bucket to converge", converged)
	time.Sleep(300 * time.Millisecond) // and stay so
	if !converged() {
		t.Fatal("boards and bucket diverged again")
	}
	t.Logf("conflicts: a %v, b %v", conflicts(brA), conflicts(brB))
}

// TestBoardKVRestart: writes made on both sides while one bridge is down
// all arrive when it starts again; a key written on both sides meanwhile
// takes the bucket's value (a counted conflict).
func TestBoardKVRestart(t *testing.T) {
	ns := startServer(t, false)
	_, js := ns.connect()
	bucket := newBucketName()
	a, b := newBoard(t), newBoard(t)
	brA, _ := runBridge(t, ns, boardRoute(a, bucket))
	_, stopB := runBridge(t, ns, boardRoute(b, bucket))
	syncBoards(t, a, b, "ready")
	syncBoards(t, a, b, "gone")
	syncBoards(t, a, b, "both")
	stopB()

	a.Put("from-a", []byte("1"))  // forwarded by A meanwhile
	b.Put("from-b", []byte("2"))  // waits on B
	b.Delete("gone")              // waits on B
	a.Put("both", []byte("a"))    // reaches the bucket first ...
	b.Put("both", []byte("b"))    // ... so this loses
	b.Put("\xffbin", []byte("3")) // a key outside the alphabet, after a restart
	waitFor(t, 20*time.Second, "A to forward", func() bool { return updates(brA, dirToBucket, opPut) == 5 })

	brB, _ := runBridge(t, ns, boardRoute(b, bucket))
	waitValue(t, b, "from-a", "1")
	waitValue(t, a, "from-b", "2")
	waitValue(t, a, "gone", "<none>")
	waitValue(t, a, "\xffbin", "3")
	waitValue(t, b, "both", "a")
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	if got := bucketValue(t, kv, "both"); got != "a" {
		t.Fatalf("bucket: both = %q", got)
	}
	time.Sleep(300 * time.Millisecond)
	wantCounts(t, "B after restart", brB, 2, 1, 2, 0)
	if c := conflicts(brB); c != 1 {
		t.Fatalf("conflicts on B: %v, want 1", c)
	}
	if !bytes.Equal([]byte(boardValue(t, a, "both")), []byte("a")) {
		t.Fatal("A lost its value")
	}
}

func TestKVKeyEncoding(t *testing.T) {
	cases := []struct {
		key, kv string
	}{
		{"plain", "plain"},
		{"a/b_c-d=e.f", "a/b_c-d=e.f"},
		{"=x", "=PXg"},
		{".x", "=Lng"},
		{"x.", "=eC4"},
		{"a..b", "=YS4uYg"},
		{"a b", "=YSBi"},
		{"\x00", "=AA"},
	}
	for _, c := range cases {
		if got := encodeKey(c.key); got != c.kv {
			t.Errorf("encodeKey(%q) = %q, want %q", c.key, got, c.kv)
		}
		if got, err := decodeKey(c.kv); err != nil || got != c.key {
			t.Errorf("decodeKey(%q) = %q, %v", c.kv, got, err)
		}
	}
	for _, bad := range []string{"", "=", "=cGxhaW4", "=!!", "a b", strings.Repeat("k", 256), "=" + strings.Repeat("AA", 200)} {
		if _, err := decodeKey(bad); !errors.Is(err, errKVKey) {
			t.Errorf("decodeKey(%q): %v, want errKVKey", bad, err)
		}
	}
}

// TestBoardKVRefused: a value too large for the bucket stays on its board,
// one too large for a board stays in the bucket; both are counted as
// refused and the route goes on.
func TestBoardKVRefused(t *testing.T) {
	ns := startServer(t, false)
	_, js := ns.connect()
	ctx := context.Background()
	bucket := newBucketName()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, MaxValueSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	b := newBoard(t) // values up to 256 bytes
	br, _ := runBridge(t, ns, boardRoute(b, bucket))
	route := br.cfg.Routes[0].Text
	refused := func() float64 { return testutil.ToFloat64(br.Metrics().Refused.WithLabelValues(route)) }
	if _, err := b.Put("big", bytes.Repeat([]byte("x"), 100)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a refusal", func() bool { return refused() == 1 })
	if _, err := b.Put("small", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "small in the bucket", func() bool { return bucketValue(t, kv, "small") == "ok" })
	if got := bucketValue(t, kv, "big"); got != "<none>" {
		t.Fatalf("bucket has the refused value: %q", got)
	}

	if _, err := kv.Put(ctx, "tiny", []byte("t")); err != nil {
		t.Fatal(err)
	}
	small, err := shmbus.CreateBoard(b.Name()+"s", &shmbus.BoardOptions{Keys: 8, MaxValue: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { small.Remove() })
	if _, err := kv.Put(ctx, "five", []byte("12345")); err != nil {
		t.Fatal(err)
	}
	br2, _ := runBridge(t, ns, boardRoute(small, bucket))
	waitValue(t, small, "tiny", "t")
	waitValue(t, small, "small", "ok")
	waitFor(t, 20*time.Second, "five refused", func() bool {
		return testutil.ToFloat64(br2.Metrics().Refused.WithLabelValues(br2.cfg.Routes[0].Text)) == 1
	})
	if got := boardValue(t, small, "five"); got != "<none>" {
		t.Fatalf("small board holds %q", got)
	}
}

// TestBoardKVServerRestart: writes made while the NATS server is down (file
// store) cross once it is back; nothing is lost.
func TestBoardKVServerRestart(t *testing.T) {
	ns := startServer(t, true)
	bucket := newBucketName()
	a, b := newBoard(t), newBoard(t)
	brA, _ := runBridge(t, ns, boardRoute(a, bucket))
	brB, _ := runBridge(t, ns, boardRoute(b, bucket))
	syncBoards(t, a, b, "ready")
	ns.stop()
	for i := 0; i < 10; i++ {
		if _, err := a.Put(fmt.Sprintf("a%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Put(fmt.Sprintf("b%d", i), []byte("y")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // the routes fail and back off meanwhile
	ns.start()
	for i := 0; i < 10; i++ {
		waitValue(t, b, fmt.Sprintf("a%d", i), "x")
		waitValue(t, a, fmt.Sprintf("b%d", i), "y")
	}
	time.Sleep(300 * time.Millisecond)
	wantCounts(t, "A", brA, 11, 0, 10, 0)
	wantCounts(t, "B", brB, 10, 0, 11, 0)
}

// TestBoardKVBridgeKilled: B's bridge is a child process, SIGKILLed three
// times while both boards are written and started again each time: at the
// end both boards hold every key with the same value (nothing lost in a
// crash, whatever the state file held).
func TestBoardKVBridgeKilled(t *testing.T) {
	ns := startServer(t, true)
	bucket := newBucketName()
	a, b := newBoard(t), newBoard(t)
	runBridge(t, ns, boardRoute(a, bucket))
	start := func() *exec.Cmd {
		cmd := childBridgeCmd(t, ns, boardRoute(b, bucket))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	child := start()
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	syncBoards(t, a, b, "ready")
	const n = 50
	var wg sync.WaitGroup
	for _, side := range []struct {
		name  string
		board *shmbus.Board
	}{{"a", a}, {"b", b}} {
		wg.Go(func() {
			for i := 0; i < n; i++ {
				if _, err := side.board.Put(fmt.Sprintf("%s%d", side.name, i), []byte(side.name)); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	arrived := func() int { // a's keys on b: the child at work
		c := 0
		for i := 0; i < n; i++ {
			if boardValue(t, b, fmt.Sprintf("a%d", i)) == "a" {
				c++
			}
		}
		return c
	}
	for round := range 3 {
		waitFor(t, 20*time.Second, "the child bridge to carry writes", func() bool { return arrived() > (round+1)*n/5 })
		child.Process.Kill()
		child.Wait()
		child = start()
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		waitValue(t, b, fmt.Sprintf("a%d", i), "a")
		waitValue(t, a, fmt.Sprintf("b%d", i), "b")
	}
}

// TestBoardKVBadStateFile: a state file that does not parse (or belongs to
// an earlier bucket of the same name) is set aside: the route starts
// afresh, the bucket's values win and keys only the board has go to it.
func TestBoardKVBadStateFile(t *testing.T) {
	ns := startServer(t, false)
	_, js := ns.connect()
	ctx := context.Background()
	for _, content := range []string{"{not json", `{"board_created":1,"bucket_created":2,"keys":{}}`} {
		bucket := newBucketName()
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket})
		if err != nil {
			t.Fatal(err)
		}
		b := newBoard(t)
		path := filepath.Join(os.Getenv("SHMBUS_DIR"), "shmbus-bridge.board."+b.Name()+".kv."+bucket+".state")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(path) })
		b.Put("k", []byte("local"))
		b.Put("only-here", []byte("mine"))
		kv.Put(ctx, "k", []byte("remote"))
		br, stop := runBridge(t, ns, boardRoute(b, bucket))
		waitValue(t, b, "k", "remote")
		waitFor(t, 20*time.Second, "only-here in the bucket", func() bool { return bucketValue(t, kv, "only-here") == "mine" })
		stop()
		wantCounts(t, content, br, 1, 0, 1, 0)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseKVState(data); err != nil {
			t.Fatalf("state file left behind: %v", err)
		}
	}
}
