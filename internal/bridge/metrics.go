package bridge

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the bridge's counters, labelled by route (as written) and,
// for traffic, by priority.
type Metrics struct {
	reg         *prometheus.Registry
	Messages    *prometheus.CounterVec // route, priority: messages carried across (released, or sent to the bus)
	Bytes       *prometheus.CounterVec // route, priority
	Chunks      *prometheus.CounterVec // route: NATS messages of messages carried in more than one
	Acks        *prometheus.CounterVec // route: JetStream acknowledgements received (bus->stream) or sent (stream->bus)
	Duplicates  *prometheus.CounterVec // route: publishes JetStream dropped as duplicates (a resend after a failure or a restart)
	Redelivered *prometheus.CounterVec // route: resends (bus->stream) and redeliveries by JetStream (stream->bus)
	DeadLetters *prometheus.CounterVec // route, reason
	Refused     *prometheus.CounterVec // route: messages the route cannot carry
	Errors      *prometheus.CounterVec // route, kind
	// Board routes: writes carried across, by direction (board->kv,
	// kv->board) and op (put, delete); and local writes that lost to the
	// bucket's value.
	BoardUpdates   *prometheus.CounterVec // route, direction, op
	BoardConflicts *prometheus.CounterVec // route
	Reconnects     prometheus.Counter
	Connected      prometheus.Gauge
}

func newMetrics() *Metrics {
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shmbus_bridge_" + name, Help: help}, labels)
	}
	m := &Metrics{
		reg:         prometheus.NewRegistry(),
		Messages:    cv("messages_total", "Messages carried across, by route and priority.", "route", "priority"),
		Bytes:       cv("bytes_total", "Message bytes carried across, by route and priority.", "route", "priority"),
		Chunks:      cv("chunks_total", "NATS messages that carried one chunk of a message too large for one.", "route"),
		Acks:        cv("acks_total", "JetStream acknowledgements received (bus->stream) or sent (stream->bus).", "route"),
		Duplicates:  cv("duplicates_total", "Publishes JetStream dropped as duplicates of a message it had.", "route"),
		Redelivered: cv("redeliveries_total", "Messages published again after a failure (bus->stream) or delivered again by JetStream (stream->bus).", "route"),
		DeadLetters: cv("dead_letters_total", "Messages sent to the dead-letter subject instead of the bus, by reason.", "route", "reason"),
		Refused:     cv("refused_total", "Messages the route cannot carry (they stay where they are).", "route"),
		Errors:      cv("errors_total", "Failures by kind (publish, ack, fetch, setup, bus, ...).", "route", "kind"),
		BoardUpdates: cv("board_updates_total", "Board routes: writes carried from the board to the bucket or back, by direction and op.",
			"route", "direction", "op"),
		BoardConflicts: cv("board_conflicts_total", "Board routes: local writes that lost to the bucket's value (refused by it, or overwritten before they were forwarded).", "route"),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "shmbus_bridge_reconnects_total",
			Help: "Reconnections to the NATS server."}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shmbus_bridge_connected",
			Help: "1 while connected to the NATS server."}),
	}
	m.reg.MustRegister(m.Messages, m.Bytes, m.Chunks, m.Acks, m.Duplicates, m.Redelivered, m.DeadLetters,
		m.Refused, m.Errors, m.BoardUpdates, m.BoardConflicts, m.Reconnects, m.Connected,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
