package main

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/shmbus/shmbus/internal/bridge"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

const bridgeLong = `Bridge carries messages between local buses and a NATS server (JetStream
or core NATS), so that buses on different machines exchange messages. It
runs until SIGINT or SIGTERM, finishes what is in flight and exits with
status 0. docs/bridge.md has the topologies and the guarantees.

Routes (--route, repeatable):
  bus:NAME->stream:SUBJECT   every message of bus NAME (the bridge takes its
                             consumer role) into the JetStream stream that
                             stores SUBJECT, exactly once; SUBJECT may hold
                             {bus} and {priority}. If no stream stores it,
                             one is made (SHMBUS_NAME, file storage).
  stream:FILTER->bus:NAME    the stream's messages on FILTER (wildcards
                             allowed) into bus NAME through a durable
                             consumer; nothing lost, in order per priority.
  subject:SUBJECT->bus:NAME  core NATS messages into bus NAME: at most once.
  board:NAME<->kv:BUCKET     board NAME mirrored to the JetStream key-value
                             bucket BUCKET and back (made if missing): local
                             writes go to the bucket, the bucket's updates
                             come to the board; between concurrent writes on
                             two machines the bucket decides, and both boards
                             take its value. Keys outside the KV alphabet
                             are stored as '=' and base64url.

A message released from a bus has been stored by JetStream; a message
acknowledged to JetStream has been sent to the bus. Messages larger than
the server's max_payload travel in chunks and are put together again.
Messages a route cannot deliver go to --dead-letter with a reason.

Credentials never go on the command line: the password comes from
$NATS_PASSWORD or --password-file, a token from $NATS_TOKEN or
--token-file; --nkey and --creds name files. A server URL with a password
in it is refused.

--config FILE reads settings from a file, one "FLAG VALUE" per line (the
long flag names without dashes; route may repeat; '#' starts a comment).
Flags on the command line win over the file; routes add up.

With --metrics ADDR it serves Prometheus metrics at http://ADDR/metrics.
A malformed route or configuration is a usage error (exit status 2).`

