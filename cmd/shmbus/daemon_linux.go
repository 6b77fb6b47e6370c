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
	"syscall"
	"time"

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
	)
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Serve buses to peers in other languages over a UNIX socket",
		Long: `Daemon listens on a UNIX socket (--socket) and serves the protocol of
docs/daemon-protocol.md: peers create and open buses (and receive the
segment's descriptor to map it themselves), send and receive through the
socket, read statistics, and subscribe to peer events. Every client is
identified by the kernel (SO_PEERCRED) and admitted to a bus by the bus's
owner and mode. A client's connection is its lease: when it ends, what the
daemon held for it is given back, and once its process has exited, the peer
slots it held are released and its unpublished claims recovered.

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
			return a.runDaemon(cmd.Context(), socket, metrics, os.FileMode(mode), poll, logf)
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket", "", "listen on the socket `PATH` (default $SHMBUS_SOCKET, else $XDG_RUNTIME_DIR/shmbus.sock, or /run/shmbus/shmbus.sock for root)")
	f.StringVar(&metrics, "metrics", "", "serve Prometheus metrics on `ADDR` (host:port)")
	f.Var(modeValue{&mode}, "socket-mode", "permission bits of the socket (buses have their own)")
	f.Var(durValue{&poll}, "poll", "how often peer tables are scanned for joins, departures and deaths")
	cmd.RegisterFlagCompletionFunc("metrics", cobra.NoFileCompletions)
	f.BoolVar(&quiet, "quiet", false, "do not log connections and leases on stderr")
	return cmd
}

func (a *app) runDaemon(ctx context.Context, socket, metricsAddr string, mode os.FileMode, poll time.Duration, logf func(string, ...any)) error {
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

	srv := daemon.New(daemon.Config{
		Dir:          a.dir,
		PollInterval: poll,
		Version:      "shmbus " + moduleVersion(),
		Logf:         logf,
		StatJSON: func(b *shmbus.Bus) ([]byte, error) {
			st, err := statBus(b)
			if err != nil {
				return nil, err
			}
			return json.Marshal(st)
		},
	})
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
	if !errors.Is(err, syscall.EADDRINUSE) {
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
