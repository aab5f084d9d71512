// Package ffi is the Caddy module's only door into the Rust engine (rust/ffi, header
// include/caddy_iap.h). It is the only package importing "C"; nothing outside it sees a C
// pointer. Conventions follow wasmtime-go: guarded handles with ptr()/Close(), a
// runtime.KeepAlive after each C call, C memory copied into Go values and freed before return,
// and Go memory handed to C only for the duration of one call.
package ffi

// All link flags live here. The Makefile builds the Rust staticlib into target/release before
// xcaddy runs; xcaddy makes replace paths absolute, so ${SRCDIR} resolves inside the repo.
// The library is named as "-l:libcaddy_iap.a" rather than "-lcaddy_iap" because cargo also
// writes libcaddy_iap.so (the crate is staticlib + cdylib) next to it, and the linker would
// prefer the shared one, leaving Caddy with a run-time dependency on it.
// CGO_CFLAGS/CGO_LDFLAGS from the environment can add search paths (-I, -L) in front.

/*
#cgo CFLAGS: -I${SRCDIR}/../../../include
#cgo linux LDFLAGS: -L${SRCDIR}/../../../target/release -l:libcaddy_iap.a -lm -ldl -lpthread
#cgo darwin LDFLAGS: ${SRCDIR}/../../../target/release/libcaddy_iap.a -lm -framework Security -framework CoreFoundation
#include <stdint.h>
#include <stdlib.h>
#include "caddy_iap.h"

// None of these keeps a Go pointer past the call or calls back into Go: the out-parameters
// and the buffer can stay on the goroutine stack.
#cgo noescape iap_engine_decide
#cgo nocallback iap_engine_decide
#cgo noescape iap_engine_decide_into
#cgo nocallback iap_engine_decide_into
#cgo noescape iap_decision_copy
#cgo nocallback iap_decision_copy
#cgo noescape iap_decision_free
#cgo nocallback iap_decision_free
*/
import "C"

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"net/textproto"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// errBufLen bounds the message iap_engine_new can write on failure.
const errBufLen = 4096

// Engine is one Rust engine, built from one config. It is safe for concurrent use.
//
// Calls take no lock (a read lock is a write to a line every core shares, on every request):
// each loads the C handle once and keeps the Engine reachable until its C call returns, and
// only the cleanup attached with runtime.AddCleanup frees the handle, once the Engine is
// unreachable, so no call in flight can see it freed. Close makes later calls return
// ErrClosed. The Caddy handler never calls it, since requests may still reach a retired config.
type Engine struct {
	p      *C.iap_engine // set at creation, freed only by the cleanup
	closed atomic.Bool
	jwks   []byte   // copy of the public JWKS, read once at creation
	owned  []string // the engine's fixed strip list, read once at creation
	// canonical holds owned's names in Go's canonical header form, index for index.
	canonical []string
}

// recordBufSize is the stack buffer Decide hands the engine. It fits a decision with an
// assertion and a handful of roles (about 800 bytes); a larger one comes back boxed.
const recordBufSize = 2048

// NewEngine builds an engine from its JSON config (rust/core/src/config.rs). The engine
// validates the config and does no network I/O here. On a config error the returned *Error
// carries the engine's message naming where and what.
func NewEngine(configJSON []byte) (*Engine, error) {
	if len(configJSON) == 0 {
		return nil, &Error{Op: "iap_engine_new", Code: ResultInvalidConfig, Message: "empty config"}
	}
	var p *C.iap_engine
	err := callNew("iap_engine_new", func(buf *C.uint8_t, n C.size_t, written *C.size_t) C.iap_result {
		return C.iap_engine_new((*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(configJSON))), C.size_t(len(configJSON)),
			buf, n, written, &p)
	})
	runtime.KeepAlive(configJSON)
	if err != nil || p == nil {
		return nil, cmp.Or(err, error(&Error{Op: "iap_engine_new", Code: ResultInvalidConfig}))
	}

	e := &Engine{p: p}
	runtime.AddCleanup(e, func(p *C.iap_engine) { C.iap_engine_free(p) }, p)

	var out C.iap_str
	res := C.iap_engine_public_jwks(e.ptr(), &out)
	if Result(res) != ResultOK {
		e.Close()
		return nil, &Error{Op: "iap_engine_public_jwks", Code: Result(res)}
	}
	// Borrowed for the engine's life; copied so nothing outside refers to it.
	if jwks := bytesOf(out); len(jwks) > 0 {
		e.jwks = jwks
	}
	if err := e.readOwnedHeaders(); err != nil {
		e.Close()
		return nil, err
	}
	runtime.KeepAlive(e)
	return e, nil
}

