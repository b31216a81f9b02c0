package main

import (
	"runtime/debug"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestApplyGCDefault: without GOGC in the environment the worker sets its
// own target; with GOGC set, even to Go's default or off, it leaves the
// runtime's as the variable made it. The test restores the process's
// target after.
func TestApplyGCDefault(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	env := func(vars map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	}

	require.EqualValues(t, defaultGOGC, applyGCDefault(env(nil)))
	percent, ok := currentGOGC()
	require.True(t, ok)
	require.EqualValues(t, defaultGOGC, percent)
	require.Equal(t, strconv.Itoa(defaultGOGC), gogcLabel())

	debug.SetGCPercent(100)
	require.EqualValues(t, defaultGOGC, applyGCDefault(env(map[string]string{"GOGC": ""})), "an empty GOGC is no setting")

	debug.SetGCPercent(120) // as GOGC=120 would have made it at start
	require.EqualValues(t, 120, applyGCDefault(env(map[string]string{"GOGC": "120"})))
	percent, _ = currentGOGC()
	require.EqualValues(t, 120, percent, "GOGC set: the worker leaves the runtime's target alone")

	debug.SetGCPercent(100)
	require.EqualValues(t, 100, applyGCDefault(env(map[string]string{"GOGC": "100"})), "GOGC=100 is a choice too")

	debug.SetGCPercent(-1) // as GOGC=off would have made it
	require.EqualValues(t, -1, applyGCDefault(env(map[string]string{"GOGC": "off"})))
	require.Equal(t, "off", gogcLabel())
}
