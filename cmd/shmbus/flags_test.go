package main

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for text, want := range map[string]int{
		"1": 1, "4096": 4096, "100B": 100, "100b": 100,
		"64k": 64 << 10, "64K": 64 << 10, "64KiB": 64 << 10, "64kib": 64 << 10, "64KIB": 64 << 10,
		"1M": 1 << 20, "1m": 1 << 20, "1MiB": 1 << 20, "3G": 3 << 30, "2GiB": 2 << 30, "1T": 1 << 40, "1TiB": 1 << 40,
	} {
		got, err := parseSize(text)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", text, got, err, want)
		}
	}
	for _, text := range []string{"", "0", "0k", "-1", "1.5M", "1 MiB", "1KB", "1mb", "1x", "k", "1kk",
		"99999999999999999999", "10000000TiB", "8388608T"} {
		_, err := parseSize(text)
		var ve *valueError
		if !errors.As(err, &ve) || ve.text != text || !strings.Contains(err.Error(), `"`+text+`"`) {
			t.Errorf("parseSize(%q) = %v, want a valueError echoing the text", text, err)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for text, want := range map[string]time.Duration{
		"0": 0, "1": time.Second, "0.5": 500 * time.Millisecond, "1s": time.Second, "100ms": 100 * time.Millisecond, "1m30s": 90 * time.Second,
	} {
		got, err := parseDuration(text)
		if err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", text, got, err, want)
		}
	}
	for _, text := range []string{"", "soon", "-1s", "-1", "1e300", "NaN", "Inf", "1 s"} {
		if _, err := parseDuration(text); err == nil || !strings.Contains(err.Error(), `"`+text+`"`) {
			t.Errorf("parseDuration(%q) = %v, want an error echoing the text", text, err)
		}
	}
}

func TestCompact(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0", 7: "7", 999999: "999999", 1e6: "1M", 1234567: "1.23M", 45_600_000: "45.6M",
		999_499_999: "999M", 999_500_000: "1G", math.MaxUint64: "18.4E",
	} {
		if got := compactCount(n); got != want {
			t.Errorf("compactCount(%d) = %q, want %q", n, got, want)
		}
	}
	if got := compactFloat(0.5); got != "0.5" {
		t.Errorf("compactFloat(0.5) = %q", got)
	}
}

// TestStatTextWidth checks that stat's text, and --watch's with its header
// and rates, fit in 100 columns whatever the counters hold.
func TestStatTextWidth(t *testing.T) {
	big := laneStat{Priority: 63, Messages: math.MaxUint64, Bytes: math.MaxUint64, MsgsIn: math.MaxUint64,
		BytesIn: math.MaxUint64, MsgsOut: math.MaxUint64, BytesOut: math.MaxUint64, FullEvents: math.MaxUint64,
		Recovered: math.MaxUint64, ProducerSleeps: math.MaxUint64, ProducerWakes: math.MaxUint64}
	for _, n := range []uint64{123456, 999999} {
		mid := laneStat{Priority: 10, Messages: n, Bytes: n, MsgsIn: n, BytesIn: n, MsgsOut: n, BytesOut: n,
			FullEvents: n, Recovered: n, ProducerSleeps: n, ProducerWakes: n}
		cur := &busStat{Name: strings.Repeat("n", 40), Lanes: []laneStat{big, mid}}
		prev := &busStat{Lanes: []laneStat{{}, {}}}
		var b bytes.Buffer
		writeWatchHeader(&b, time.Second, cur.Name, time.Now())
		cur.writeText(&b)
		writeRates(&b, prev, cur, time.Millisecond)
		for _, line := range strings.Split(b.String(), "\n") {
			if len(line) > 100 {
				t.Errorf("%d columns: %q", len(line), line)
			}
		}
		if !strings.Contains(b.String(), "18.4E") || !strings.Contains(b.String(), strconv.FormatUint(n, 10)) {
			t.Errorf("figures missing:\n%s", b.String())
		}
	}
}
