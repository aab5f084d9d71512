package ffi

/*
#include <stdint.h>
#include <stdlib.h>
#include "caddy_iap.h"
*/
import "C"

import (
	"cmp"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// PgGateway turns verified tokens into short-lived PostgreSQL logins (rust/postgres). It uses
// an Engine for token checks and role mapping, and holds the admin connections to the
// database. Safe for concurrent use. Close frees it once
// calls in flight have returned (they hold a read lock); a cleanup frees it otherwise.
type PgGateway struct {
	mu      sync.RWMutex
	p       *C.iap_pg_gateway // nil once closed
	cleanup runtime.Cleanup
}

// NewPgGateway builds a gateway for one PostgreSQL policy (JSON, the shape of
// rust/postgres/src/config.rs) on top of engine. It does not connect to the database: a
// database that is down does not fail a config load.
func NewPgGateway(engine *Engine, policyJSON []byte) (*PgGateway, error) {
	ep := engine.handle()
	if ep == nil {
		return nil, ErrClosed
	}
	var p *C.iap_pg_gateway
	err := callNew("iap_pg_gateway_new", func(buf *C.uint8_t, n C.size_t, written *C.size_t) C.iap_result {
		return C.iap_pg_gateway_new(ep, (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(policyJSON))), C.size_t(len(policyJSON)),
			buf, n, written, &p)
	})
	runtime.KeepAlive(engine)
	runtime.KeepAlive(policyJSON)
	if err != nil || p == nil {
		return nil, cmp.Or(err, error(&Error{Op: "iap_pg_gateway_new", Code: ResultInvalidConfig}))
	}
	g := &PgGateway{p: p}
	g.cleanup = runtime.AddCleanup(g, func(p *C.iap_pg_gateway) { C.iap_pg_gateway_free(p) }, p)
	return g, nil
}

// Close frees the gateway (and its admin connections) after calls in flight have returned.
func (g *PgGateway) Close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.p == nil {
		return
	}
	g.cleanup.Stop()
	C.iap_pg_gateway_free(g.p)
	g.p = nil
}

// PgLogin is the outcome of one login: a minted credential, or a refusal.
type PgLogin struct {
	OK bool
	// Refusal: the SQLSTATE and message for the client, and the reason for the log.
	SQLState      string
	ClientMessage string
	LogReason     string
	// Credential.
	Role      string
	Password  string
	ExpiresAt time.Time
	// Deadline is when the relayed session must end; zero for no limit.
	Deadline time.Time
	Granted  []string
	Outcome  string // created, reactivated, extended, reused
	// Identity, when the token was valid (also on some refusals).
	Subject, Email, Issuer string
	Roles                  []string
}

// Login exchanges a token for a database login. user and database are the client's startup
// parameters. fresh forces a new password. Blocks for the database round trips it needs
// (none when a cached credential is reused), bounded by the policy's timeouts.
func (g *PgGateway) Login(token, user, database string, fresh, session bool) (PgLogin, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.p == nil {
		return PgLogin{}, ErrClosed
	}
	// Passed by value, so the views are call arguments: nothing to pin.
	req := C.iap_pg_login_request{
		token:    lend(token),
		user:     lend(user),
		database: lend(database),
		fresh:    C.bool(fresh),
		session:  C.bool(session),
	}
	var out *C.iap_pg_login
	res := C.iap_pg_gateway_login(g.p, req, &out)
	runtime.KeepAlive(g)
	if Result(res) != ResultOK || out == nil {
		C.iap_pg_login_free(out)
		return PgLogin{}, &Error{Op: "iap_pg_gateway_login", Code: Result(res)}
	}
	defer C.iap_pg_login_free(out) // zeroes Rust's copy of the password

	var v C.iap_pg_login_view
	C.iap_pg_login_get(out, &v)
	l := PgLogin{
		OK:            bool(v.ok),
		SQLState:      stringOf(v.sqlstate),
		ClientMessage: stringOf(v.client_message),
		LogReason:     stringOf(v.log_reason),
		Role:          stringOf(v.role),
		Password:      stringOf(v.password),
		Outcome:       stringOf(v.outcome),
		Subject:       stringOf(v.subject),
		Email:         stringOf(v.email),
		Issuer:        stringOf(v.issuer),
		Granted:       stringsOf(v.granted, v.granted_len),
		Roles:         stringsOf(v.roles, v.roles_len),
	}
	if v.expires_at != 0 {
		l.ExpiresAt = time.Unix(int64(v.expires_at), 0)
	}
	if v.session_deadline != 0 {
		l.Deadline = time.Unix(int64(v.session_deadline), 0)
	}
	return l, nil
}

// PgSweep is what one janitor pass did.
type PgSweep struct {
	Deactivated, Dropped []string
	Terminated           int
	// SkippedLocked: another gateway instance holds the janitor lock and swept instead.
	SkippedLocked bool
	// Err is the database error that stopped the pass; empty on success.
	Err string
}

// Sweep runs one janitor pass: expired managed roles are deactivated or dropped, and their
// sessions ended as the policy says.
func (g *PgGateway) Sweep() (PgSweep, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.p == nil {
		return PgSweep{}, ErrClosed
	}
	var out *C.iap_pg_sweep
	res := C.iap_pg_gateway_sweep(g.p, &out)
	runtime.KeepAlive(g)
	if Result(res) != ResultOK || out == nil {
		C.iap_pg_sweep_free(out)
		return PgSweep{}, &Error{Op: "iap_pg_gateway_sweep", Code: Result(res)}
	}
	defer C.iap_pg_sweep_free(out)
	var v C.iap_pg_sweep_view
	C.iap_pg_sweep_get(out, &v)
	return PgSweep{
		Deactivated:   stringsOf(v.deactivated, v.deactivated_len),
		Dropped:       stringsOf(v.dropped, v.dropped_len),
		Terminated:    int(v.terminated),
		SkippedLocked: bool(v.skipped_locked),
		Err:           stringOf(v.error),
	}, nil
}

// PgStats are the gateway's provisioning counters.
type PgStats struct {
	Created, Reactivated, Extended, Reused, Failed, Swept uint64
}

// Stats returns the gateway's counters; false once it is closed.
func (g *PgGateway) Stats() (PgStats, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.p == nil {
		return PgStats{}, false
	}
	var out C.iap_pg_stats
	C.iap_pg_gateway_stats(g.p, &out)
	runtime.KeepAlive(g)
	return PgStats{
		Created:     uint64(out.created),
		Reactivated: uint64(out.reactivated),
		Extended:    uint64(out.extended),
		Reused:      uint64(out.reused),
		Failed:      uint64(out.failed),
		Swept:       uint64(out.swept),
	}, true
}

// stringsOf copies a borrowed C array of strings.
func stringsOf(p *C.iap_str, n C.size_t) []string {
	views := sliceOf(p, n)
	if len(views) == 0 {
		return nil
	}
	out := make([]string, len(views))
	for i, s := range views {
		out[i] = stringOf(s)
	}
	return out
}
