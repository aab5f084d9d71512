package ffi

/*
#include <stdint.h>
#include <stdlib.h>
#include "caddy_iap.h"

// As iap_engine_decide (ffi.go): no Go pointer kept, no call back into Go.
#cgo noescape iap_cosmos_authorize
#cgo nocallback iap_cosmos_authorize
#cgo noescape iap_cosmos_decision_free
#cgo nocallback iap_cosmos_decision_free
*/
import "C"

import (
	"cmp"
	"runtime"
	"sync"
	"unsafe"
)

// CosmosGateway checks Cosmos DB REST requests against a policy and re-signs allowed ones
// for the account (rust/cosmos). It uses an Engine for token checks and role mapping, and
// holds the account key or Entra credential. Safe for concurrent use. Close frees it
// once calls in flight have returned (they hold a read lock); a cleanup frees it otherwise.
type CosmosGateway struct {
	mu      sync.RWMutex
	p       *C.iap_cosmos_gateway // nil once closed
	cleanup runtime.Cleanup
}

// NewCosmosGateway builds a gateway for one Cosmos DB policy (JSON, the shape of
// rust/cosmos/src/config.rs) on top of engine. It reads the secret the policy names and makes
// no network call.
func NewCosmosGateway(engine *Engine, policyJSON []byte) (*CosmosGateway, error) {
	ep := engine.handle()
	if ep == nil {
		return nil, ErrClosed
	}
	var p *C.iap_cosmos_gateway
	err := callNew("iap_cosmos_gateway_new", func(buf *C.uint8_t, n C.size_t, written *C.size_t) C.iap_result {
		return C.iap_cosmos_gateway_new(ep, (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(policyJSON))), C.size_t(len(policyJSON)),
			buf, n, written, &p)
	})
	runtime.KeepAlive(engine)
	runtime.KeepAlive(policyJSON)
	if err != nil || p == nil {
		return nil, cmp.Or(err, error(&Error{Op: "iap_cosmos_gateway_new", Code: ResultInvalidConfig}))
	}
	g := &CosmosGateway{p: p}
	g.cleanup = runtime.AddCleanup(g, func(p *C.iap_cosmos_gateway) { C.iap_cosmos_gateway_free(p) }, p)
	return g, nil
}

// Close frees the gateway after calls in flight have returned.
func (g *CosmosGateway) Close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.p == nil {
		return
	}
	g.cleanup.Stop()
	C.iap_cosmos_gateway_free(g.p)
	g.p = nil
}

// CosmosRequest is what the gateway needs to know about one request: raw header values
// (empty when absent) and, for a POST, the body.
type CosmosRequest struct {
	Method, EscapedPath, Authorization string
	IsQuery, ContentType, IsUpsert     string
	IsBatch                            string
	Body                               []byte
}

// CosmosDecision is the outcome of one request.
type CosmosDecision struct {
	Allowed bool
	// Refusal: HTTP status, Cosmos-shaped JSON body, and the reason for the log.
	Status    int
	Body      string
	LogReason string
	// What was asked, for the log.
	Operation string
	// Allowed: the upstream Authorization (secret: never log it) and x-ms-date values, and
	// whether the response is the account document to rewrite.
	Authorization   string
	Date            string
	AccountDocument bool
	// Allowed: the request-kind headers to send upstream as True (removed when false).
	Query, Upsert, Batch bool
	// Identity, when the token was valid.
	Subject, Email, Issuer string
	Roles                  []string
}

// Authorize decides one request. It may block once per token lifetime while the gateway
// fetches its own Entra token (bounded by the policy's timeout).
func (g *CosmosGateway) Authorize(r *CosmosRequest) (CosmosDecision, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.p == nil {
		return CosmosDecision{}, ErrClosed
	}
	// Passed by value, so the views are call arguments: nothing to pin.
	req := C.iap_cosmos_request{
		method:        lend(r.Method),
		path:          lend(r.EscapedPath),
		authorization: lend(r.Authorization),
		is_query:      lend(r.IsQuery),
		content_type:  lend(r.ContentType),
		is_upsert:     lend(r.IsUpsert),
		is_batch:      lend(r.IsBatch),
		body:          lendBytes(r.Body),
	}
	var out *C.iap_cosmos_decision
	var v C.iap_cosmos_decision_view
	res := C.iap_cosmos_authorize(g.p, req, &out, &v)
	runtime.KeepAlive(g)
	if Result(res) != ResultOK || out == nil {
		C.iap_cosmos_decision_free(out)
		return CosmosDecision{}, &Error{Op: "iap_cosmos_authorize", Code: Result(res)}
	}
	defer C.iap_cosmos_decision_free(out)

	return CosmosDecision{
		Allowed:         bool(v.allowed),
		Status:          int(v.status),
		Body:            stringOf(v.body),
		LogReason:       stringOf(v.log_reason),
		Operation:       stringOf(v.operation),
		Authorization:   stringOf(v.authorization),
		Date:            stringOf(v.date),
		AccountDocument: bool(v.account_document),
		Query:           bool(v.query),
		Upsert:          bool(v.upsert),
		Batch:           bool(v.batch),
		Subject:         stringOf(v.subject),
		Email:           stringOf(v.email),
		Issuer:          stringOf(v.issuer),
		Roles:           stringsOf(v.roles, v.roles_len),
	}, nil
}

// RewriteCosmosAccount returns the account document body with every advertised endpoint
// replaced by gatewayURL; an error when body is not an account document.
func RewriteCosmosAccount(body []byte, gatewayURL string) ([]byte, error) {
	url := lend(gatewayURL)
	if len(body) == 0 {
		return nil, &Error{Op: "iap_cosmos_rewrite_account", Code: ResultInvalidParameter}
	}
	buf := make([]byte, len(body)+8*len(gatewayURL)+1024)
	for range 2 {
		var written C.size_t
		res := C.iap_cosmos_rewrite_account(
			(*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(body))), C.size_t(len(body)),
			url,
			(*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(buf))), C.size_t(len(buf)), &written)
		runtime.KeepAlive(body)
		runtime.KeepAlive(buf)
		switch {
		case Result(res) == ResultOK:
			return buf[:written], nil
		case Result(res) == ResultBufferTooSmall && int(written) > len(buf):
			buf = make([]byte, written)
		default:
			return nil, &Error{Op: "iap_cosmos_rewrite_account", Code: Result(res)}
		}
	}
	return nil, &Error{Op: "iap_cosmos_rewrite_account", Code: ResultBufferTooSmall}
}

// lendBytes views b for one C call that takes the view by value, as lend does for strings.
func lendBytes(b []byte) C.iap_str {
	if len(b) == 0 {
		return C.iap_str{}
	}
	return C.iap_str{data: (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(b))), len: C.size_t(len(b))}
}
