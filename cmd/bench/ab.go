package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The A/B comparison (-ab-bin, -ab-env): the 0 ms line, run again and again
// with two variants of the worker in turn, against one stack. On a shared
// host whose speed drifts by tens of percent within minutes (the fifth and
// sixth rounds' notes in docs/performance-history.md), one run of each
// variant says little; runs side by side, each B compared with the A just
// before or after it, say what a change costs. The order alternates within
// pairs (A B, B A, A B, …), so that a steady drift favours neither side.

// variant is one side of the comparison: the worker binary it runs (empty:
// the stack's) and what it adds to the worker's environment.
type variant struct {
	name string // "A" or "B"
	bin  string
	env  map[string]string
}

func (v *variant) String() string {
	var parts []string
	if v.bin != "" {
		parts = append(parts, v.bin)
	} else {
		parts = append(parts, "the worker in -bin")
	}
	for _, k := range slices.Sorted(maps.Keys(v.env)) {
		parts = append(parts, k+"="+v.env[k])
	}
	return v.name + ": " + strings.Join(parts, " ")
}

// abOrder is the order of the runs: pairs A B, then B A, and so on.
func abOrder(pairs int, a, b *variant) []*variant {
	order := make([]*variant, 0, 2*pairs)
	for i := range pairs {
		if i%2 == 0 {
			order = append(order, a, b)
		} else {
			order = append(order, b, a)
		}
	}
	return order
}

// abWorkerBin resolves -ab-bin: a worker binary, or a directory holding
// one named worker.
func abWorkerBin(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("-ab-bin: %w", err)
	}
	if fi.IsDir() {
		path = filepath.Join(path, "worker")
		if fi, err = os.Stat(path); err != nil {
			return "", fmt.Errorf("-ab-bin: %w", err)
		}
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("-ab-bin: %s is not an executable file", path)
	}
	return filepath.Abs(path)
}

// abResults are the runs of an A/B comparison, in the order they ran.
type abResults struct {
	n, prefill, concurrency int
	latency                 time.Duration
	a, b                    *variant
	// inherited is what both sides take from the benchmark's environment
	// that changes the Go runtime (GOGC, GOMEMLIMIT, GODEBUG), if set.
	inherited          []string
	runs               []*line
	loadStart, loadEnd string
}

// runAB runs the comparison. It returns the runs done so far with an
// error, so that an interrupted comparison still reports them (the pairs
// complete so far).
func (b *bench) runAB(ctx context.Context) (*abResults, error) {
	a, bv := &variant{name: "A"}, &variant{name: "B", bin: b.o.abBin, env: b.o.abEnv}
	res := &abResults{n: b.o.n, prefill: b.o.prefill, concurrency: b.o.concurrency, latency: b.o.abLatency, a: a, b: bv, loadStart: loadavg()}
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GODEBUG"} {
		if v := os.Getenv(k); v != "" {
			res.inherited = append(res.inherited, k+"="+v)
		}
	}
	if err := b.prefill(ctx, b.o.prefill); err != nil {
		return res, err
	}
	rows := b.o.prefill
	for i, v := range abOrder(b.o.abPairs, a, bv) {
		l := &line{name: fmt.Sprintf("run %d: %s", i+1, v.name), kind: kindPaystream, pg: b.pgLabel, js: b.jsLabel,
			workers: 1, latency: b.o.abLatency, concurrency: b.o.concurrency, rows: rows, variant: v}
		if err := b.throughput(ctx, l); err != nil {
			res.loadEnd = loadavg()
			return res, err
		}
		res.runs = append(res.runs, l)
		rows += b.o.n
	}
	res.loadEnd = loadavg()
	return res, nil
}

// ratioStat is the median and range of B's figure over A's, pair by pair.
type ratioStat struct{ median, min, max float64 }

func (r ratioStat) String() string {
	if math.IsNaN(r.median) {
		return "-"
	}
	return fmt.Sprintf("%.3f (%.3f–%.3f)", r.median, r.min, r.max)
}

// abSummary sums up the runs: each side's medians, and B over A pair by
// pair (each run of B against the run of A it was paired with).
type abSummary struct {
	pairs int
	// medians of each side
	aPerSec, bPerSec, aWorker, bWorker, aTotal, bTotal float64
	// B over A
	perSec, worker, nats, pg, total, allocs ratioStat
}

// The figures compared, as functions of a line; pg and total are NaN when
// Postgres's CPU time could not be read (-database-url).
func perSecOf(l *line) float64 { return l.perSec }
func workerOf(l *line) float64 { return l.cost.workerUS }
func natsOf(l *line) float64   { return l.cost.natsUS }
func pgOf(l *line) float64     { return pgOr(l, l.cost.pgUS) }
func totalOf(l *line) float64  { return pgOr(l, l.cost.totalUS()) }
func allocsOf(l *line) float64 { return l.cost.allocs }

func pgOr(l *line, v float64) float64 {
	if !l.cost.pgOK {
		return math.NaN()
	}
	return v
}

// abFigures are the columns of the runs' table, in order.
var abFigures = []struct {
	name string
	of   func(*line) float64
}{
	{"payments/s", perSecOf}, {"worker µs", workerOf}, {"nats µs", natsOf},
	{"pg µs", pgOf}, {"total µs", totalOf}, {"allocs", allocsOf},
}

