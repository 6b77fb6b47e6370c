package main

import (
	"errors"
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
