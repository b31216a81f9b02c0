package main

import (
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and a parenthesis, as postgres sets its
	// process titles.
	line := "4242 (postgres: x (y) z) S 17 4242 4242 0 -1 4194560 900 0 0 0 123 45 6 7 20 0 1 0 100 0 0\n"
	f, err := parseStat(line)
	require.NoError(t, err)
	require.Equal(t, "S", f[0])
	require.Equal(t, "17", f[1])
	require.Equal(t, []string{"123", "45", "6", "7"}, f[11:15])

	_, err = parseStat("4242 no command")
	require.Error(t, err)
	_, err = parseStat("4242 (short) S 1 2")
	require.Error(t, err)
}

func TestProcCPUOfSelf(t *testing.T) {
	own, err := procCPU(os.Getpid(), false)
	require.NoError(t, err)
	withChildren, err := procCPU(os.Getpid(), true)
	require.NoError(t, err)
	require.GreaterOrEqual(t, own, time.Duration(0))
	require.GreaterOrEqual(t, withChildren, own)
}

func TestOptionsFromEnvironment(t *testing.T) {
	env := map[string]string{"BENCH_N": "500", "BENCH_PREFILL": "0", "BENCH_GROW": "10000000"}
	o, err := parseOptions(nil, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 500, o.n)
	require.Equal(t, 0, o.prefill)
	require.Equal(t, 10_000_000, o.grow)

	o, err = parseOptions([]string{"-n", "7", "-fsync-off"}, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 7, o.n)
	require.Equal(t, 100_000, o.prefill)
	require.True(t, o.fsyncOff)

	for _, bad := range []map[string]string{{"BENCH_N": "0"}, {"BENCH_PREFILL": "-1"}, {"BENCH_GROW": "x"}} {
		_, err := parseOptions(nil, func(k string) string { return bad[k] }, io.Discard)
		require.Error(t, err, bad)
	}
}

// TestLatencyAtOption: -latency-at takes positive rates, comma-separated
// (spaces allowed) and repeatable, and refuses anything else by name.
func TestLatencyAtOption(t *testing.T) {
	none := func(string) string { return "" }
	o, err := parseOptions([]string{"-latency-at", "3000, 4500.5", "-latency-at", "6000"}, none, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []float64{3000, 4500.5, 6000}, o.latencyAt)

	o, err = parseOptions(nil, none, io.Discard)
	require.NoError(t, err)
	require.Empty(t, o.latencyAt)

	for _, bad := range []string{"", "x", "3000,", "0", "-5"} {
		_, err := parseOptions([]string{"-latency-at", bad}, none, io.Discard)
		require.ErrorContains(t, err, "latency-at", bad)
	}
}

func TestCount(t *testing.T) {
	require.Equal(t, "10M", count(10_000_000))
	require.Equal(t, "300k", count(300_000))
	require.Equal(t, "1234", count(1234))
}