// handle returns the C handle, nil once closed. It stays valid while the caller holds e.
func (e *Engine) handle() *C.iap_engine {
	if e.closed.Load() {
		return nil
	}
	maybeGC()
	return e.p
}

// ptr returns the C handle of an engine known to be open.
func (e *Engine) ptr() *C.iap_engine {
	p := e.handle()
	if p == nil {
		panic("engine has been closed already")
	}
	return p
}

// Close makes later calls return ErrClosed; calls in flight finish, and the cleanup frees the
// engine once the Engine is unreachable. Closing twice, or a nil engine, is fine.
func (e *Engine) Close() {
	if e != nil {
		e.closed.Store(true)
	}
}

// PublicJWKS returns the JWKS document publishing the assertion signing keys (nil when the
// config has no assertion, or once closed). The caller must not modify it.
func (e *Engine) PublicJWKS() []byte {
	if e.closed.Load() {
		return nil
	}
	return e.jwks
}

// Stats returns the engine's counters; false once the engine is closed.
func (e *Engine) Stats() (Stats, bool) {
	p := e.handle()
	if p == nil {
		return Stats{}, false
	}
	var out C.iap_engine_stats
	C.iap_engine_stats_get(p, &out)
	runtime.KeepAlive(e)
	return Stats{
		CacheHits:       uint64(out.cache_hits),
		CacheMisses:     uint64(out.cache_misses),
		KeyFetchOK:      uint64(out.key_fetch_ok),
		KeyFetchError:   uint64(out.key_fetch_error),
		KeyFetchSkipped: uint64(out.key_fetch_skipped),
		CachedTokens:    uint64(out.cached_tokens),
	}, true
}

// Decide runs one request through the engine. The request's strings are lent to C without
// copying; the engine decides and copies the decision into a Go buffer in the same C call,
// and the decision's strings share one copy of that buffer: one cgo call, nothing to free.
func (e *Engine) Decide(req Request) (Decision, error) {
	var stack [recordBufSize]byte // stays on the stack: the C call is noescape
	return e.decide(req, stack[:])
}

// decide is Decide with the buffer the engine copies the decision into; a decision too large
// for it comes back boxed, and is copied out again into a buffer of its size, then freed.
func (e *Engine) decide(req Request, buf []byte) (Decision, error) {
	p := e.handle()
	if p == nil {
		return Decision{}, ErrClosed
	}

	// Passed by value, so the string views are call arguments: nothing to pin.
	creq := C.iap_request{
		method:  lend(req.Method),
		host:    lend(req.Host),
		path:    lend(req.Path),
		token:   lend(req.Token),
		session: C.bool(req.Session),
	}
	var rec C.iap_decision_record
	var boxed *C.iap_decision
	res := C.iap_engine_decide_into(p, creq, (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(buf))),
		C.size_t(len(buf)), &rec, &boxed)
	runtime.KeepAlive(e)
	if Result(res) != ResultOK {
		return Decision{}, &Error{Op: "iap_engine_decide_into", Code: Result(res)}
	}
	if boxed == nil {
		// One allocation of the exact size, which the decision's strings share.
		return e.decisionOfRecord(&rec, bytes.Clone(buf[:rec.len])), nil
	}
	// Too large for buf: the engine kept it boxed. Copy it out into a buffer of its size.
	defer C.iap_decision_free(boxed)
	exact := make([]byte, rec.len)
	res = C.iap_decision_copy(boxed, (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(exact))), C.size_t(len(exact)), &rec)
	if Result(res) != ResultOK || int(rec.len) != len(exact) {
		return Decision{}, &Error{Op: "iap_decision_copy", Code: Result(res)}
	}
	return e.decisionOfRecord(&rec, exact), nil
}

