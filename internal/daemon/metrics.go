//go:build linux

package daemon

import (
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the daemon's own counters, and a collector that reads the
// statistics of every bus of the directory (and every memfd bus of the
// daemon) from its segment when scraped, so they cost nothing between
// scrapes. Every labelled series whose label values are known in advance
// starts at 0, so that it exists before its first event.
type metrics struct {
	reg          *prometheus.Registry
	conns        prometheus.Gauge
	connsTotal   prometheus.Counter
	refused      *prometheus.CounterVec
	timeouts     *prometheus.CounterVec
	overBudget   prometheus.Counter
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	frameErrors  *prometheus.CounterVec
	relayedMsgs  *prometheus.CounterVec
	relayedBytes *prometheus.CounterVec
	released     prometheus.Counter
	events       *prometheus.CounterVec
	fan          fanMetrics // fanout_metrics.go
}

func newMetrics(s *Server) *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	counters := func(name, help, label string, values ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
		for _, x := range values {
			v.WithLabelValues(x)
		}
		return v
	}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shmbus_daemon_connections_open",
			Help: "Client connections open now."}),
		connsTotal: counter("shmbus_daemon_connections_total", "Client connections accepted."),
		refused: counters("shmbus_daemon_connections_refused_total",
			"Connections refused, by reason: the daemon's connection limit (limit), a user's (uid_limit), credentials that could not be read (credentials).",
			"reason", "limit", "uid_limit", "credentials"),
		timeouts: counters("shmbus_daemon_connection_timeouts_total",
			"Connections closed for a missed deadline, by kind: no HELLO in time (hello), a stalled frame (frame), idle (idle).",
			"kind", "hello", "frame", "idle"),
		overBudget: counter("shmbus_daemon_memory_refusals_total",
			"Frames and RECV replies the memory budget had no room for (answered OVERLOADED)."),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shmbus_daemon_requests_total",
			Help: "Requests answered, by type and result (OK or an error code)."}, []string{"type", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "shmbus_daemon_request_seconds",
			Help:    "Time to execute a request, waiting included.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12)}, []string{"type"}),
		frameErrors: counters("shmbus_daemon_frame_errors_total",
			"Connections closed for frames that could not be read, by kind: over the size limit (too_large), malformed (bad_frame), cut off (truncated).",
			"kind", "too_large", "bad_frame", "truncated"),
		relayedMsgs: counters("shmbus_daemon_relayed_messages_total",
			"Messages relayed through the socket, by direction: into a bus (in, SEND), out of one (out, RECV).",
			"direction", "in", "out"),
		relayedBytes: counters("shmbus_daemon_relayed_bytes_total",
			"Message bytes relayed through the socket, by direction (in: SEND, out: RECV).",
			"direction", "in", "out"),
		released: counter("shmbus_daemon_released_peers_total", "Peer slots of dead processes released."),
		events: counters("shmbus_daemon_peer_events_total",
			"Peer events observed, by kind (join, leave, crash).", "kind", "join", "leave", "crash"),
	}
	buffered := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shmbus_daemon_buffered_bytes",
		Help: "Bytes of frame buffers held for connections now (reserved from the memory budget)."},
		func() float64 { return float64(s.mem.used.Load()) })
	budget := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shmbus_daemon_memory_budget_bytes",
		Help: "The memory budget of frame buffers (--max-memory)."},
		func() float64 { return float64(s.mem.max) })
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "shmbus_build_info",
		Help: "Always 1; the labels say which daemon this is: its version, the Go version it was built with, and the protocol version it speaks.",
		ConstLabels: prometheus.Labels{"version": strings.TrimPrefix(s.cfg.Version, "shmbus "),
			"goversion": runtime.Version(), "protocol": strconv.Itoa(Version)}})
	build.Set(1)
	m.registerFan(s)
	m.reg.MustRegister(build, m.conns, m.connsTotal, m.refused, m.timeouts, m.overBudget, buffered, budget,
		m.requests, m.latency, m.frameErrors, m.relayedMsgs, m.relayedBytes, m.released, m.events,
		&busCollector{s}, &boardCollector{s}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) request(typ, result string, d time.Duration) {
	m.requests.WithLabelValues(typ, result).Inc()
	m.latency.WithLabelValues(typ).Observe(d.Seconds())
}

func (m *metrics) relayed(dir string, n int) {
	m.relayedMsgs.WithLabelValues(dir).Inc()
	m.relayedBytes.WithLabelValues(dir).Add(float64(n))
}

// MetricsHandler serves the metrics in the Prometheus text format.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}

var (
	busLabels  = []string{"bus", "priority"}
	descMsgs   = prometheus.NewDesc("shmbus_bus_messages_total", "Messages published (in) and consumed (out), per priority.", append(busLabels, "direction"), nil)
	descBytes  = prometheus.NewDesc("shmbus_bus_bytes_total", "Message bytes published (in) and consumed (out), per priority.", append(busLabels, "direction"), nil)
	descDepth  = prometheus.NewDesc("shmbus_bus_depth_bytes", "Ring bytes in use, per priority.", busLabels, nil)
	descCap    = prometheus.NewDesc("shmbus_bus_capacity_bytes", "Ring size, per priority.", busLabels, nil)
	descFull   = prometheus.NewDesc("shmbus_bus_full_total", "Times a producer found the lane full.", busLabels, nil)
	descRecov  = prometheus.NewDesc("shmbus_bus_recovered_total", "Claims of dead producers turned into padding.", busLabels, nil)
	descPSleep = prometheus.NewDesc("shmbus_bus_producer_sleeps_total", "Times a producer slept waiting for room.", busLabels, nil)
	descPWake  = prometheus.NewDesc("shmbus_bus_producer_wakes_total", "Times the consumer woke producers waiting for room.", busLabels, nil)
	descCSleep = prometheus.NewDesc("shmbus_bus_consumer_sleeps_total", "Times the consumer slept.", []string{"bus"}, nil)
	descCWake  = prometheus.NewDesc("shmbus_bus_consumer_wakes_total", "Times a producer woke the consumer.", []string{"bus"}, nil)
	descPeers  = prometheus.NewDesc("shmbus_bus_peers", "Occupied peer slots, by role and liveness.", []string{"bus", "role", "alive"}, nil)
	descWait   = prometheus.NewDesc("shmbus_bus_waiting_messages", "Messages published and not yet released, per priority, counted from the lane itself.", busLabels, nil)
)

