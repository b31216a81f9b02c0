package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/store"
)

// status is `paystreamctl status`: exit 1, with the reasons on one line on
// stderr, when the fleet is degraded.
func status(ctx context.Context, e *env, args []string) int {
	f := newFlags(e, "status")
	var (
		stuckAfter, window, maxOldest time.Duration
		maxPending                    uint64
	)
	f.fs.DurationVar(&stuckAfter, "stuck-after", time.Minute, "a processing row whose lease ended longer ago is stuck")
	f.fs.DurationVar(&window, "window", 5*time.Minute, "how far back outcomes and throughput are counted")
	f.fs.Uint64Var(&maxPending, "max-pending", 10000, "consumer lag (messages not yet delivered) above which the fleet is degraded; 0 off")
	f.fs.DurationVar(&maxOldest, "max-oldest", 5*time.Minute, "age of the oldest unacknowledged message above which the fleet is degraded; 0 off")
	cfg, code, ok := f.parse(e, args)
	if !ok {
		return code
	}
	if f.fs.NArg() > 0 || stuckAfter < 0 || window <= 0 || maxOldest < 0 {
		fmt.Fprintln(e.stderr, "paystreamctl status: no arguments; --window must be positive, --stuck-after and --max-oldest not negative")
		return exitUsage
	}
	// A database that does not answer is part of the status, not a reason
	// to show none: ops.Status reports the rest and says why.
	var st *store.Store
	pool, dbErr := openDB(ctx, cfg)
	if dbErr == nil {
		defer pool.Close()
		st = store.New(pool)
	}
	nc, js, err := openNATS(cfg)
	if err != nil {
		return fail(e, err)
	}
	defer nc.Close()
	rep, err := ops.Status(ctx, st, js, ops.StatusConfig{DatabaseErr: dbErr,
		Stream: cfg.Stream, DLQStream: cfg.DLQStream, DLQSubjects: cfg.SubjectPrefix + ".dlq.>",
		StuckAfter: stuckAfter, Window: window, MaxPending: maxPending, MaxOldest: maxOldest,
	})
	if err != nil {
		return fail(e, err)
	}
	if err := output(e, f.json, rep, func(w io.Writer) { statusTable(w, rep) }); err != nil {
		return fail(e, err)
	}
	if !rep.Healthy {
		fmt.Fprintf(e.stderr, "paystreamctl: degraded: %s\n", rep.Degraded())
		return exitDegraded
	}
	return exitOK
}

func statusTable(w io.Writer, r ops.StatusReport) {
	verdict := "healthy"
	if !r.Healthy {
		verdict = "DEGRADED: " + r.Degraded()
	}
	fmt.Fprintf(w, "fleet\t%s\n", verdict)
	fmt.Fprintf(w, "time\t%s\n\n", r.Time.Format(time.RFC3339))
	fmt.Fprintln(w, "CONSUMER\tPENDING\tACK PENDING\tREDELIVERED\tWAITING\tOLDEST UNACKED")
	for _, c := range r.Consumers {
		fmt.Fprintf(w, "%s/%s\t%d\t%d\t%d\t%d\t%s\n", c.Stream, c.Name, c.Pending, c.AckPending, c.Redelivered, c.Waiting,
			secs(c.OldestUnackedSeconds))
	}
	if r.DatabaseError != "" {
		fmt.Fprintf(w, "\nROWS\tunavailable: %s\n", r.DatabaseError)
	} else {
		rowsTable(w, r)
	}
	fmt.Fprintln(w, "\nDEAD LETTERS\tCOUNT")
	reasons := make([]string, 0, len(r.DeadLetters))
	for k := range r.DeadLetters {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		fmt.Fprintf(w, "%s\t%d\n", k, r.DeadLetters[k])
	}
	fmt.Fprintln(w, "\nWORKER\tREADY\tIN FLIGHT\tBREAKER\tRATE LIMIT\tLAST PULL\tVERSION\tHOST\tSTARTED")
	for _, hb := range r.Workers {
		ready := "yes"
		if !hb.Ready {
			ready = "no: " + hb.NotReady
		}
		if age, ok := r.Silent[hb.WorkerID]; ok {
			// Its record is not believed (ops.StaleAfter): say so rather
			// than repeat what it said last.
			ready = fmt.Sprintf("silent for %s (last said %s)", secs(age), ready)
		}
		rate := "unlimited"
		if hb.RateLimit > 0 {
			rate = fmt.Sprintf("%g/s", hb.RateLimit)
		}
		last := "-"
		if !hb.LastPull.IsZero() {
			last = hb.LastPull.UTC().Format(time.RFC3339)
		}
		// The worst of the worker's gateways' breakers and, with several
		// gateways, each one's: "open (a open, b closed)".
		breaker := hb.Breaker
		if len(hb.Gateways) > 1 {
			each := make([]string, len(hb.Gateways))
			for i, g := range hb.Gateways {
				each[i] = g.Gateway + " " + g.Breaker
			}
			breaker += " (" + strings.Join(each, ", ") + ")"
		}
		started := "-"
		if !hb.StartedAt.IsZero() {
			started = hb.StartedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\n", hb.WorkerID, ready, hb.InFlight, hb.Concurrency,
			breaker, rate, last, hb.Version, hb.Host, started)
	}
	if len(r.Workers) == 0 {
		fmt.Fprintln(w, "(no live worker)")
	}
	gatewaysTable(w, r)
	parts := make([]string, 0, 3)
	for _, s := range []string{"succeeded", "declined", "failed"} {
		parts = append(parts, fmt.Sprintf("%s %d", s, r.Recent.ByStatus[s]))
	}
	fmt.Fprintf(w, "\nlast %s\t%s; %.1f/s\n", secs(r.Recent.WindowSeconds), strings.Join(parts, ", "), r.Recent.PerSecond)
}

