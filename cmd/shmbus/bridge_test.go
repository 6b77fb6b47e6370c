package main

import (
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rogpeppe/go-internal/testscript"
)

// cmdNatsServer is the script command "natsserver": it starts a NATS
// server with JetStream (file store under $WORK/js) in the test process,
// listening on a free loopback port, and sets $NATS_URL to it. The server
// stops when the script ends.
func cmdNatsServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: natsserver")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: filepath.Join(ts.Getenv("WORK"), "js"), NoLog: true, NoSigs: true})
	ts.Check(err)
	go s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		ts.Fatalf("nats-server not ready")
	}
	ts.Defer(func() { s.Shutdown(); s.WaitForShutdown() })
	ts.Setenv("NATS_URL", fmt.Sprintf("nats://127.0.0.1:%d", port))
}
