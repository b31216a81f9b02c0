package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/store"
)

// auditCommand is `paystreamctl audit`: the operator_actions audit, as
// the console's audit page shows it (ops.Audit).
func auditCommand() command {
	return command{name: "audit", summary: "list operator actions (replays, retention runs), newest first", run: auditRun}
}

func auditRun(ctx context.Context, e *env, args []string) int {
	f := newFlags(e, "audit")
	var (
		actor, action string
		before        int64
		limit         int
	)
	f.fs.StringVar(&actor, "actor", "", "only this actor's actions")
	f.fs.StringVar(&action, "action", "", "only actions of this kind: "+ops.ActionReplay+" or "+ops.ActionRetention)
	f.fs.Int64Var(&before, "before", 0, "only actions with an id below this (the next page's cursor)")
	f.fs.IntVar(&limit, "limit", 50, "at most this many")
	cfg, code, ok := f.parse(e, args, "DATABASE_URL", "DB_MAX_CONNS")
	if !ok {
		return code
	}
	if f.fs.NArg() > 0 || limit <= 0 || before < 0 {
		fmt.Fprintln(e.stderr, "paystreamctl audit: no arguments; --limit must be positive, --before not negative")
		return exitUsage
	}
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return fail(e, err)
	}
	defer pool.Close()
	page, err := ops.Audit(ctx, store.New(pool), ops.AuditQuery{Actor: actor, Action: action, Before: before, Limit: limit})
	if err != nil {
		return fail(e, err)
	}
	err = output(e, f.json, page, func(w io.Writer) {
		fmt.Fprintln(w, "ID\tAT\tACTOR\tACTION\tDRY RUN\tPUBLISHED\tDUPLICATES\tREFUSED\tFAILED\tARGUMENTS")
		for _, a := range page.Actions {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%t\t%d\t%d\t%d\t%d\t%s\n", a.ID, a.At.UTC().Format(time.RFC3339), a.Actor, a.Action,
				a.DryRun, a.Published, a.Duplicates, a.Refused, a.Failed, oneLine(strings.TrimSpace(string(a.Arguments))))
		}
		if page.Next > 0 {
			fmt.Fprintf(w, "\nmore: --before %d\n", page.Next)
		}
	})
	if err != nil {
		return fail(e, err)
	}
	return exitOK
}
