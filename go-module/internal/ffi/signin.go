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
	"unsafe"
)

// SignIn is a site's browser sign-in (rust/browser): the redirect to the identity provider,
// the callback, sealed session cookies and sign-out. It uses an Engine to validate ID tokens.
// Safe for concurrent use. Close frees it once
// calls in flight have returned (they hold a read lock); a cleanup frees it otherwise.
type SignIn struct {
	mu      sync.RWMutex
	p       *C.iap_signin // nil once closed
	cleanup runtime.Cleanup
}

// NewSignIn builds a sign-in from its JSON config (rust/browser/src/signin.rs SignInConfig,
// with the client secret and cookie keys resolved) on top of engine. No network I/O.
func NewSignIn(engine *Engine, configJSON []byte) (*SignIn, error) {
	ep := engine.handle()
	if ep == nil {
		return nil, ErrClosed
	}
	var p *C.iap_signin
	err := callNew("iap_signin_new", func(buf *C.uint8_t, n C.size_t, written *C.size_t) C.iap_result {
		return C.iap_signin_new(ep, (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(configJSON))), C.size_t(len(configJSON)),
			buf, n, written, &p)
	})
	runtime.KeepAlive(engine)
	runtime.KeepAlive(configJSON)
	if err != nil || p == nil {
		return nil, cmp.Or(err, error(&Error{Op: "iap_signin_new", Code: ResultInvalidConfig}))
	}
	s := &SignIn{p: p}
	s.cleanup = runtime.AddCleanup(s, func(p *C.iap_signin) { C.iap_signin_free(p) }, p)
	return s, nil
}

// Close frees the sign-in after calls in flight have returned.
func (s *SignIn) Close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return
	}
	s.cleanup.Stop()
	C.iap_signin_free(s.p)
	s.p = nil
}

// Begin starts a sign-in for a browser that asked for returnTo: a redirect to the provider
// with a login cookie, or an error outcome when the provider cannot be reached. cookies are
// the request's Cookie values joined with "; " (abandoned sign-ins' cookies get cleared).
func (s *SignIn) Begin(returnTo, redirectURI, cookies string) (SignInOutcome, error) {
	return s.call("iap_signin_begin", func(p *C.iap_signin, out **C.iap_signin_outcome) C.iap_result {
		return C.iap_signin_begin(p, lend(returnTo), lend(redirectURI), lend(cookies), out)
	})
}

// Callback completes a sign-in from the provider's redirect (rawQuery: the callback's query
// string; cookies: the request's Cookie values joined with "; ").
func (s *SignIn) Callback(rawQuery, cookies, redirectURI string) (SignInOutcome, error) {
	return s.call("iap_signin_callback", func(p *C.iap_signin, out **C.iap_signin_outcome) C.iap_result {
		return C.iap_signin_callback(p, lend(rawQuery), lend(cookies), lend(redirectURI), out)
	})
}

// Session opens the session a request carries.
func (s *SignIn) Session(cookies string) (SignInOutcome, error) {
	return s.call("iap_signin_session", func(p *C.iap_signin, out **C.iap_signin_outcome) C.iap_result {
		return C.iap_signin_session(p, lend(cookies), out)
	})
}

// SignOut clears the session and sends the browser to the provider's end-session endpoint.
func (s *SignIn) SignOut(cookies, postLogoutURI string) (SignInOutcome, error) {
	return s.call("iap_signin_sign_out", func(p *C.iap_signin, out **C.iap_signin_outcome) C.iap_result {
		return C.iap_signin_sign_out(p, lend(cookies), lend(postLogoutURI), out)
	})
}

// call runs one iap_signin_* call and copies its outcome into Go memory. f passes its strings
// as views by value (lend): they stay alive as f's captured variables for the call.
func (s *SignIn) call(op string, f func(*C.iap_signin, **C.iap_signin_outcome) C.iap_result) (SignInOutcome, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.p == nil {
		return SignInOutcome{}, ErrClosed
	}
	var out *C.iap_signin_outcome
	res := f(s.p, &out)
	runtime.KeepAlive(s)
	if Result(res) != ResultOK || out == nil {
		C.iap_signin_outcome_free(out)
		return SignInOutcome{}, &Error{Op: op, Code: cmp.Or(Result(res), ResultNullParameter)}
	}
	defer C.iap_signin_outcome_free(out)
	var v C.iap_signin_outcome_view
	C.iap_signin_outcome_get(out, &v)
	o := SignInOutcome{
		Kind:      SignInKind(v.kind),
		Status:    int(v.status),
		Location:  stringOf(v.location),
		Message:   stringOf(v.message),
		Reason:    stringOf(v.reason),
		IDToken:   stringOf(v.id_token),
		ExpiresAt: uint64(v.expires_at),
	}
	if cs := sliceOf(v.set_cookies, v.set_cookies_len); len(cs) > 0 {
		o.SetCookies = make([]string, len(cs))
		for i, c := range cs {
			o.SetCookies[i] = stringOf(c)
		}
	}
	return o, nil
}
