package caddyiap

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-iap/caddy-iap/go-module/internal/ffi"
)

// Metric label values for `result`.
const (
	resultAllow = "allow"
	resultDeny  = "deny"
)

// The collectors are made once per process, so counters keep counting across config reloads
// (as reverse_proxy's are). Every config gets a new registry from its caddy.Context; each
// Provision registers the collectors with it, and a second handler in the same config finds
// them already registered and reuses what is there.
var process struct {
	once      sync.Once
	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
	engines   *engineCollector
}

func initProcessMetrics() {
	const ns, sub = "caddy", "iap"
	process.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns,
		Subsystem: sub,
		Name:      "decisions_total",
		Help:      "Requests decided by caddy-iap, by result (allow, deny) and reason code.",
	}, []string{"result", "reason"})
	process.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns,
		Subsystem: sub,
		Name:      "validation_seconds",
		Help:      "Time spent in the engine deciding one request (token validation, roles, permissions, minting).",
		// 10µs (cache hit) up to ~2.6s (a first key fetch).
		Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10),
	})
	process.engines = newEngineCollector(ns, sub)
}

// metrics is one handler's view of the collectors (those it registered, or the ones it
// found registered already).
type metrics struct {
	decisions *prometheus.CounterVec
	// allowed is decisions' allow series, looked up once: it is counted on every allowed
	// request, and a label lookup hashes its values each time.
	allowed prometheus.Counter
	latency prometheus.Observer
	engines *engineCollector
}

// newMetrics registers the caddy-iap collectors with reg (nil: not registered). The returned
// metrics always work; an error says registration failed and metrics will be missing.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	process.once.Do(initProcessMetrics)
	m := &metrics{decisions: process.decisions, latency: process.latency, engines: process.engines}
	var errs []error
	if reg != nil {
		var err error
		if m.decisions, err = registerOrReuse(reg, process.decisions); err != nil {
			errs = append(errs, err)
		}
		var latency prometheus.Histogram
		if latency, err = registerOrReuse(reg, process.latency); err != nil {
			errs = append(errs, err)
		}
		m.latency = latency
		if m.engines, err = registerOrReuse(reg, process.engines); err != nil {
			errs = append(errs, err)
		}
	}
	m.allowed = m.decisions.WithLabelValues(resultAllow, ffi.ReasonAllowed.String())
	return m, errors.Join(errs...)
}

// registerer turns a possibly nil registry (a context made outside a config load) into a
// possibly nil interface.
func registerer(r *prometheus.Registry) prometheus.Registerer {
	if r == nil {
		return nil
	}
	return r
}

// registerOrReuse registers c, or returns the collector already registered under the same
// descriptors. On any other error it returns c, still usable but not exported.
func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// decision counts one decision and how long the engine took (zero: the engine was not asked).
func (m *metrics) decision(result, reason string, took time.Duration) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(result, reason).Inc()
	if took > 0 {
		m.latency.Observe(took.Seconds())
	}
}

// allow counts one allowed request and how long the engine took.
func (m *metrics) allow(took time.Duration) {
	if m == nil {
		return
	}
	m.allowed.Inc()
	m.latency.Observe(took.Seconds())
}

// track adds an engine whose stats are reported at scrape time.
func (m *metrics) track(e engine) { m.engines.track(e) }

// untrack stops reporting e, keeping its final counts in the totals.
func (m *metrics) untrack(e engine) { m.engines.untrack(e) }

// engineCollector reports the engines' own counters (cache hits, misses and size, key fetches),
// read through the C ABI at scrape time. It sums every live engine in the process (old and
// new configs overlap during a reload) plus the final counts of engines already freed, so the
// counters never go down.
type engineCollector struct {
	mu      sync.Mutex
	live    map[engine]struct{}
	retired ffi.Stats

	cacheHits    *prometheus.Desc
	cacheMisses  *prometheus.Desc
	cacheEntries *prometheus.Desc
	keyFetches   *prometheus.Desc
}

func newEngineCollector(ns, sub string) *engineCollector {
	return &engineCollector{
		live: make(map[engine]struct{}),
		cacheHits: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "token_cache_hits_total"),
			"Verified-token cache hits.", nil, nil),
		cacheMisses: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "token_cache_misses_total"),
			"Verified-token cache misses.", nil, nil),
		cacheEntries: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "token_cache_entries"),
			"Entries in the verified-token caches now.", nil, nil),
		keyFetches: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "key_fetches_total"),
			"Issuer key-set fetches, by result (ok, error, skipped: an unknown-kid refresh refused by the cooldown).",
			[]string{"result"}, nil),
	}
}

func (c *engineCollector) track(e engine) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live[e] = struct{}{}
}

func (c *engineCollector) untrack(e engine) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.live[e]; !ok {
		return
	}
	if s, ok := e.Stats(); ok {
		s.CachedTokens = 0 // a gauge: the freed engine's cache is gone
		c.retired = c.retired.Add(s)
	}
	delete(c.live, e)
}

// Describe implements prometheus.Collector.
func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.cacheHits
	ch <- c.cacheMisses
	ch <- c.cacheEntries
	ch <- c.keyFetches
}

// Collect implements prometheus.Collector.
func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	total := c.retired
	for e := range c.live {
		if s, ok := e.Stats(); ok {
			total = total.Add(s)
		}
	}
	c.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(c.cacheHits, prometheus.CounterValue, float64(total.CacheHits))
	ch <- prometheus.MustNewConstMetric(c.cacheMisses, prometheus.CounterValue, float64(total.CacheMisses))
	ch <- prometheus.MustNewConstMetric(c.cacheEntries, prometheus.GaugeValue, float64(total.CachedTokens))
	ch <- prometheus.MustNewConstMetric(c.keyFetches, prometheus.CounterValue, float64(total.KeyFetchOK), "ok")
	ch <- prometheus.MustNewConstMetric(c.keyFetches, prometheus.CounterValue, float64(total.KeyFetchError), "error")
	ch <- prometheus.MustNewConstMetric(c.keyFetches, prometheus.CounterValue, float64(total.KeyFetchSkipped), "skipped")
}

// Interface guard
var _ prometheus.Collector = (*engineCollector)(nil)
