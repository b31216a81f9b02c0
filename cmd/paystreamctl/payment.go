package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// paymentShow is `paystreamctl payment show <payment_id|key>`.
func paymentShow(ctx context.Context, e *env, args []string) int {
	f := newFlags(e, "payment show")
	f.fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: paystreamctl payment show [--json] <payment_id | idempotency key>")
		f.fs.PrintDefaults()
	}
	cfg, code, ok := f.parse(e, args)
	if !ok {
		return code
	}
	if f.fs.NArg() != 1 {
		f.fs.Usage()
		return exitUsage
	}
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return fail(e, err)
	}
	defer pool.Close()
	nc, js, err := openNATS(cfg)
	if err != nil {
		return fail(e, err)
	}
	defer nc.Close()
	stories, err := ops.ShowPayment(ctx, store.New(pool), ops.DeadLetters{JS: js, Stream: cfg.DLQStream, SubjectPrefix: cfg.SubjectPrefix}.ForStory(), f.fs.Arg(0))
	if errors.Is(err, ops.ErrNotFound) {
		if f.json {
			_ = output(e, true, map[string]any{"error": "not_found", "query": f.fs.Arg(0)}, nil)
		}
		return fail(e, err)
	}
	if err != nil {
		return fail(e, err)
	}
	var v any = stories[0]
	if len(stories) > 1 {
		v = stories // several keys share the payment id
	}
	if err := output(e, f.json, v, func(w io.Writer) {
		for i, s := range stories {
			if i > 0 {
				fmt.Fprintln(w)
			}
			storyTable(w, s)
		}
	}); err != nil {
		return fail(e, err)
	}
	return exitOK
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func storyTable(w io.Writer, s ops.Story) {
	tw := w.(*tabwriter.Writer)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("idempotency key", s.IdempotencyKey)
	row("payment id", s.PaymentID)
	row("merchant", s.MerchantID)
	row("customer", orDash(s.CustomerID))
	row("amount", fmt.Sprintf("%d %s (minor units)", s.AmountMinor, s.Currency))
	row("status", s.Status)
	row("attempts", fmt.Sprint(s.AttemptCount))
	row("gateway", orDash(s.Gateway))
	row("charge id", orDash(s.GatewayChargeID))
	row("error code", orDash(s.ErrorCode))
	row("ambiguous", fmt.Sprint(s.Ambiguous))
	created := s.CreatedAt
	row("created", fmtTime(&created))
	updated := s.UpdatedAt
	row("updated", fmtTime(&updated))
	row("completed", fmtTime(s.CompletedAt))
	row("lease", fmt.Sprintf("owner %s until %s stream seq %d", orDash(s.Lease.Owner), fmtTime(s.Lease.Until), s.Lease.StreamSeq))
	if s.Reconcile != nil {
		row("reconcile", fmt.Sprintf("next %s, %d tries", fmtTime(s.Reconcile.After), s.Reconcile.Tries))
	}
	row("swept", fmtTime(s.SweptAt))
	if s.Request != nil {
		row("request", s.Request.Subject+" "+strings.TrimSpace(string(s.Request.Body)))
	} else {
		row("request", "- (not kept once final)")
	}
	_ = tw.Flush()
	fmt.Fprintf(tw, "\nGATEWAY CALLS\tATTEMPT\tKIND\tWORKER\tSTARTED\tDURATION\tHTTP\tCLASS\tRESULT\tERROR CODE\tCHARGE ID\n")
	for _, a := range s.Attempts {
		http := "-"
		if a.HTTPStatus != nil {
			http = fmt.Sprint(*a.HTTPStatus)
		}
		fmt.Fprintf(tw, "#%d\t%d\t%s\t%s\t%s\t%.1fms\t%s\t%s\t%s\t%s\t%s\n", a.Seq, a.Attempt, a.Kind, a.WorkerID,
			a.StartedAt.Format(time.RFC3339Nano), a.DurationMS, http, a.Class, orDash(a.Result), orDash(a.ErrorCode), orDash(a.ChargeID))
	}
	if len(s.Attempts) == 0 {
		fmt.Fprintln(tw, "(none recorded)")
	}
	fmt.Fprintf(tw, "\nDEAD LETTERS\tREASON\tTIME\tDELIVERIES\tERROR\n")
	for _, d := range s.DeadLetters {
		fmt.Fprintf(tw, "seq %d\t%s\t%s\t%s\t%s\n", d.StreamSeq, d.Reason, d.Time.Format(time.RFC3339), orDash(d.Deliveries), d.Error)
	}
	if len(s.DeadLetters) == 0 {
		fmt.Fprintln(tw, "(none)")
	}
}

