//go:build cgo && !iapdebug

package ffi

// maybeGC does nothing outside -tags iapdebug builds.
func maybeGC() {}
