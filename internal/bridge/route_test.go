package bridge

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRoute(t *testing.T) {
	good := []struct {
		in   string
		kind Kind
		bus  string
		subj string
	}{
		{"bus:orders->stream:shmbus.{bus}.{priority}", BusToStream, "orders", "shmbus.{bus}.{priority}"},
		{"stream:shmbus.orders.*->bus:in", StreamToBus, "in", "shmbus.orders.*"},
		{"stream:a.>->bus:in.2", StreamToBus, "in.2", "a.>"},
		{"subject:alerts->bus:local", SubjectToBus, "local", "alerts"},
	}
	for _, g := range good {
		r, err := ParseRoute(g.in)
		if err != nil || r.Kind != g.kind || r.Bus != g.bus || r.Subject != g.subj {
			t.Errorf("ParseRoute(%q) = %+v, %v", g.in, r, err)
		}
	}
	bad := []string{
		"", "bus:x", "bus:x=>stream:y", "bus:->stream:y", "bus:x->stream:", "bus:x->bus:y",
		"stream:a->stream:b", "bus:a/b->stream:y", "bus:..->stream:y", "bus:x->stream:a.*",
		"bus:x->stream:a..b", "stream:a.{bus}->bus:x", "stream:a.>.b->bus:x", "subject:a b->bus:x",
		"bus:x<->stream:y", "kv:x<->board:y", "board:a/b<->kv:x", "board:a<->kv:b.c", "board:a<->kv:",
		"board:<->kv:x",
	}
	if r, err := ParseRoute("board:cfg<->kv:shared_cfg-1"); err != nil || r.Kind != BoardKV || r.Board != "cfg" || r.Bucket != "shared_cfg-1" {
		t.Errorf("board route: %+v, %v", r, err)
	}
	for _, s := range bad {
		_, err := ParseRoute(s)
		if !errors.Is(err, ErrConfig) {
			t.Errorf("ParseRoute(%q): %v, want ErrConfig", s, err)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseRoute(%q): error of more than one line: %q", s, err)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	r1, _ := ParseRoute("bus:x->stream:a")
	r2, _ := ParseRoute("bus:x->stream:b")
	b1, _ := ParseRoute("board:x<->kv:a")
	b2, _ := ParseRoute("board:x<->kv:b")
	cases := map[string]Config{
		"no routes":          {},
		"two readers of bus": {Routes: []Route{r1, r2}},
		"password in url":    {Routes: []Route{r1}, Server: "nats://u:secret@host:4222"},
		"wild dead letter":   {Routes: []Route{r1}, DeadLetter: "dl.*"},
		"two board routes":   {Routes: []Route{b1, b2}},
	}
	for name, c := range cases {
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	if _, err := New(Config{Routes: []Route{r1}}); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestParseFile(t *testing.T) {
	kv, err := ParseFile(strings.NewReader("# comment\n\nroute bus:a->stream:x.{priority}\nserver  nats://h:4222\n"))
	if err != nil || len(kv) != 2 || kv[0] != [2]string{"route", "bus:a->stream:x.{priority}"} || kv[1][1] != "nats://h:4222" {
		t.Fatalf("ParseFile: %v, %v", kv, err)
	}
	if _, err := ParseFile(strings.NewReader("route\n")); !errors.Is(err, ErrConfig) {
		t.Fatalf("key without value: %v", err)
	}
}
