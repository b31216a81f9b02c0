package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// dlqCommands are the dead-letter commands (docs/contract.md §9).
func dlqCommands() []command {
	return []command{
		{name: "dlq ls", summary: "list dead letters (filters, counts by reason)", run: dlqLs},
		{name: "dlq show", summary: "show one dead letter: headers and masked body", run: dlqShow},
		{name: "dlq replay", summary: "re-publish dead letters on their original subjects (--dry-run plans only)", run: dlqReplay},
	}
}

// listFlag collects a repeatable flag whose values may also be
// comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// timeFlag is an RFC 3339 time or a Go duration meaning that long ago.
type timeFlag struct {
	t   time.Time
	now func() time.Time
}

func (f *timeFlag) String() string {
	if f.t.IsZero() {
		return ""
	}
	return f.t.Format(time.RFC3339)
}

func (f *timeFlag) Set(v string) error {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		f.t = t
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return errors.New("want an RFC 3339 time or a duration ago such as 2h")
	}
	f.t = f.now().Add(-d)
	return nil
}

// filterFlags are the dead-letter filters shared by ls and replay.
type filterFlags struct {
	reasons                               listFlag
	since, until                          timeFlag
	merchant, paymentID, errText, subject string
	limit                                 int
}

func (ff *filterFlags) register(fs *flag.FlagSet) {
	ff.since.now, ff.until.now = time.Now, time.Now
	fs.Var(&ff.reasons, "reason", "dead-letter reason: invalid, conflict, exhausted, gateway_rejected (repeatable, or comma-separated)")
	fs.Var(&ff.since, "since", "received at or after: RFC 3339 time or a duration ago (2h)")
	fs.Var(&ff.until, "until", "received before: RFC 3339 time or a duration ago")
	fs.StringVar(&ff.merchant, "merchant", "", "merchant_id of the body")
	fs.StringVar(&ff.paymentID, "payment", "", "payment_id or idempotency key of the body")
	fs.StringVar(&ff.errText, "error", "", "Paystream-Error contains this text (case-insensitive)")
	fs.StringVar(&ff.subject, "subject", "", "original subject")
	fs.IntVar(&ff.limit, "limit", 0, "at most this many; 0 = all (no display cap)")
}

func (ff *filterFlags) filter() (ops.DeadLetterFilter, error) {
	for _, r := range ff.reasons {
		if !slices.Contains([]string{string(payment.ReasonInvalid), string(payment.ReasonConflict),
			string(payment.ReasonExhausted), string(payment.ReasonGatewayRejected)}, r) {
			return ops.DeadLetterFilter{}, fmt.Errorf("--reason %q: must be invalid, conflict, exhausted or gateway_rejected", r)
		}
	}
	if ff.limit < 0 {
		return ops.DeadLetterFilter{}, errors.New("--limit must not be negative")
	}
	f := ops.DeadLetterFilter{Reasons: ff.reasons, Since: ff.since.t, Until: ff.until.t, MerchantID: ff.merchant,
		ErrorContains: ff.errText, OriginalSubject: ff.subject, Limit: ff.limit}
	if ff.paymentID != "" {
		f.PaymentID, f.Key = ff.paymentID, ff.paymentID
	}
	return f, nil
}

// deadLetters connects to NATS and returns the dead-letter reader and a
// close function.
func deadLetters(cfg config.Config) (ops.DeadLetters, func(), error) {
	nc, js, err := openNATS(cfg)
	if err != nil {
		return ops.DeadLetters{}, nil, fmt.Errorf("nats: %w", err)
	}
	return ops.DeadLetters{JS: js, Stream: cfg.DLQStream, SubjectPrefix: cfg.SubjectPrefix}, nc.Close, nil
}