// paymentsLs is `paystreamctl payments ls`.
func paymentsLs(ctx context.Context, e *env, args []string) int {
	f := newFlags(e, "payments ls")
	var (
		status, merchant, code, since, until, after string
		byCompleted, all                            bool
		minAmount, maxAmount                        int64
		limit                                       int
	)
	f.fs.StringVar(&status, "status", "", "only this status (processing, succeeded, declined, failed, unknown)")
	f.fs.StringVar(&merchant, "merchant", "", "only this merchant_id")
	f.fs.StringVar(&code, "error-code", "", "only this error_code")
	f.fs.StringVar(&since, "since", "", "created (or, with --completed, completed) at or after: RFC 3339 time or a duration ago (1h)")
	f.fs.StringVar(&until, "until", "", "created (or completed) before: RFC 3339 time or a duration ago")
	f.fs.BoolVar(&byCompleted, "completed", false, "--since/--until bound the completion time instead of the creation time")
	f.fs.Int64Var(&minAmount, "min-amount", 0, "smallest amount_minor (0: no bound)")
	f.fs.Int64Var(&maxAmount, "max-amount", 0, "largest amount_minor (0: no bound)")
	f.fs.IntVar(&limit, "limit", 100, "rows per page")
	f.fs.StringVar(&after, "after", "", "cursor from a previous page's next")
	f.fs.BoolVar(&all, "all", false, "page through every matching row (no display cap), streaming")
	cfg, c, ok := f.parse(e, args)
	if !ok {
		return c
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "paystreamctl payments ls: "+format+"\n", a...)
		return exitUsage
	}
	if f.fs.NArg() > 0 {
		return usage("unexpected argument %q", f.fs.Arg(0))
	}
	filter := store.ListFilter{Status: payment.Status(status), MerchantID: merchant, ErrorCode: code,
		ByCompleted: byCompleted, MinAmount: minAmount, MaxAmount: maxAmount}
	switch filter.Status {
	case "", payment.StatusProcessing, payment.StatusSucceeded, payment.StatusDeclined, payment.StatusFailed, payment.StatusUnknown:
	default:
		return usage("--status %q: not a status", status)
	}
	var err error
	if filter.Since, err = parseWhen(since, time.Now()); err != nil {
		return usage("--since: %v", err)
	}
	if filter.Until, err = parseWhen(until, time.Now()); err != nil {
		return usage("--until: %v", err)
	}
	if limit < 1 || minAmount < 0 || maxAmount < 0 {
		return usage("--limit must be at least 1 and amounts not negative")
	}
	if _, err := store.ParseCursor(after); err != nil {
		return usage("--after %q: not a cursor from a listing", after)
	}
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return fail(e, err)
	}
	defer pool.Close()
	st := store.New(pool)
	if !all {
		page, err := ops.ListPayments(ctx, st, filter, after, limit)
		if err != nil {
			return fail(e, err)
		}
		if err := output(e, f.json, page, func(w io.Writer) {
			paymentsHeader(w)
			for _, r := range page.Payments {
				paymentsRow(w, r)
			}
			if page.Next != "" {
				fmt.Fprintf(w, "\nmore: --after %s\n", page.Next)
			}
		}); err != nil {
			return fail(e, err)
		}
		return exitOK
	}
	// --all: stream page after page; the JSON is still one document.
	var (
		tw    = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		first = true
		enc   = json.NewEncoder(e.stdout)
	)
	if f.json {
		fmt.Fprint(e.stdout, `{"payments":[`)
	} else {
		paymentsHeader(tw)
	}
	for {
		page, err := ops.ListPayments(ctx, st, filter, after, limit)
		if err != nil {
			if f.json {
				fmt.Fprintln(e.stdout, `],"next":"`+after+`"}`)
			}
			return fail(e, err)
		}
		for _, r := range page.Payments {
			if f.json {
				if !first {
					fmt.Fprint(e.stdout, ",")
				}
				first = false
				if err := enc.Encode(r); err != nil {
					return fail(e, err)
				}
				continue
			}
			paymentsRow(tw, r)
		}
		if !f.json {
			_ = tw.Flush()
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if f.json {
		fmt.Fprintln(e.stdout, `],"next":""}`)
	}
	return exitOK
}

func paymentsHeader(w io.Writer) {
	fmt.Fprintln(w, "CREATED\tIDEMPOTENCY KEY\tPAYMENT ID\tMERCHANT\tAMOUNT\tSTATUS\tATTEMPTS\tERROR CODE\tCHARGE ID\tCOMPLETED")
}

func paymentsRow(w io.Writer, r ops.PaymentRow) {
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d %s\t%s\t%d\t%s\t%s\t%s\n", r.CreatedAt.Format(time.RFC3339), r.IdempotencyKey,
		r.PaymentID, r.MerchantID, r.AmountMinor, r.Currency, r.Status, r.AttemptCount, orDash(r.ErrorCode),
		orDash(r.GatewayChargeID), fmtTime(r.CompletedAt))
}

// parseWhen reads an RFC 3339 time, or a duration meaning that long before
// now; "" is the zero time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration", s)
	}
	return t, nil
}
