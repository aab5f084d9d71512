//go:build cgo && iapdebug

package ffi

import "runtime"

// maybeGC forces a collection on every handle access, so tests run with -tags iapdebug catch
// a missing runtime.KeepAlive or a Go pointer C kept (as wasmtime-go's maybe_gc does).
func maybeGC() { runtime.GC() }
