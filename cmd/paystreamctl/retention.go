package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// retentionCommands are the retention commands (docs/contract.md §9).
func retentionCommands() []command {
	return []command{
		{name: "retention run", summary: "delete final rows past their status's retention period (--dry-run counts)", run: retentionRun},
	}
}

// retentionSettings are what retention reads besides the connection.
func retentionSettings() []string {
	return append(connectionSettings(), "STREAM_MAX_AGE", "REPLAY_HORIZON", "RETENTION", "RETENTION_SUCCEEDED",
		"RETENTION_DECLINED", "RETENTION_FAILED", "RETENTION_BATCH", "RETENTION_PAUSE")
}

func retentionRun(ctx context.Context, e *env, args []string) int {
	f := newFlags(e, "retention run")
	var (
		dryRun bool
		actor  string
	)
	f.fs.BoolVar(&dryRun, "dry-run", false, "count the rows that would go; delete nothing")
	f.fs.StringVar(&actor, "actor", e.user, "who runs it, for the audit (default $USER)")
	cfg, code, ok := f.parse(e, args, retentionSettings()...)
	if !ok {
		return code
	}
	switch {
	case f.fs.NArg() > 0:
		fmt.Fprintf(e.stderr, "paystreamctl retention run: unexpected arguments %q\n", f.fs.Args())
		return exitUsage
	case strings.TrimSpace(actor) == "":
		fmt.Fprintln(e.stderr, "paystreamctl retention run: --actor is required (no $USER)")
		return exitUsage
	}
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return fail(e, err)
	}
	defer pool.Close()
	host, _ := os.Hostname()
	req := ops.RetentionRequest{Periods: retentionPeriods(cfg), Batch: cfg.RetentionBatch, Pause: cfg.RetentionPause,
		DryRun: dryRun, Actor: actor, Owner: "paystreamctl:" + actor + "@" + host + ":" + strconv.Itoa(os.Getpid())}
	rep, err := ops.RunRetention(ctx, store.New(pool), req, zerolog.Nop())
	if errors.Is(err, ops.ErrNoActor) {
		fmt.Fprintf(e.stderr, "paystreamctl retention run: %v\n", err)
		return exitUsage
	}
	if outErr := output(e, f.json, rep, func(w io.Writer) { retentionTable(w, rep) }); outErr != nil && err == nil {
		err = outErr
	}
	if err != nil {
		return fail(e, err)
	}
	if !rep.Ran {
		fmt.Fprintln(e.stderr, "paystreamctl retention run: refused: a worker is running retention now; try again later")
		return exitDegraded
	}
	return exitOK
}

// retentionPeriods are the periods of cfg by final status.
func retentionPeriods(cfg config.Config) map[payment.Status]time.Duration {
	periods := map[payment.Status]time.Duration{}
	for _, st := range []payment.Status{payment.StatusSucceeded, payment.StatusDeclined, payment.StatusFailed} {
		periods[st] = cfg.RetentionFor(string(st))
	}
	return periods
}

func retentionTable(w io.Writer, rep ops.RetentionRunReport) {
	verb := "DELETED"
	if rep.DryRun {
		verb = "WOULD_DELETE"
	}
	fmt.Fprintf(w, "STATUS\tPERIOD\tCOMPLETED_BEFORE\t%s\tBATCHES\n", verb)
	for _, s := range rep.Status {
		before, period := "-", s.Period
		if s.KeptForever {
			period = "for ever"
		} else {
			before = s.Before.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\n", s.Status, period, before, s.Rows, s.Batches)
	}
	kind := "retention run"
	if rep.DryRun {
		kind = "retention dry run (nothing deleted)"
	}
	if !rep.Ran {
		kind += " not run: another runner holds the job"
	}
	fmt.Fprintf(w, "\n%s by %s, operator action %d: %d rows\n", kind, rep.Actor, rep.ActionID, rep.Total)
}