func secs(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
}

// rowsTable prints the rows by status, the stuck and the unknown ones.
func rowsTable(w io.Writer, r ops.StatusReport) {
	fmt.Fprintln(w, "\nROWS\tCOUNT")
	for _, s := range []string{"processing", "succeeded", "declined", "failed", "unknown"} {
		fmt.Fprintf(w, "%s\t%d\n", s, r.Rows.ByStatus[s])
	}
	fmt.Fprintf(w, "stuck processing (lease ended > %s)\t%d (oldest %s)\n", secs(r.Rows.StuckAfterSeconds),
		r.Rows.StuckProcessing, secs(r.Rows.OldestStuckSeconds))
	fmt.Fprintf(w, "unknown (awaiting lookup)\t%d (oldest %s)\n", r.Rows.Unknown, secs(r.Rows.OldestUnknownSeconds))
}

// gatewaysTable prints each gateway's fleet record — budget, shares and
// votes by worker, the fleet's breaker and its prober — and what each
// worker enforces (a fallback share shows there); nothing when no worker
// shares a gateway.
func gatewaysTable(w io.Writer, r ops.StatusReport) {
	if len(r.Gateways) == 0 {
		return
	}
	fmt.Fprintln(w, "\nGATEWAY\tBUDGET\tWORKERS\tSHARES\tFLEET BREAKER\tPROBING")
	for _, g := range r.Gateways {
		budget := "none"
		if g.Budget > 0 {
			budget = fmt.Sprintf("%g/s", g.Budget)
		}
		sum := 0.0
		for _, m := range g.Workers {
			sum += m.Has
		}
		state, prober := "up", "-"
		if g.Down {
			state = "down since " + g.DownSince.UTC().Format(time.RFC3339)
			if g.Probe != nil {
				prober = g.Probe.Holder
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", g.Gateway, budget, len(g.Workers), perSecond(sum, g.Budget), state, prober)
	}
	fmt.Fprintln(w, "\nWORKER\tGATEWAY\tSHARE\tWANTS\tVOTES DOWN\tENFORCES")
	for _, g := range r.Gateways {
		ids := make([]string, 0, len(g.Workers))
		for id := range g.Workers {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			m := g.Workers[id]
			enforces := "-"
			for _, hb := range r.Workers {
				for _, b := range hb.Gateways {
					if hb.WorkerID == id && b.Gateway == g.Gateway {
						parts := []string{}
						if g.Budget > 0 {
							share := fmt.Sprintf("%.4g/s", b.Share)
							if b.Fallback {
								share += " (fallback)"
							}
							parts = append(parts, share)
						}
						if b.ConcurrencyLimit >= 0 {
							parts = append(parts, fmt.Sprintf("%d in flight", b.ConcurrencyLimit))
						}
						if len(parts) > 0 {
							enforces = strings.Join(parts, ", ")
						}
					}
				}
			}
			vote := "no"
			if m.Vote {
				vote = "yes (breaker " + m.Breaker + ")"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", id, g.Gateway, perSecond(m.Has, g.Budget), perSecond(m.Want, g.Budget), vote, enforces)
		}
	}
}

// perSecond prints a rate of a gateway's budget, or "-" when the gateway
// has no fleet budget (shares mean nothing then).
func perSecond(v, budget float64) string {
	if budget <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.4g/s", v)
}
