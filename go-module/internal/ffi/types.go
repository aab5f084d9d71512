package ffi

import (
	"errors"
	"fmt"
)

// This file holds the plain Go side of the C ABI: the values that cross it, copied into Go
// memory. It has no cgo, so the Caddy module's request path compiles (and is tested) with
// CGO_ENABLED=0 too; only ffi.go talks to C.

// ErrClosed is returned by calls on an [Engine] after [Engine.Close]. During a config reload
// a request still in flight on the old config can hit it; the handler answers 503.
var ErrClosed = errors.New("caddy-iap engine is closed")

// Request is one HTTP request's facts, as the engine needs them.
type Request struct {
	// Method is the request method, as received.
	Method string
	// Host is the request's Host (with port, if any).
	Host string
	// Path is the escaped path (r.URL.EscapedPath()), so the engine sees %2F as sent.
	Path string
	// Token is the presented token; empty when none was presented.
	Token string
	// Session marks Token as a browser session's ID token (SignInOutcome.IDToken), checked
	// against the sign-in's client id instead of the bearer audiences.
	Session bool
}

// Header is one header the engine wants set on the upstream request.
type Header struct {
	// Name is the header name.
	Name string
	// Value is the header value.
	Value string
}

// Decision is the engine's verdict on one request, copied out of Rust memory.
type Decision struct {
	// Allowed reports whether the request may proceed to the upstream.
	Allowed bool
	// Status is the HTTP status for a denial (400, 401, 403, 503); 200 when allowed.
	Status int
	// Reason is the stable reason code.
	Reason ReasonCode
	// ReasonName is the engine's stable name for Reason ("bad_signature"), for logs and
	// metric labels; see [Decision.ReasonLabel].
	ReasonName string
	// ReasonText explains the decision for logs. It never contains token bytes.
	ReasonText string
	// WWWAuthenticate is the RFC 6750 challenge for a 401, empty otherwise.
	WWWAuthenticate string
	// Subject is the token's `sub`, when known.
	Subject string
	// Email is the token's email claim, when known.
	Email string
	// Name is the token's name claim, when known.
	Name string
	// Issuer is the token's `iss`, when known.
	Issuer string
	// Roles are the roles the identity was granted.
	Roles []string
	// SetHeaders are set on the upstream request when allowed. Names are in Go's canonical
	// header form.
	SetHeaders []Header
	// StripHeaders are the headers the engine owns: deleted from every request, allowed or not.
	StripHeaders []string
	// Kid, Alg and JTI are token metadata for logs.
	Kid, Alg, JTI string
	// CacheHit reports whether the verified-token cache answered.
	CacheHit bool
	// ExpiresAt is the token's `exp` in unix seconds, 0 if unknown.
	ExpiresAt uint64
}

// ReasonLabel names the reason for logs and metric labels: the engine's name, or the Go
// table's when the engine gave none.
func (d *Decision) ReasonLabel() string {
	if d.ReasonName != "" {
		return d.ReasonName
	}
	return d.Reason.String()
}

// Stats are the engine's counters, read at metrics scrape time.
type Stats struct {
	// CacheHits counts verified-token cache hits.
	CacheHits uint64
	// CacheMisses counts verified-token cache misses.
	CacheMisses uint64
	// KeyFetchOK counts successful key-set fetches.
	KeyFetchOK uint64
	// KeyFetchError counts failed key-set fetches.
	KeyFetchError uint64
	// KeyFetchSkipped counts unknown-kid refreshes refused by the cooldown.
	KeyFetchSkipped uint64
	// CachedTokens is the number of entries in the verified-token cache now (a gauge).
	CachedTokens uint64
}

// Add returns the sum of s and o, field by field.
func (s Stats) Add(o Stats) Stats {
	return Stats{
		CacheHits:       s.CacheHits + o.CacheHits,
		CacheMisses:     s.CacheMisses + o.CacheMisses,
		KeyFetchOK:      s.KeyFetchOK + o.KeyFetchOK,
		KeyFetchError:   s.KeyFetchError + o.KeyFetchError,
		KeyFetchSkipped: s.KeyFetchSkipped + o.KeyFetchSkipped,
		CachedTokens:    s.CachedTokens + o.CachedTokens,
	}
}

// ReasonCode is the engine's stable reason code (ReasonCode in rust/core/src/error.rs).
// Numbers are never reused; unknown numbers (from a newer engine) print as "code_<n>".
type ReasonCode uint32