func (a *app) bridgeCmd() *cobra.Command {
	var (
		routes       []string
		config       string
		metrics      string
		quiet        bool
		user         string
		passwordFile string
		tokenFile    string
		cfg          bridge.Config
	)
	cmd := &cobra.Command{
		Use:   "bridge",
		Short: "Carry messages between buses and NATS JetStream",
		Long:  bridgeLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if config != "" {
				if err := applyConfigFile(cmd.Flags(), config); err != nil {
					return err
				}
			}
			for _, s := range routes {
				r, err := bridge.ParseRoute(s)
				if err != nil {
					return usagef("bridge: %v", err)
				}
				cfg.Routes = append(cfg.Routes, r)
			}
			if cfg.Server == "" {
				cfg.Server = os.Getenv("NATS_URL")
			}
			var err error
			if cfg.Auth, err = bridgeAuth(user, passwordFile, tokenFile, cfg.Auth); err != nil {
				return usagef("bridge: %v", err)
			}
			cfg.Dir = a.dir
			logger := log.New(a.stderr, "shmbus bridge: ", log.LstdFlags)
			cfg.Logf = logger.Printf
			if quiet {
				cfg.Logf = func(string, ...any) {}
			}
			b, err := bridge.New(cfg)
			if errors.Is(err, bridge.ErrConfig) {
				return usagef("bridge: %v", err)
			}
			if err != nil {
				return fmt.Errorf("bridge: %w", err)
			}
			if metrics != "" {
				ml, err := net.Listen("tcp", metrics)
				if err != nil {
					return fmt.Errorf("bridge: metrics: %w", err)
				}
				mux := http.NewServeMux()
				mux.Handle("/metrics", b.Metrics().Handler())
				hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
				go hs.Serve(ml)
				defer hs.Close()
				cfg.Logf("metrics on http://%s/metrics", ml.Addr())
			}
			if err := b.Run(cmd.Context()); err != nil {
				return fmt.Errorf("bridge: %w", err)
			}
			cfg.Logf("shut down")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&routes, "route", nil, "a `ROUTE` (repeatable): bus:NAME->stream:SUBJECT, stream:FILTER->bus:NAME, subject:SUBJECT->bus:NAME, board:NAME<->kv:BUCKET")
	f.StringVar(&config, "config", "", "read settings from `FILE` (one \"FLAG VALUE\" per line)")
	f.StringVar(&cfg.Server, "server", "", "NATS server `URL`s, comma-separated (default $NATS_URL, else nats://127.0.0.1:4222)")
	f.StringVar(&user, "user", "", "`NAME` of the user (default $NATS_USER); the password comes from $NATS_PASSWORD or --password-file")
	f.StringVar(&passwordFile, "password-file", "", "read the password from `FILE`")
	f.StringVar(&tokenFile, "token-file", "", "read an authentication token from `FILE` (default $NATS_TOKEN)")
	f.StringVar(&cfg.Auth.NKeySeedFile, "nkey", "", "authenticate with the nkey seed in `FILE`")
	f.StringVar(&cfg.Auth.CredsFile, "creds", "", "authenticate with the JWT credentials in `FILE`")
	f.StringVar(&cfg.Auth.CAFile, "tls-ca", "", "trust server certificates signed by the CA in `FILE`")
	f.StringVar(&cfg.Auth.CertFile, "tls-cert", "", "TLS client certificate `FILE`")
	f.StringVar(&cfg.Auth.KeyFile, "tls-key", "", "TLS client key `FILE`")
	f.StringVar(&metrics, "metrics", "", "serve Prometheus metrics on `ADDR` (host:port)")
	f.StringVar(&cfg.DeadLetter, "dead-letter", bridge.DefaultDeadLetter, "`SUBJECT` for messages a route cannot deliver")
	f.IntVar(&cfg.Window, "window", bridge.DefaultWindow, "bus->stream: at most `N` NATS messages published and not yet acknowledged")
	f.Var(newSizeValue(&cfg.WindowSize), "window-size", "bus->stream: at most this many bytes of messages in flight (default 32MiB)")
	f.Var(newSizeValue(&cfg.FetchSize), "fetch-size", "stream->bus: at most this many bytes pulled ahead of the bus (default 8MiB)")
	cfg.AckWait = bridge.DefaultAckWait
	f.Var(durValue{&cfg.AckWait}, "ack-wait", "stream->bus: JetStream redelivers what is not acknowledged in this time")
	cfg.AckTimeout = bridge.DefaultAckTimeout
	f.Var(durValue{&cfg.AckTimeout}, "ack-timeout", "bus->stream: an acknowledgement not back in this time means publishing again")
	cfg.Duplicates = bridge.DefaultDuplicates
	f.Var(durValue{&cfg.Duplicates}, "duplicates", "duplicate window of the streams the bridge makes (longer than a bridge restart takes)")
	f.BoolVar(&cfg.NoCreate, "no-create", false, "do not make streams; a bus->stream route without one waits")
	f.BoolVar(&quiet, "quiet", false, "do not log on stderr")
	return cmd
}

// applyConfigFile sets the flags named in the file, except those given on
// the command line (routes add up).
func applyConfigFile(fs *pflag.FlagSet, path string) error {
	file, err := os.Open(path)
	if err != nil {
		return usagef("bridge: config: %v", err)
	}
	defer file.Close()
	kv, err := bridge.ParseFile(file)
	if err != nil {
		return usagef("bridge: %s: %v", path, err)
	}
	for _, e := range kv {
		fl := fs.Lookup(e[0])
		if fl == nil || e[0] == "config" || e[0] == "help" {
			return usagef("bridge: %s: unknown setting %q", path, e[0])
		}
		if fl.Changed && e[0] != "route" {
			continue
		}
		if err := fl.Value.Set(e[1]); err != nil {
			return usagef("bridge: %s: %s: %v", path, e[0], err)
		}
	}
	return nil
}

// bridgeAuth completes the credentials from the environment and files.
func bridgeAuth(user, passwordFile, tokenFile string, a bridge.Auth) (bridge.Auth, error) {
	read := func(path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	a.User = user
	if a.User == "" {
		a.User = os.Getenv("NATS_USER")
	}
	a.Password = os.Getenv("NATS_PASSWORD")
	if passwordFile != "" {
		p, err := read(passwordFile)
		if err != nil {
			return a, fmt.Errorf("%w: password file: %v", bridge.ErrConfig, err)
		}
		a.Password = p
	}
	a.Token = os.Getenv("NATS_TOKEN")
	if tokenFile != "" {
		t, err := read(tokenFile)
		if err != nil {
			return a, fmt.Errorf("%w: token file: %v", bridge.ErrConfig, err)
		}
		a.Token = t
	}
	if a.Password != "" && a.User == "" {
		return a, fmt.Errorf("%w: a password without a user (--user or $NATS_USER)", bridge.ErrConfig)
	}
	return a, nil
}
