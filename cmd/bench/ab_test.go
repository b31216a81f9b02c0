package main

import (
	"bytes"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestABOrderAlternatesWithinPairs(t *testing.T) {
	a, b := &variant{name: "A"}, &variant{name: "B"}
	var names []string
	for _, v := range abOrder(3, a, b) {
		names = append(names, v.name)
	}
	require.Equal(t, []string{"A", "B", "B", "A", "A", "B"}, names)
}

// abRun is a run of the comparison with the figures the summary reads.
func abRun(v *variant, perSec, workerUS, natsUS, pgUS, allocs float64) *line {
	return &line{variant: v, perSec: perSec,
		cost: &cost{workerUS: workerUS, natsUS: natsUS, pgUS: pgUS, pgOK: true, allocs: allocs}}
}

// TestSummarizeABRatiosArePairwise: the ratios are of each B to the A of
// its own pair, whatever the order within the pair, and their median is
// not the ratio of the sides' medians: here the host's speed varies from
// pair to pair, and B is faster in one pair only.
func TestSummarizeABRatiosArePairwise(t *testing.T) {
	a, b := &variant{name: "A"}, &variant{name: "B"}
	runs := []*line{
		abRun(a, 100, 1, 1, 1, 1), abRun(b, 250, 1, 1, 1, 1), // 2.5
		abRun(b, 180, 1, 1, 1, 1), abRun(a, 200, 1, 1, 1, 1), // 0.9
		abRun(a, 300, 1, 1, 1, 1), abRun(b, 240, 1, 1, 1, 1), // 0.8
	}
	s := summarizeAB(runs)
	require.InDelta(t, 0.9, s.perSec.median, 1e-9)
	require.InDelta(t, 0.8, s.perSec.min, 1e-9)
	require.InDelta(t, 2.5, s.perSec.max, 1e-9)
	require.InDelta(t, 1.2, s.bPerSec/s.aPerSec, 1e-9, "the sides' medians say otherwise: 240 against 200")
}

// TestSummarizeABPairsEachRunWithItsNeighbour: a host that slows down from
// pair to pair does not show as a difference between the variants.
func TestSummarizeABPairsEachRunWithItsNeighbour(t *testing.T) {
	a, b := &variant{name: "A"}, &variant{name: "B"}
	// The host halves its speed from pair to pair; B is always 10 %
	// cheaper in the worker and 5 % faster.
	runs := []*line{
		abRun(a, 10000, 80, 40, 60, 69), abRun(b, 10500, 72, 40, 60, 60),
		abRun(b, 5250, 144, 80, 120, 60), abRun(a, 5000, 160, 80, 120, 69),
		abRun(a, 2500, 320, 160, 240, 69), abRun(b, 2625, 288, 160, 240, 60),
	}
	s := summarizeAB(runs)
	require.Equal(t, 3, s.pairs)
	require.InDelta(t, 1.05, s.perSec.median, 1e-9)
	require.InDelta(t, 1.05, s.perSec.min, 1e-9)
	require.InDelta(t, 1.05, s.perSec.max, 1e-9)
	require.InDelta(t, 0.9, s.worker.median, 1e-9)
	require.InDelta(t, 1.0, s.nats.median, 1e-9)
	require.InDelta(t, (0.9*80+100)/180, s.total.median, 1e-9)
	require.InDelta(t, 60.0/69, s.allocs.median, 1e-9)
	require.InDelta(t, 5000, s.aPerSec, 1e-9)
	require.InDelta(t, 5250, s.bPerSec, 1e-9)
	require.InDelta(t, 160, s.aWorker, 1e-9)

	// An interrupted comparison: the odd run out is left out.
	s = summarizeAB(runs[:5])
	require.Equal(t, 2, s.pairs)

	// Without Postgres's CPU time, pg and total are not compared.
	runs[1].cost.pgOK = false
	s = summarizeAB(runs)
	require.True(t, math.IsNaN(s.pg.median))
	require.True(t, math.IsNaN(s.total.median))
	require.Equal(t, "-", s.total.String())
	// A zero on A's side gives no ratio either, rather than an infinity.
	runs[3].cost.allocs = 0 // an A run
	require.True(t, math.IsNaN(summarizeAB(runs).allocs.median))
	runs[3].cost.allocs = 69
	require.True(t, math.IsNaN(s.bTotal), "a side's median with a run of unknown total is unknown")
	require.InDelta(t, 360, s.aTotal, 1e-9)
	require.InDelta(t, 0.9, s.worker.median, 1e-9)
}

func TestMedian(t *testing.T) {
	require.True(t, math.IsNaN(median(nil)))
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
	v := []float64{3, 1, 2}
	median(v)
	require.Equal(t, []float64{3, 1, 2}, v, "median leaves its argument's order alone")
}

func TestABWorkerBin(t *testing.T) {
	dir := t.TempDir()
	worker := filepath.Join(dir, "worker")
	require.NoError(t, os.WriteFile(worker, []byte("#!/bin/sh\n"), 0o755))
	got, err := abWorkerBin(dir)
	require.NoError(t, err)
	require.Equal(t, worker, got, "a directory means its worker")
	got, err = abWorkerBin(worker)
	require.NoError(t, err)
	require.Equal(t, worker, got)

	plain := filepath.Join(dir, "notes")
	require.NoError(t, os.WriteFile(plain, nil, 0o644))
	_, err = abWorkerBin(plain)
	require.ErrorContains(t, err, "not an executable file")
	nested := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(nested, "worker"), 0o755))
	_, err = abWorkerBin(nested)
	require.ErrorContains(t, err, "not an executable file", "a directory named worker")
	_, err = abWorkerBin(t.TempDir())
	require.Error(t, err, "a directory without a worker")
	_, err = abWorkerBin(filepath.Join(dir, "missing"))
	require.Error(t, err)
}