// decisionOfRecord reads a decision copied by iap_engine_decide_into or iap_decision_copy. Its strings share buf,
// which nothing writes again. A record that does not parse (an engine bug) is a refusal.
func (e *Engine) decisionOfRecord(rec *C.iap_decision_record, buf []byte) Decision {
	r := recordReader{rest: buf}
	// Fields in the record's order: Go makes the calls left to right.
	reasonName, reasonText := r.next(), r.next()
	d := Decision{
		Allowed:         bool(rec.allowed),
		Status:          int(rec.status),
		Reason:          ReasonCode(rec.reason_code),
		ReasonText:      reasonText,
		WWWAuthenticate: r.next(),
		Subject:         r.next(),
		Email:           r.next(),
		Name:            r.next(),
		Issuer:          r.next(),
		Kid:             r.next(),
		Alg:             r.next(),
		JTI:             r.next(),
		CacheHit:        bool(rec.cache_hit),
		ExpiresAt:       uint64(rec.expires_at),
		StripHeaders:    e.canonical,
	}
	if int(rec.reason_code) >= len(reasonNames) {
		d.ReasonName = reasonName
	}
	// Each string takes at least its 4-byte length: counts beyond that are not believed.
	if n := int(rec.roles_len); n > 0 && r.room(n) {
		d.Roles = make([]string, n)
		for i := range d.Roles {
			d.Roles[i] = r.next()
		}
	}
	if n := int(rec.set_headers_len); n > 0 && r.room(2*n) {
		d.SetHeaders = make([]Header, n)
		for i := range d.SetHeaders {
			d.SetHeaders[i] = Header{Name: e.ownedName(r.next()), Value: r.next()}
		}
	}
	if r.bad || len(r.rest) != 0 {
		return Decision{Status: 500, Reason: ReasonInternal, ReasonText: "unreadable decision record",
			StripHeaders: e.canonical}
	}
	return d
}

// recordReader reads the strings of a decision record's buffer: each a 4-byte length in
// native byte order, then its bytes.
type recordReader struct {
	rest []byte
	bad  bool
}

// room reports whether n more strings could fit in what is left, marking the record bad if not.
func (r *recordReader) room(n int) bool {
	if n > len(r.rest)/4 {
		r.bad = true
	}
	return !r.bad
}

func (r *recordReader) next() string {
	if len(r.rest) < 4 {
		r.bad = true
		return ""
	}
	n := int(binary.NativeEndian.Uint32(r.rest))
	r.rest = r.rest[4:]
	if n > len(r.rest) {
		r.bad = true
		return ""
	}
	s := r.rest[:n]
	r.rest = r.rest[n:]
	if n == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(s), n)
}

// readOwnedHeaders copies the engine's strip list, which is the same in every decision, from
// a decision on an empty request (no token: a denial, decided without any I/O).
func (e *Engine) readOwnedHeaders() error {
	var cdec *C.iap_decision
	var v C.iap_decision_view
	if res := C.iap_engine_decide(e.ptr(), C.iap_request{}, &cdec, &v); Result(res) != ResultOK || cdec == nil {
		C.iap_decision_free(cdec)
		return &Error{Op: "iap_engine_decide", Code: Result(res)}
	}
	defer C.iap_decision_free(cdec)
	hs := sliceOf(v.strip_headers, v.strip_headers_len)
	e.owned = make([]string, len(hs))
	e.canonical = make([]string, len(hs))
	for i, h := range hs {
		e.owned[i] = stringOf(h)
		e.canonical[i] = textproto.CanonicalMIMEHeaderKey(e.owned[i])
	}
	return nil
}