// peerRoles are the roles of shmbus_bus_peers, each reported (0 if none).
var peerRoles = []string{"producer", "consumer", "none"}

// busCollector reads the statistics of every bus the daemon has open.
type busCollector struct{ s *Server }

func (c *busCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMsgs, descBytes, descDepth, descCap, descFull, descRecov,
		descPSleep, descPWake, descCSleep, descCWake, descPeers, descWait} {
		ch <- d
	}
}

func (c *busCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, e := range c.s.listed() {
		st, err := e.bus.Stats()
		if err != nil {
			continue
		}
		waiting, err := e.bus.Waiting()
		if err != nil {
			continue
		}
		for i, l := range st.Lanes {
			p := strconv.Itoa(i)
			counter(descMsgs, l.MsgsIn, e.name, p, "in")
			counter(descMsgs, l.MsgsOut, e.name, p, "out")
			counter(descBytes, l.BytesIn, e.name, p, "in")
			counter(descBytes, l.BytesOut, e.name, p, "out")
			gauge(descDepth, float64(l.Used()), e.name, p)
			gauge(descCap, float64(l.Capacity), e.name, p)
			counter(descFull, l.FullEvents, e.name, p)
			counter(descRecov, l.Recovered, e.name, p)
			counter(descPSleep, l.SpaceSleeps, e.name, p)
			counter(descPWake, l.SpaceWakes, e.name, p)
			gauge(descWait, float64(waiting[i].Messages), e.name, p)
		}
		counter(descCSleep, st.ConsumerSleeps, e.name)
		counter(descCWake, st.ConsumerWakes, e.name)
		count := map[[2]string]int{}
		for _, role := range peerRoles {
			for _, alive := range []string{"true", "false"} {
				count[[2]string{role, alive}] = 0
			}
		}
		for _, p := range st.Peers {
			count[[2]string{p.Role, strconv.FormatBool(p.Alive)}]++
		}
		for k, n := range count {
			gauge(descPeers, float64(n), e.name, k[0], k[1])
		}
	}
}

var (
	boardLabels     = []string{"board"}
	descBoardPuts   = prometheus.NewDesc("shmbus_board_puts_total", "Values and tombstones written (revisions taken), by every process of the board.", boardLabels, nil)
	descBoardConfl  = prometheus.NewDesc("shmbus_board_conflicts_total", "Compare-and-put calls refused for a revision that did not match, by every process of the board.", boardLabels, nil)
	descBoardRecov  = prometheus.NewDesc("shmbus_board_recoveries_total", "Key locks taken over from dead writers.", boardLabels, nil)
	descBoardSleeps = prometheus.NewDesc("shmbus_board_watcher_sleeps_total", "Times a watcher slept.", boardLabels, nil)
	descBoardWakes  = prometheus.NewDesc("shmbus_board_watcher_wakes_total", "Writes that found watchers asleep and woke them.", boardLabels, nil)
	descBoardKeys   = prometheus.NewDesc("shmbus_board_keys", "Cells bound to a key (deleted keys keep theirs).", boardLabels, nil)
	descBoardCells  = prometheus.NewDesc("shmbus_board_cells", "Keys the board can hold.", boardLabels, nil)
	descBoardWatch  = prometheus.NewDesc("shmbus_daemon_board_watches_total", "BOARD_WATCH requests the daemon served on the board (since it opened it).", boardLabels, nil)
)

// boardCollector reads the counters of every board of the directory from
// its segment, and the daemon's own count of its watches.
type boardCollector struct{ s *Server }

func (c *boardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBoardPuts, descBoardConfl, descBoardRecov, descBoardSleeps,
		descBoardWakes, descBoardKeys, descBoardCells, descBoardWatch} {
		ch <- d
	}
}

func (c *boardCollector) Collect(ch chan<- prometheus.Metric) {
	metric := func(d *prometheus.Desc, t prometheus.ValueType, v float64, board string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, board)
	}
	for _, e := range c.s.listedBoards() {
		st, err := e.board.Stats()
		if err != nil {
			continue
		}
		metric(descBoardPuts, prometheus.CounterValue, float64(st.Puts), e.name)
		metric(descBoardConfl, prometheus.CounterValue, float64(st.Conflicts), e.name)
		metric(descBoardRecov, prometheus.CounterValue, float64(st.Recoveries), e.name)
		metric(descBoardSleeps, prometheus.CounterValue, float64(st.Sleeps), e.name)
		metric(descBoardWakes, prometheus.CounterValue, float64(st.Wakes), e.name)
		metric(descBoardKeys, prometheus.GaugeValue, float64(st.Keys), e.name)
		metric(descBoardCells, prometheus.GaugeValue, float64(st.Cells), e.name)
		metric(descBoardWatch, prometheus.CounterValue, float64(e.watches.Load()), e.name)
	}
}
