//go:build linux

package daemon

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shmbus/shmbus"
)

// fanMetrics are the daemon's counters of subscriptions served through the
// socket, and a collector that reads every fan-out bus's subscription
// table when scraped.
type fanMetrics struct {
	msgs, bytes prometheus.Counter
	overruns    prometheus.Counter
}

func (m *metrics) registerFan(s *Server) {
	m.fan = fanMetrics{
		msgs: prometheus.NewCounter(prometheus.CounterOpts{Name: "shmbus_daemon_subscription_messages_total",
			Help: "Messages delivered to subscriptions held through the socket (SUB_RECV)."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "shmbus_daemon_subscription_bytes_total",
			Help: "Message bytes delivered to subscriptions held through the socket (SUB_RECV)."}),
		overruns: prometheus.NewCounter(prometheus.CounterOpts{Name: "shmbus_daemon_subscription_overruns_total",
			Help: "Messages lossy subscriptions held through the socket missed (reported as LAGGED)."}),
	}
	m.reg.MustRegister(m.fan.msgs, m.fan.bytes, m.fan.overruns, &fanCollector{s})
}

func (m *metrics) relayedSub(msgs, bytes int) {
	m.fan.msgs.Add(float64(msgs))
	m.fan.bytes.Add(float64(bytes))
}

// lagged counts the messages of a LAGGED reply.
func (m *metrics) lagged(lag *shmbus.LaggedError) {
	var n uint64
	for _, k := range lag.Missed {
		n += k
	}
	m.fan.overruns.Add(float64(n))
}

var (
	subLabels     = []string{"bus", "subscription", "priority"}
	descSubs      = prometheus.NewDesc("shmbus_bus_subscriptions", "Subscriptions of a fan-out bus, by kind (blocking or lossy).", []string{"bus", "kind"}, nil)
	descSubLagM   = prometheus.NewDesc("shmbus_bus_subscription_lag_messages", "Messages published after the subscription's cursor, per priority.", subLabels, nil)
	descSubLagB   = prometheus.NewDesc("shmbus_bus_subscription_lag_bytes", "Ring bytes from the subscription's cursor to the tail, per priority.", subLabels, nil)
	descSubHeld   = prometheus.NewDesc("shmbus_bus_subscription_held", "1 if a live process holds the subscription.", []string{"bus", "subscription"}, nil)
	descSubHolds  = prometheus.NewDesc("shmbus_bus_subscription_holds_back", "1 if the subscription is blocking and its cursor is at a lane's head with messages after it: producers can free nothing there until it moves.", []string{"bus", "subscription"}, nil)
	descSubsSlots = prometheus.NewDesc("shmbus_bus_subscription_slots", "Subscription slots of a fan-out bus (fixed at create).", []string{"bus"}, nil)
)

// fanCollector reads the subscriptions of every fan-out bus the daemon has
// open.
type fanCollector struct{ s *Server }

func (c *fanCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSubs, descSubLagM, descSubLagB, descSubHeld, descSubHolds, descSubsSlots} {
		ch <- d
	}
}

func (c *fanCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	flag := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, e := range c.s.listed() {
		fan, slots := e.bus.FanOut()
		if !fan {
			continue
		}
		infos, err := e.bus.Subscriptions()
		if err != nil {
			continue
		}
		gauge(descSubsSlots, float64(slots), e.name)
		blocking, lossy := 0, 0
		for _, in := range infos {
			if in.Lossy {
				lossy++
			} else {
				blocking++
			}
			for p, l := range in.Lag {
				gauge(descSubLagM, float64(l.Messages), e.name, in.Name, strconv.Itoa(p))
				gauge(descSubLagB, float64(l.Bytes), e.name, in.Name, strconv.Itoa(p))
			}
			gauge(descSubHeld, flag(in.Held), e.name, in.Name)
			gauge(descSubHolds, flag(in.HoldsBack), e.name, in.Name)
		}
		gauge(descSubs, float64(blocking), e.name, "blocking")
		gauge(descSubs, float64(lossy), e.name, "lossy")
	}
}