// summarizeAB pairs the runs as abOrder ordered them (two by two) and
// compares them; a pair without both sides (an interrupted comparison) is
// left out.
func summarizeAB(runs []*line) abSummary {
	var as, bs []*line
	for i := 0; i+1 < len(runs); i += 2 {
		x, y := runs[i], runs[i+1]
		if x.variant.name == "B" {
			x, y = y, x
		}
		if x.variant.name != "A" || y.variant.name != "B" {
			continue
		}
		as, bs = append(as, x), append(bs, y)
	}
	s := abSummary{pairs: len(as)}
	// A figure unknown (NaN) in any run, or zero on A's side (a ratio of
	// ±Inf or 0/0), makes the median or ratio unknown.
	side := func(ls []*line, of func(*line) float64) float64 {
		v := make([]float64, len(ls))
		for i, l := range ls {
			v[i] = of(l)
		}
		if !allKnown(v) {
			return math.NaN()
		}
		return median(v)
	}
	ratio := func(of func(*line) float64) ratioStat {
		v := make([]float64, len(as))
		for i := range as {
			v[i] = of(bs[i]) / of(as[i])
		}
		if len(v) == 0 || !allKnown(v) {
			return ratioStat{math.NaN(), math.NaN(), math.NaN()}
		}
		return ratioStat{median(v), slices.Min(v), slices.Max(v)}
	}
	s.aPerSec, s.bPerSec = side(as, perSecOf), side(bs, perSecOf)
	s.aWorker, s.bWorker = side(as, workerOf), side(bs, workerOf)
	s.aTotal, s.bTotal = side(as, totalOf), side(bs, totalOf)
	s.perSec, s.worker, s.nats = ratio(perSecOf), ratio(workerOf), ratio(natsOf)
	s.pg, s.total, s.allocs = ratio(pgOf), ratio(totalOf), ratio(allocsOf)
	return s
}

// median of v (the mean of the middle two for an even count); NaN for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// known reports whether a figure is a number: not NaN (unknown) or an
// infinity (a ratio to zero).
func known(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func allKnown(v []float64) bool {
	return !slices.ContainsFunc(v, func(x float64) bool { return !known(x) })
}

// num formats a figure for people: "-" when unknown.
func num(v float64, format string) string {
	if !known(v) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// key formats a figure for the last line: -1 when unknown, as the table's
// last line does.
func key(v float64, format string) string {
	if !known(v) {
		v = -1
	}
	return fmt.Sprintf(format, v)
}

func (r *abResults) print(w io.Writer) {
	fmt.Fprintf(w, "\npaystream bench, A/B: the %s ms gateway line at concurrency %d (B's environment may change it), %d payments per run, %d final rows before the first; load average %s at the start, %s at the end\n",
		ms(r.latency), r.concurrency, r.n, r.prefill, r.loadStart, r.loadEnd)
	fmt.Fprintf(w, "%s\n%s\n", r.a, r.b)
	if len(r.inherited) > 0 {
		fmt.Fprintf(w, "both sides inherit %s from this environment\n", strings.Join(r.inherited, " "))
	}
	if len(r.runs) > 0 {
		fmt.Fprintf(w, "postgres %s, jetstream %s (as in the table's headline line)\n\n", r.runs[0].pg, r.runs[0].js)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "run\t")
	for _, f := range abFigures {
		fmt.Fprintf(tw, "%s\t", f.name)
	}
	fmt.Fprintln(tw, "peak RSS MB\t")
	for _, l := range r.runs {
		fmt.Fprintf(tw, "%s\t", l.name)
		for i, f := range abFigures {
			v, format := f.of(l), "%.1f"
			if i == 0 || v >= 100 {
				format = "%.0f"
			}
			fmt.Fprintf(tw, "%s\t", num(v, format))
		}
		fmt.Fprintf(tw, "%.0f\t\n", l.rssMB)
	}
	_ = tw.Flush()
	s := summarizeAB(r.runs)
	fmt.Fprintf(w, "\nB over A, pair by pair, median (range) of %d pairs:\n", s.pairs)
	fmt.Fprintf(w, "  payments/s %s; worker µs %s; nats µs %s; pg µs %s; total µs %s; allocations %s\n",
		s.perSec, s.worker, s.nats, s.pg, s.total, s.allocs)
	fmt.Fprintf(w, "medians: A %s/s, worker %s µs, total %s µs; B %s/s, worker %s µs, total %s µs\n\n",
		num(s.aPerSec, "%.0f"), num(s.aWorker, "%.0f"), num(s.aTotal, "%.0f"),
		num(s.bPerSec, "%.0f"), num(s.bWorker, "%.0f"), num(s.bTotal, "%.0f"))
	fmt.Fprintf(w, "bench_ab pairs=%d a_per_s=%s b_per_s=%s ratio_per_s=%s a_worker_us=%s b_worker_us=%s ratio_worker_us=%s a_total_us=%s b_total_us=%s ratio_total_us=%s ratio_allocs=%s\n",
		s.pairs, key(s.aPerSec, "%.0f"), key(s.bPerSec, "%.0f"), key(s.perSec.median, "%.3f"),
		key(s.aWorker, "%.1f"), key(s.bWorker, "%.1f"), key(s.worker.median, "%.3f"),
		key(s.aTotal, "%.1f"), key(s.bTotal, "%.1f"), key(s.total.median, "%.3f"), key(s.allocs.median, "%.3f"))
}