// OwnedHeaders returns the headers the engine owns (its strip list), in Go's canonical form
// (so they index an http.Header directly): client-sent copies must be removed from every
// request. Fixed for the engine's life; callers must not modify it.
func (e *Engine) OwnedHeaders() []string {
	return e.canonical
}

// ownedName returns the canonical form of a header name the engine sets, from the strip list
// when it is there (always, for the engine's own headers).
func (e *Engine) ownedName(name string) string {
	for i, o := range e.owned {
		if o == name {
			return e.canonical[i]
		}
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// GenerateSigningKey makes a new assertion signing key for alg ("ES256" or "EdDSA") and
// returns it as base64 PKCS#8. The result is secret: store it, never log it.
func GenerateSigningKey(alg string) (string, error) {
	buf := make([]byte, 1024)
	for range 2 {
		var written C.size_t
		res := C.iap_generate_signing_key(
			(*C.uint8_t)(unsafe.Pointer(unsafe.StringData(alg))), C.size_t(len(alg)),
			(*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(buf))), C.size_t(len(buf)), &written,
		)
		runtime.KeepAlive(alg)
		runtime.KeepAlive(buf)
		switch {
		case Result(res) == ResultOK && int(written) <= len(buf):
			key := string(buf[:written])
			clear(buf)
			return key, nil
		case Result(res) == ResultBufferTooSmall && int(written) > len(buf):
			buf = make([]byte, int(written))
		default:
			return "", &Error{Op: "iap_generate_signing_key", Code: Result(res), Message: "alg " + alg}
		}
	}
	return "", &Error{Op: "iap_generate_signing_key", Code: ResultBufferTooSmall}
}

// Version returns the engine library's version string.
func Version() string {
	return C.GoString(C.iap_version())
}

// callNew runs one iap_*_new call with an error buffer, and turns a refusal into an *Error
// carrying the message Rust wrote.
func callNew(op string, call func(buf *C.uint8_t, n C.size_t, written *C.size_t) C.iap_result) error {
	errBuf := make([]byte, errBufLen)
	var written C.size_t
	res := call((*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(errBuf))), C.size_t(len(errBuf)), &written)
	runtime.KeepAlive(errBuf)
	if Result(res) != ResultOK {
		n := min(int(written), len(errBuf))
		return &Error{Op: op, Code: Result(res), Message: string(errBuf[:n])}
	}
	return nil
}

// lend views s's bytes for one C call that takes the view by value (alone or in a struct).
// The bytes hold no Go pointers, so cgo lets C read them for the call without pinning, and
// the view, being a call argument, keeps them alive until the call returns.
func lend(s string) C.iap_str {
	if len(s) == 0 {
		return C.iap_str{}
	}
	return C.iap_str{data: (*C.uint8_t)(unsafe.Pointer(unsafe.StringData(s))), len: C.size_t(len(s))}
}

// bytesOf copies a borrowed C byte view into Go memory.
func bytesOf(s C.iap_str) []byte {
	if s.data == nil || s.len == 0 {
		return nil
	}
	return C.GoBytes(unsafe.Pointer(s.data), C.int(s.len))
}

// stringOf copies a borrowed C byte view into a Go string.
func stringOf(s C.iap_str) string {
	if s.data == nil || s.len == 0 {
		return ""
	}
	return string(unsafe.Slice((*byte)(unsafe.Pointer(s.data)), int(s.len)))
}

// sliceOf views a borrowed C array; the caller copies what it keeps before the owner is freed.
func sliceOf[T any](p *T, n C.size_t) []T {
	if p == nil || n == 0 {
		return nil
	}
	return unsafe.Slice(p, int(n))
}