// The reason codes, numbered as in the core.
const (
	ReasonAllowed             ReasonCode = 0
	ReasonMissingToken        ReasonCode = 1
	ReasonMalformedToken      ReasonCode = 2
	ReasonDisallowedAlgorithm ReasonCode = 3
	ReasonUnknownIssuer       ReasonCode = 4
	ReasonUnknownKey          ReasonCode = 5
	ReasonBadSignature        ReasonCode = 6
	ReasonBadTime             ReasonCode = 7
	ReasonAudienceMismatch    ReasonCode = 8
	ReasonBadClaims           ReasonCode = 9
	ReasonForbidden           ReasonCode = 10
	ReasonKeysUnavailable     ReasonCode = 11
	ReasonBadRequest          ReasonCode = 12
	ReasonInternal            ReasonCode = 13
)

var reasonNames = [...]string{
	ReasonAllowed:             "allowed",
	ReasonMissingToken:        "missing_token",
	ReasonMalformedToken:      "malformed_token",
	ReasonDisallowedAlgorithm: "disallowed_algorithm",
	ReasonUnknownIssuer:       "unknown_issuer",
	ReasonUnknownKey:          "unknown_key",
	ReasonBadSignature:        "bad_signature",
	ReasonBadTime:             "bad_time",
	ReasonAudienceMismatch:    "audience_mismatch",
	ReasonBadClaims:           "bad_claims",
	ReasonForbidden:           "forbidden",
	ReasonKeysUnavailable:     "keys_unavailable",
	ReasonBadRequest:          "bad_request",
	ReasonInternal:            "internal",
}

// String returns the snake_case name used in logs and metric labels (ReasonCode::as_str).
func (c ReasonCode) String() string {
	if int(c) < len(reasonNames) {
		return reasonNames[c]
	}
	return fmt.Sprintf("code_%d", uint32(c))
}

// Result is a non-OK iap_result code from the C ABI.
type Result uint32

// The iap_result codes, numbered as in rust/ffi (never renumbered).
const (
	ResultOK               Result = 0
	ResultPanic            Result = 7000
	ResultNullParameter    Result = 7001
	ResultInvalidConfig    Result = 7002
	ResultInvalidParameter Result = 7003
	ResultBufferTooSmall   Result = 7004
)

// String names the code.
func (r Result) String() string {
	switch r {
	case ResultOK:
		return "ok"
	case ResultPanic:
		return "panic in the engine"
	case ResultNullParameter:
		return "null parameter"
	case ResultInvalidConfig:
		return "invalid config"
	case ResultInvalidParameter:
		return "invalid parameter"
	case ResultBufferTooSmall:
		return "buffer too small"
	}
	return fmt.Sprintf("iap_result %d", uint32(r))
}

// Error is a failed C ABI call: the function, its result code, and the engine's message when
// it gave one.
type Error struct {
	// Op is the C function that failed.
	Op string
	// Code is its result code.
	Code Result
	// Message is the engine's explanation, if any (config errors name where and what).
	Message string
}

func (e *Error) Error() string {
	if e.Message != "" {
		return e.Op + ": " + e.Message
	}
	return e.Op + ": " + e.Code.String()
}

// SignInKind says what a sign-in outcome asks of the handler.
type SignInKind int

// The kinds of sign-in outcome (iap_signin_kind).
const (
	// SignInRedirect: redirect the browser to Location (302), setting SetCookies.
	SignInRedirect SignInKind = iota
	// SignInError: show an error page (Status, Message, a retry link to Location).
	SignInError
	// SignInActive: a live session; decide on IDToken with Request.Session set.
	SignInActive
	// SignInNone: the request carries no session.
	SignInNone
	// SignInEnded: the session cannot be used (Reason); sign in again, clearing cookies.
	SignInEnded
)

// SignInOutcome is the result of one sign-in call, copied out of Rust memory. It never holds
// a secret except IDToken, which must not be logged or forwarded.
type SignInOutcome struct {
	Kind SignInKind
	// Status is the error page's HTTP status (SignInError).
	Status int
	// Location is the redirect target, or the error page's retry link.
	Location string
	// Message is one sentence for the error page.
	Message string
	// Reason is for the log.
	Reason string
	// IDToken is the session's ID token (SignInActive). Secret.
	IDToken string
	// ExpiresAt is when the session ends (Unix seconds).
	ExpiresAt uint64
	// SetCookies are Set-Cookie header values to send, in order.
	SetCookies []string
}
