package caddyiap

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/caddy-iap/caddy-iap/go-module/internal/ffi"
)

// Caddy gives every config load a new registry; handlers of one config share it.
func TestMetricsAcrossHandlersAndReloads(t *testing.T) {
	reg1 := prometheus.NewPedanticRegistry()
	m1, err := newMetrics(reg1)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := newMetrics(reg1) // a second site in the same config
	if err != nil {
		t.Fatalf("second handler in one config: %v", err)
	}
	if m1.decisions != m2.decisions || m1.engines != m2.engines {
		t.Error("handlers of one config should share collectors")
	}

	reg2 := prometheus.NewPedanticRegistry() // the reloaded config
	m3, err := newMetrics(reg2)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}

	before := testutil.ToFloat64(m1.decisions.WithLabelValues(resultAllow, "allowed"))
	m1.allow(time.Microsecond) // the series every allowed request counts in
	m3.decision(resultAllow, ffi.ReasonAllowed.String(), 0)
	if got := testutil.ToFloat64(m3.decisions.WithLabelValues(resultAllow, "allowed")) - before; got != 2 {
		t.Errorf("counter did not carry across the reload: +%v", got)
	}
	for _, reg := range []*prometheus.Registry{reg1, reg2} {
		n, err := testutil.GatherAndCount(reg, "caddy_iap_decisions_total", "caddy_iap_token_cache_hits_total", "caddy_iap_key_fetches_total")
		if err != nil || n == 0 {
			t.Errorf("gather: %d %v", n, err)
		}
	}
}

// A collector of the same name registered by someone else is reused, not an error.
func TestMetricsReuseExisting(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	other := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "iap", Name: "decisions_total",
		Help: "Requests decided by caddy-iap, by result (allow, deny) and reason code.",
	}, []string{"result", "reason"})
	reg.MustRegister(other)
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if m.decisions != other {
		t.Error("the registered collector should be reused")
	}
}

func TestEngineStatsCollector(t *testing.T) {
	c := newEngineCollector("caddy", "iap")
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	old := &fakeEngine{stats: ffi.Stats{CacheHits: 10, CacheMisses: 2, KeyFetchOK: 1, CachedTokens: 9}}
	cur := &fakeEngine{stats: ffi.Stats{CacheHits: 5, KeyFetchError: 3, KeyFetchSkipped: 4, CachedTokens: 7}}
	c.track(old)
	c.track(cur)
	want := func(hits, misses, entries, ok, errs, skipped int) string {
		return strings.NewReplacer("{H}", strconv.Itoa(hits), "{M}", strconv.Itoa(misses), "{N}", strconv.Itoa(entries),
			"{O}", strconv.Itoa(ok), "{E}", strconv.Itoa(errs), "{S}", strconv.Itoa(skipped)).Replace(`
# HELP caddy_iap_key_fetches_total Issuer key-set fetches, by result (ok, error, skipped: an unknown-kid refresh refused by the cooldown).
# TYPE caddy_iap_key_fetches_total counter
caddy_iap_key_fetches_total{result="error"} {E}
caddy_iap_key_fetches_total{result="ok"} {O}
caddy_iap_key_fetches_total{result="skipped"} {S}
# HELP caddy_iap_token_cache_entries Entries in the verified-token caches now.
# TYPE caddy_iap_token_cache_entries gauge
caddy_iap_token_cache_entries {N}
# HELP caddy_iap_token_cache_hits_total Verified-token cache hits.
# TYPE caddy_iap_token_cache_hits_total counter
caddy_iap_token_cache_hits_total {H}
# HELP caddy_iap_token_cache_misses_total Verified-token cache misses.
# TYPE caddy_iap_token_cache_misses_total counter
caddy_iap_token_cache_misses_total {M}
`)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(15, 2, 16, 1, 3, 4))); err != nil {
		t.Error(err)
	}

	// The old config goes away: its counts stay in the totals, so counters never go down.
	c.untrack(old)
	old.Close()
	c.untrack(old) // idempotent
	cur.stats.CacheHits = 6
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(16, 2, 7, 1, 3, 4))); err != nil {
		t.Error(err)
	}
}
