//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/internal/daemon"
	"github.com/spf13/cobra"
)

// defaultSocket is where the daemon listens unless told otherwise, by the
// rule its clients follow too: $SHMBUS_SOCKET, else (for a user other than
// root) $XDG_RUNTIME_DIR/shmbus.sock, else /run/shmbus/shmbus.sock.
func defaultSocket() string {
	if p := os.Getenv("SHMBUS_SOCKET"); p != "" {
		return p
	}
	if os.Geteuid() != 0 {
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			return filepath.Join(d, "shmbus.sock")
		}
	}
	return "/run/shmbus/shmbus.sock"
}

func (a *app) daemonCmd() *cobra.Command {
	var (
		socket  string
		metrics string
		mode    = uint32(0o666)
		poll    = 50 * time.Millisecond
		quiet   bool
		cfg     daemon.Config
		payload int // 0: daemon.DefaultMaxPayload
		memory  = daemon.DefaultMaxMemory
		perUID  int // 0: half of --max-memory
	)
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Serve buses to peers in other languages over a UNIX socket",
		Long: `Daemon listens on a UNIX socket (--socket) and serves the protocol of
docs/daemon-protocol.md: peers create and open buses (and receive the
segment's descriptor to map it themselves), send and receive through the
socket, read statistics, and subscribe to peer events; they also read,
write (put, compare-and-put, delete) and watch the keys of the boards in
the directory. Every client is identified by the kernel (SO_PEERCRED) and
admitted to a bus or board by its file's owner and mode. A client's connection is its lease: when it ends, what the
daemon held for it is given back, and once its process has exited, the peer
slots it held are released and its unpublished claims recovered.

What one client can make it hold is bounded: frames before HELLO carry at
most 4 KiB, a frame's buffer grows with the bytes that arrive (never to
the length its header declares before they come), every frame buffer and
large RECV or board reply is reserved from one memory budget (--max-memory, of
which one user's large requests hold at most --max-memory-per-uid; a
request it has no room for is refused with ERROR OVERLOADED), and a
connection must finish HELLO within --hello-timeout and keep a started
frame coming (--frame-timeout). At most --max-conns connections are open,
--max-conns-per-uid per user; others are refused with ERROR CONN_LIMIT.

With --metrics ADDR it serves Prometheus metrics at http://ADDR/metrics.
It runs until SIGINT or SIGTERM, then closes every connection, removes the
socket and exits with status 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if socket == "" {
				socket = defaultSocket()
			}
			logger := log.New(a.stderr, "shmbus daemon: ", log.LstdFlags)
			logf := logger.Printf
			if quiet {
				logf = func(string, ...any) {}
			}
			cfg.PollInterval, cfg.Logf = poll, logf
			switch {
			case cfg.MaxConns < 1 || cfg.MaxConnsPerUID < 1:
				return usagef("daemon: --max-conns and --max-conns-per-uid must be at least 1")
			case cfg.HelloTimeout <= 0 || cfg.FrameTimeout <= 0 || cfg.WriteTimeout <= 0 || cfg.IdleTimeout < 0:
				return usagef("daemon: --hello-timeout, --frame-timeout and --write-timeout must be positive, --idle-timeout 0 or more")
			}
			if payload == 0 {
				payload = daemon.DefaultMaxPayload
			}
			cfg.MaxPayload, cfg.MaxMemory, cfg.MaxMemoryPerUID = payload, int64(memory), int64(perUID)
			if perUID > memory {
				return usagef("daemon: --max-memory-per-uid %s is more than --max-memory %s", formatSize(perUID), formatSize(memory))
			}
			if payload > memory {
				return usagef("daemon: --max-payload %s is more than --max-memory %s", formatSize(payload), formatSize(memory))
			}
			return a.runDaemon(cmd.Context(), socket, metrics, os.FileMode(mode), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket", "", "listen on the socket `PATH` (default $SHMBUS_SOCKET, else $XDG_RUNTIME_DIR/shmbus.sock, or /run/shmbus/shmbus.sock for root)")
	f.StringVar(&metrics, "metrics", "", "serve Prometheus metrics on `ADDR` (host:port)")
	f.Var(modeValue{&mode}, "socket-mode", "permission bits of the socket (buses have their own)")
	f.Var(durValue{&poll}, "poll", "how often peer tables are scanned for joins, departures and deaths")
	cmd.RegisterFlagCompletionFunc("metrics", cobra.NoFileCompletions)
	f.BoolVar(&quiet, "quiet", false, "do not log connections and leases on stderr")
	f.Var(newSizeValue(&payload), "max-payload", "largest frame payload after HELLO, announced in WELCOME (default 64MiB+64KiB; less if the memory budget cannot hold that)")
	f.Var(newSizeValue(&memory), "max-memory", "memory budget of the frame buffers of all connections together; also sets the Go runtime's soft memory limit unless GOMEMLIMIT is set")
	f.Var(newSizeValue(&perUID), "max-memory-per-uid", "most of the memory budget one user's connections may hold in requests over 64 KiB (default half of --max-memory, at least --max-payload)")
	f.IntVar(&cfg.MaxConns, "max-conns", daemon.DefaultMaxConns, "at most `N` connections open at once")
	f.IntVar(&cfg.MaxConnsPerUID, "max-conns-per-uid", daemon.DefaultMaxConnsPerUID, "at most `N` connections open at once by one user")
	cfg.HelloTimeout, cfg.FrameTimeout, cfg.WriteTimeout = daemon.DefaultHelloTimeout, daemon.DefaultFrameTimeout, daemon.DefaultWriteTimeout
	f.Var(durValue{&cfg.HelloTimeout}, "hello-timeout", "HELLO must be complete this long after connecting")
	f.Var(durValue{&cfg.FrameTimeout}, "frame-timeout", "a started frame may go this long without a byte arriving")
	f.Var(durValue{&cfg.WriteTimeout}, "write-timeout", "a reply may wait this long for the client to read more of it; then the connection ends (a received message stays on the bus)")
	f.Var(durValue{&cfg.IdleTimeout}, "idle-timeout", "a connection may go this long without a request (0: for ever; a connection is a lease)")
	return cmd
}

func (a *app) runDaemon(ctx context.Context, socket, metricsAddr string, mode os.FileMode, cfg daemon.Config) error {
	logf := cfg.Logf
	if mode&^os.ModePerm != 0 {
		return usagef("daemon: --socket-mode %#o has bits other than permissions", mode)
	}
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return fmt.Errorf("daemon: socket directory: %w", err)
	}
	l, err := listenUnix(socket)
	if err != nil {
		return err
	}
	// The socket's mode decides who may connect; each bus's own mode
	// decides what they may do with it.
	if err := os.Chmod(socket, mode); err != nil {
		l.Close()
		return fmt.Errorf("daemon: %w", err)
	}
	defer os.Remove(socket)

	cfg.Dir, cfg.Version = a.dir, "shmbus "+moduleVersion()
	cfg.StatJSON = func(b *shmbus.Bus) ([]byte, error) {
		st, err := statBus(b)
		if err != nil {
			return nil, err
		}
		return json.Marshal(st)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// Garbage of refused and finished frames is collected before the
		// heap outgrows the budget by much.
		debug.SetMemoryLimit(daemon.RuntimeMemoryLimit(cfg.MaxMemory))
	}
	srv := daemon.New(cfg)
	if metricsAddr != "" {
		ml, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			l.Close()
			return fmt.Errorf("daemon: metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.MetricsHandler())
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(ml)
		defer hs.Close()
		logf("metrics on http://%s/metrics", ml.Addr())
	}
	logf("listening on %s (buses in %s)", socket, dirOrDefault(a.dir))
	if err := srv.Serve(ctx, l); err != nil {
		return err
	}
	logf("shut down")
	return nil
}

func dirOrDefault(dir string) string {
	if dir == "" {
		if d := os.Getenv("SHMBUS_DIR"); d != "" {
			return d
		}
		return "/dev/shm"
	}
	return dir
}

// listenUnix listens on path, replacing a stale socket file left by a
// daemon that died, but never one another daemon is serving on.
func listenUnix(path string) (*net.UnixListener, error) {
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	l, err := net.ListenUnix("unix", addr)
	if err == nil {
		l.SetUnlinkOnClose(false)
		return l, nil
	}
	if !errors.Is(err, unix.EADDRINUSE) {
		return nil, fmt.Errorf("daemon: listen: %w", err)
	}
	if c, derr := net.DialUnix("unix", nil, addr); derr == nil {
		c.Close()
		return nil, fmt.Errorf("daemon: another daemon is serving on %s", path)
	}
	fi, serr := os.Lstat(path)
	if serr != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("daemon: %s exists and is not a socket", path)
	}
	os.Remove(path)
	l, err = net.ListenUnix("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("daemon: listen: %w", err)
	}
	l.SetUnlinkOnClose(false)
	return l, nil
}