func TestABOptions(t *testing.T) {
	none := func(string) string { return "" }
	o, err := parseOptions(nil, none, io.Discard)
	require.NoError(t, err)
	require.False(t, o.ab())

	o, err = parseOptions([]string{"-ab-env", "GOGC=200", "-ab-env", "GODEBUG=a=1,b=2", "-ab-pairs", "3", "-ab-latency", "20ms"}, none, io.Discard)
	require.NoError(t, err)
	require.True(t, o.ab())
	require.Equal(t, map[string]string{"GOGC": "200", "GODEBUG": "a=1,b=2"}, o.abEnv)
	require.Equal(t, 3, o.abPairs)
	require.Equal(t, "20ms", o.abLatency.String())

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "worker"), []byte("#!/bin/sh\n"), 0o755))
	o, err = parseOptions([]string{"-ab-bin", dir}, none, io.Discard)
	require.NoError(t, err)
	require.True(t, o.ab())
	require.Equal(t, filepath.Join(dir, "worker"), o.abBin, "resolved before the stack starts")
	_, err = parseOptions([]string{"-ab-bin", filepath.Join(dir, "missing")}, none, io.Discard)
	require.Error(t, err)

	for _, bad := range [][]string{
		{"-ab-env", "GOGC"}, {"-ab-env", "=1"}, {"-ab-env", "A B=1"}, {"-ab-env", "X=1", "-ab-pairs", "0"}, {"-ab-env", "X=1", "-ab-latency", "-1ms"},
		{"-ab-env", "PAYSTREAM_NATS_URL=nats://elsewhere"}, {"-ab-env", "PAYSTREAM_FAKE_LATENCY=20ms"},
		{"-ab-pairs", "3"}, {"-ab-latency", "20ms"}, // without a B
		{"-ab-env", "X=1", "-two"}, {"-ab-env", "X=1", "-latency-at", "2000"}, {"-ab-env", "X=1", "-grow", "5"},
	} {
		_, err := parseOptions(bad, none, io.Discard)
		require.Error(t, err, bad)
	}
	_, err = parseOptions([]string{"-ab-env", "X=1"}, func(k string) string { return map[string]string{"BENCH_GROW": "9"}[k] }, io.Discard)
	require.ErrorContains(t, err, "BENCH_GROW")
	_, err = parseOptions([]string{"-ab-env", "PAYSTREAM_CONCURRENCY=1024", "-concurrency", "512"}, none, io.Discard)
	require.NoError(t, err, "a setting may differ between the sides")
}

func TestABPrint(t *testing.T) {
	a, b := &variant{name: "A"}, &variant{name: "B", bin: "/x/worker", env: map[string]string{"GOGC": "200", "A": "1"}}
	r := &abResults{n: 100, concurrency: 512, a: a, b: b, runs: []*line{
		abRun(a, 1000, 80, 40, 60, 69), abRun(b, 1100, 72, 40, 60, 69),
	}}
	for i, l := range r.runs {
		l.name, l.pg, l.js = []string{"run 1: A", "run 2: B"}[i], "durable", "default"
	}
	var out bytes.Buffer
	r.print(&out)
	s := out.String()
	require.Contains(t, s, "A: the worker in -bin\nB: /x/worker A=1 GOGC=200\n")
	require.Contains(t, s, "the 0.0 ms gateway line at concurrency 512")
	require.Contains(t, s, "payments/s 1.100 (1.100–1.100); worker µs 0.900 (0.900–0.900)")
	last := s[strings.LastIndex(strings.TrimRight(s, "\n"), "\n")+1:]
	require.True(t, strings.HasPrefix(last, "bench_ab pairs=1 a_per_s=1000 b_per_s=1100 ratio_per_s=1.100 a_worker_us=80.0 b_worker_us=72.0 ratio_worker_us=0.900 "), last)

	// Unknown figures: "-" for people, -1 on the last line; what both
	// sides inherit is said.
	r.runs[1].cost.pgOK = false
	r.inherited = []string{"GOGC=50"}
	out.Reset()
	r.print(&out)
	s = out.String()
	require.Contains(t, s, "both sides inherit GOGC=50 from this environment\n")
	require.Contains(t, s, "total µs -;")
	require.Contains(t, s, " b_total_us=-1.0 ratio_total_us=-1.000 ")
	require.NotContains(t, s, "NaN")
}
