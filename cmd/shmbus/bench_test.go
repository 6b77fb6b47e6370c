package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shmbus/shmbus/bench"
)

// fakeReport is a report as Run makes one, with figures made up.
func fakeReport() *bench.Report {
	r := &bench.Report{Schema: bench.Schema, Started: time.Now(),
		Settings: bench.Settings{Sizes: []int{64, 64 << 10}, Duration: bench.Nanos(time.Second)}}
	for i, name := range []string{"pipe", "signal", "shmbus-spin", "posix-mq"} {
		m := bench.MethodReport{Name: name, Payload: "bytes"}
		if name == "signal" {
			m.Payload = "none"
			m.Latency = []bench.Latency{{Cell: bench.Cell{Size: 0}, RoundTrips: 10, P50: 5000, P99: 9000, P999: 20000, Max: 30000}}
		} else {
			for _, s := range []int{64, 64 << 10} {
				c := bench.Cell{Size: s}
				if name == "posix-mq" && s > 8192 {
					c.Unavailable, c.Limit = "n/a: limit 8192 B (fs.mqueue.msgsize_max)", 8192
				}
				k := bench.Nanos(i + 1)
				m.Latency = append(m.Latency, bench.Latency{Cell: c, RoundTrips: 100, P50: 300 * k, P99: 900 * k, P999: 2000 * k, Max: 5000 * k})
				m.Throughput = append(m.Throughput, bench.Rate{Cell: c, Messages: 1000, MsgsPerSec: 1e6 / float64(k), BytesPerSec: float64(s) * 1e6 / float64(k)})
			}
		}
		r.Methods = append(r.Methods, m)
	}
	return r
}

func TestBenchPlot(t *testing.T) {
	dir := t.TempDir()
	r := fakeReport()
	png := filepath.Join(dir, "b.png")
	if err := writeBenchPlot(png, r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(png)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("%s is not a PNG: %q", png, b[:min(len(b), 16)])
	}
	svg := filepath.Join(dir, "b.SVG")
	if err := writeBenchPlot(svg, r); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s is not XML: %v", svg, err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Errorf("%s: root element %q, want svg", svg, root)
	}
	if !strings.Contains(string(b), "shmbus-spin") {
		t.Errorf("%s does not name the methods", svg)
	}
	if err := writeBenchPlot(filepath.Join(dir, "b.gif"), r); err == nil {
		t.Error("a .gif plot did not fail")
	}
	if err := writeBenchPlot(filepath.Join(dir, "e.svg"), &bench.Report{Settings: bench.Settings{Sizes: []int{64}}}); err == nil {
		t.Error("an empty report plotted")
	}
}

func TestParseSizes(t *testing.T) {
	got, err := parseSizes("8,64,1k,64K,1m,2MiB,4096")
	if err != nil {
		t.Fatal(err)
	}
	want := []int{8, 64, 1 << 10, 64 << 10, 1 << 20, 2 << 20, 4096}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
	for _, bad := range []string{"", "4", "1x", "-8", "64,", "32m", "1km"} {
		if _, err := parseSizes(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestBenchText(t *testing.T) {
	var b bytes.Buffer
	writeBenchText(&b, fakeReport())
	out := b.String()
	for _, want := range []string{"Table 1.", "Table 2.", "Table 3.", "n/a (limit 8192 B)", "n/a (no payload)", "300ns"} {
		if !strings.Contains(out, want) {
			t.Errorf("text has no %q:\n%s", want, out)
		}
	}
}