func dlqLs(ctx context.Context, e *env, args []string) int {
	f := newFlags(e, "dlq ls")
	var ff filterFlags
	ff.register(f.fs)
	cfg, code, ok := f.parse(e, args)
	if !ok {
		return code
	}
	if f.fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "paystreamctl dlq ls: unexpected arguments %q\n", f.fs.Args())
		return exitUsage
	}
	filter, err := ff.filter()
	if err != nil {
		fmt.Fprintf(e.stderr, "paystreamctl dlq ls: %v\n", err)
		return exitUsage
	}
	dl, closeNATS, err := deadLetters(cfg)
	if err != nil {
		return fail(e, err)
	}
	defer closeNATS()
	list, err := dl.List(ctx, filter)
	if err != nil {
		return fail(e, err)
	}
	err = output(e, f.json, list, func(w io.Writer) {
		fmt.Fprintln(w, "SEQ\tRECEIVED\tREASON\tPAYMENT\tKEY\tMERCHANT\tDELIVERIES\tFLAGS\tERROR")
		for _, d := range list.Items {
			var flags []string
			if d.Redacted {
				flags = append(flags, "redacted")
			}
			if d.Truncated {
				flags = append(flags, "truncated")
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Seq, d.ReceivedAt.Format(time.RFC3339), d.Reason,
				dash(d.PaymentID), dash(d.IdempotencyKey), dash(d.MerchantID), d.Deliveries, dash(strings.Join(flags, ",")), oneLine(d.Error))
		}
		fmt.Fprintf(w, "\n%d dead letters", list.Total)
		for _, r := range sortedKeys(list.Counts) {
			fmt.Fprintf(w, "; %s %d", r, list.Counts[r])
		}
		if list.Truncated {
			fmt.Fprint(w, " (stopped at --limit)")
		}
		fmt.Fprintln(w)
	})
	if err != nil {
		return fail(e, err)
	}
	return exitOK
}

// dlqShowOutput is the JSON document of `dlq show`.
type dlqShowOutput struct {
	ops.DeadLetter
	Headers map[string][]string `json:"headers"`
}

func dlqShow(ctx context.Context, e *env, args []string) int {
	f := newFlags(e, "dlq show")
	// The sequence may come before the flags or after them.
	var pos []string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = args[:1], args[1:]
	}
	cfg, code, ok := f.parse(e, args)
	if !ok {
		return code
	}
	pos = append(pos, f.fs.Args()...)
	if len(pos) != 1 {
		fmt.Fprintln(e.stderr, "usage: paystreamctl dlq show <seq> [--json]")
		return exitUsage
	}
	seq, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil || seq == 0 {
		fmt.Fprintf(e.stderr, "paystreamctl dlq show: %q is not a dead-letter sequence\n", pos[0])
		return exitUsage
	}
	dl, closeNATS, err := deadLetters(cfg)
	if err != nil {
		return fail(e, err)
	}
	defer closeNATS()
	d, err := dl.Get(ctx, seq)
	if err != nil {
		return fail(e, err)
	}
	h, err := dl.Headers(ctx, seq)
	if err != nil {
		return fail(e, err)
	}
	out := dlqShowOutput{DeadLetter: d, Headers: h}
	err = output(e, f.json, out, func(w io.Writer) {
		fmt.Fprintf(w, "seq\t%d\nsubject\t%s\nreceived\t%s\n", d.Seq, d.Subject, d.ReceivedAt.Format(time.RFC3339Nano))
		fmt.Fprintf(w, "payment\t%s\nkey\t%s\nmerchant\t%s\nsize\t%d bytes\n", dash(d.PaymentID), dash(d.IdempotencyKey), dash(d.MerchantID), d.Size)
		fmt.Fprintln(w, "headers:")
		for _, k := range sortedKeys(h) {
			for _, v := range h[k] {
				fmt.Fprintf(w, "  %s\t%s\n", k, oneLine(v))
			}
		}
		fmt.Fprintln(w, "body (card numbers masked):")
		fmt.Fprintln(w, d.Body)
	})
	if err != nil {
		return fail(e, err)
	}
	return exitOK
}

