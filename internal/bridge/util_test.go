package bridge

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func streamConfig(name, subj string) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: name, Subjects: []string{subj}, Storage: jetstream.FileStorage, Duplicates: time.Minute}
}
