package main

import (
	"runtime/debug"
	"runtime/metrics"
	"strconv"
)

// defaultGOGC is the collector's target (GOGC) the worker sets when the
// environment sets none: 150 rather than Go's 100, so that the heap may
// grow to two and a half times what is live rather than two before a
// collection.
//
// The worker allocates little that lives long, but it runs hundreds of
// goroutines at once, each deep in a call (a claim, a gateway call, a
// publish), and every collection scans all their stacks. In `make bench`'s
// A/B comparison (docs/performance-history.md, seventh round), each run
// beside the other in pairs: GOGC=200 took 11–14 % off the worker's CPU per
// payment against 100 at 512 payments in flight and 11–13 % at 2,048 (20 ms
// gateway), but its peak RSS at 2,048 came to 120–153 MB (100: 110–117; the
// issue's bound is 150 MB). 150 cost about the same CPU as 200 at both
// (total CPU 0.99 of 200's at 512, worker CPU 1.02 at 2,048, within the
// host's noise) at 126–139 MB; against 100 it took 7 % off the worker's CPU
// at 512 and 6 % at 2,048 (0.927 and 0.941, in pairs). 300 and 400 saved
// more but came to 138–165 MB at 2,048.
//
// GOGC in the environment wins, as for any Go program, and GOMEMLIMIT
// applies as usual: a deployment with a tight memory limit should set it.
const defaultGOGC = 150

// applyGCDefault sets the collector's target to defaultGOGC unless the
// environment sets GOGC (even to Go's own default, or to off; a value Go
// cannot read makes the runtime use 100, and that is left alone too), and
// returns the target in force: -1 when collection is off. It changes the
// whole process, so main calls it, not run (which tests call in-process).
func applyGCDefault(lookupEnv func(string) (string, bool)) int64 {
	if v, ok := lookupEnv("GOGC"); ok && v != "" {
		percent, _ := currentGOGC()
		return percent
	}
	debug.SetGCPercent(defaultGOGC)
	return defaultGOGC
}

// currentGOGC returns the collector's target in force, as runtime/metrics
// reports it: -1 when collection is off (the runtime's uint64 of -1, as
// debug.SetGCPercent has it); false when the runtime does not report it.
func currentGOGC() (int64, bool) {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0, false
	}
	return int64(s[0].Value.Uint64()), true
}

// gogcLabel is the target in force for the start log: a percentage, "off"
// or "unknown".
func gogcLabel() string {
	switch percent, ok := currentGOGC(); {
	case !ok:
		return "unknown"
	case percent < 0:
		return "off"
	default:
		return strconv.FormatInt(percent, 10)
	}
}