func dlqReplay(ctx context.Context, e *env, args []string) int {
	f := newFlags(e, "dlq replay")
	var (
		ff            filterFlags
		ids           listFlag
		dryRun        bool
		chargeMissing bool
		rps           float64
		actor         string
	)
	ff.register(f.fs)
	f.fs.Var(&ids, "id", "dead-letter sequence to replay (repeatable, or comma-separated); excludes the filters")
	f.fs.BoolVar(&dryRun, "dry-run", false, "print what each replay would do; publish nothing")
	f.fs.BoolVar(&chargeMissing, "charge-missing-row", false,
		"charge dead letters whose key has no payments row (dead-lettered while the database was unreachable) instead of refusing them")
	f.fs.Float64Var(&rps, "rate", 0, "at most this many publishes per second; 0 = no limit")
	f.fs.StringVar(&actor, "actor", e.user, "who replays, for the audit (default $USER)")
	cfg, code, ok := f.parse(e, args, append(connectionSettings(), "MAX_AMOUNT_MINOR", "REPLAY_HORIZON")...)
	if !ok {
		return code
	}
	usage := func(msg string) int {
		fmt.Fprintf(e.stderr, "paystreamctl dlq replay: %s\n", msg)
		fmt.Fprintln(e.stderr, "usage: paystreamctl dlq replay (--id SEQ... | --reason R [--since T] [filters]) [--dry-run] [--rate N] --actor NAME")
		return exitUsage
	}
	filter, err := ff.filter()
	switch {
	case err != nil:
		return usage(err.Error())
	case f.fs.NArg() > 0:
		return usage(fmt.Sprintf("unexpected arguments %q", f.fs.Args()))
	case len(ids) == 0 && len(ff.reasons) == 0:
		return usage("select dead letters with --id or --reason")
	case len(ids) > 0 && (len(ff.reasons) > 0 || !ff.since.t.IsZero() || !ff.until.t.IsZero() || ff.merchant != "" ||
		ff.paymentID != "" || ff.errText != "" || ff.subject != "" || ff.limit != 0):
		return usage("--id excludes the filters")
	case rps < 0:
		return usage("--rate must not be negative")
	case strings.TrimSpace(actor) == "":
		return usage("--actor is required (no $USER)")
	}
	var seqs []uint64
	for _, id := range ids {
		seq, err := strconv.ParseUint(id, 10, 64)
		if err != nil || seq == 0 {
			return usage(fmt.Sprintf("--id %q is not a dead-letter sequence", id))
		}
		seqs = append(seqs, seq)
	}
	dl, closeNATS, err := deadLetters(cfg)
	if err != nil {
		return fail(e, err)
	}
	defer closeNATS()
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return fail(e, err)
	}
	defer pool.Close()
	tr, stopTracing, err := replayTracing(ctx, e)
	if err != nil {
		return fail(e, err)
	}
	defer stopTracing()
	r := ops.Replayer{DeadLetters: dl, Store: store.New(pool), Horizon: cfg.ReplayHorizon,
		Limits:  payment.Limits{MaxAmountMinor: cfg.MaxAmountMinor, SubjectPrefix: cfg.SubjectPrefix},
		Tracing: tr}
	req := ops.ReplayRequest{Seqs: seqs, Filter: filter, DryRun: dryRun, Rate: rps, Actor: actor,
		ChargeMissingRow: chargeMissing}
	var bar *progressbar.ProgressBar
	if e.terminal && !dryRun {
		req.Progress = func(done, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(e.stderr),
					progressbar.OptionSetDescription("replaying"), progressbar.OptionSetWidth(30),
					progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionSetSpinnerChangeInterval(0))
			}
			_ = bar.Set(done)
		}
	}
	rep, err := r.Replay(ctx, req)
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(e.stderr)
	}
	if errors.Is(err, ops.ErrNoActor) {
		return usage(err.Error())
	}
	if outErr := output(e, f.json, rep, func(w io.Writer) { replayTable(w, rep) }); outErr != nil && err == nil {
		err = outErr
	}
	if err != nil {
		return fail(e, err)
	}
	if rep.Refused > 0 || rep.Failed > 0 {
		return exitDegraded
	}
	return exitOK
}

func replayTable(w io.Writer, rep ops.ReplayReport) {
	fmt.Fprintln(w, "SEQ\tREASON\tPAYMENT\tKEY\tROW\tPLAN\tRESULT\tWHY")
	for _, it := range rep.Items {
		why := it.Why
		if it.Error != "" {
			why = it.Error
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.Seq, dash(it.Reason), dash(it.PaymentID), dash(it.IdempotencyKey),
			dash(it.RowStatus), it.Plan, it.Result, oneLine(why))
	}
	kind := "replay"
	if rep.DryRun {
		kind = "dry run (nothing published)"
	}
	fmt.Fprintf(w, "\n%s by %s, operator action %d: %d items, %d to charge; published %d, duplicates %d, refused %d, failed %d\n",
		kind, rep.Actor, rep.ActionID, len(rep.Items), rep.Charge, rep.Published, rep.Duplicates, rep.Refused, rep.Failed)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps a table cell on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
