package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/paystream/paystream/console"
	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// consoleCommand is `paystreamctl console`: the operator console in a
// browser (docs/operations.md, "The console").
func consoleCommand() command {
	return command{name: "console", summary: "serve the operator console in a browser (read-only unless --allow-actions)", run: consoleRun}
}

// consoleOptions are console's own flags.
type consoleOptions struct {
	addr          string
	allowActions  bool
	basicAuthFile string
	proxyHeader   string
	refresh       time.Duration
	rate          float64
	stuckAfter    time.Duration
	maxPending    uint64
	maxOldest     time.Duration
}

func consoleRun(ctx context.Context, e *env, args []string) int {
	f := newFlags(e, "console")
	var o consoleOptions
	f.fs.StringVar(&o.addr, "addr", "127.0.0.1:8090", "listen address of the console (host:port)")
	f.fs.BoolVar(&o.allowActions, "allow-actions", false, "offer actions (replay previews and replays); they need --basic-auth-file or --proxy-user-header")
	f.fs.StringVar(&o.basicAuthFile, "basic-auth-file", "", "file of name:bcrypt-hash lines (htpasswd -B); every page then needs a user's password")
	f.fs.StringVar(&o.proxyHeader, "proxy-user-header", "", "header in which a trusted reverse proxy names the user (such as X-Forwarded-User)")
	f.fs.DurationVar(&o.refresh, "refresh", 10*time.Second, "how often the overview reloads itself")
	f.fs.Float64Var(&o.rate, "replay-rate", 50, "publishes per second a replay form proposes")
	f.fs.DurationVar(&o.stuckAfter, "stuck-after", time.Minute, "a processing row whose lease ended longer ago is stuck")
	f.fs.Uint64Var(&o.maxPending, "max-pending", 10000, "consumer lag above which the fleet is degraded; 0 off")
	f.fs.DurationVar(&o.maxOldest, "max-oldest", 5*time.Minute, "age of the oldest unacknowledged message above which the fleet is degraded; 0 off")
	cfg, code, ok := f.parse(e, args, append(connectionSettings(), "MAX_AMOUNT_MINOR", "REPLAY_HORIZON")...)
	if !ok {
		return code
	}
	usage := func(msg string) int {
		fmt.Fprintf(e.stderr, "paystreamctl console: %s\n", msg)
		return exitUsage
	}
	switch {
	case f.fs.NArg() > 0:
		return usage(fmt.Sprintf("unexpected arguments %q", f.fs.Args()))
	case o.refresh < time.Second:
		return usage("--refresh must be at least 1s")
	case o.rate <= 0:
		return usage("--replay-rate must be positive")
	case o.basicAuthFile != "" && o.proxyHeader != "":
		return usage("--basic-auth-file and --proxy-user-header exclude each other")
	case o.allowActions && o.basicAuthFile == "" && o.proxyHeader == "":
		return usage("--allow-actions needs an identity for the audit: --basic-auth-file or --proxy-user-header")
	}
	ccfg := console.Config{AllowActions: o.allowActions, ProxyHeader: o.proxyHeader, Refresh: o.refresh, ReplayRate: o.rate}
	if o.basicAuthFile != "" {
		fh, err := os.Open(o.basicAuthFile)
		if err != nil {
			return usage(fmt.Sprintf("--basic-auth-file: %v", err))
		}
		ccfg.Users, err = console.ParseUsers(fh)
		_ = fh.Close()
		if err != nil {
			return usage(fmt.Sprintf("--basic-auth-file %s: %v", o.basicAuthFile, err))
		}
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return usage(fmt.Sprintf("--addr: %v", err))
	}
	pool, err := openDB(ctx, cfg)
	if err != nil {
		_ = ln.Close()
		return fail(e, err)
	}
	defer pool.Close()
	nc, js, err := openNATS(cfg)
	if err != nil {
		_ = ln.Close()
		return fail(e, fmt.Errorf("nats: %w", err))
	}
	defer nc.Close()
	st := store.New(pool)
	dl := ops.DeadLetters{JS: js, Stream: cfg.DLQStream, SubjectPrefix: cfg.SubjectPrefix}
	dep := &ops.Deployment{Store: st, JS: js,
		OverviewConfig: ops.OverviewConfig{StatusConfig: ops.StatusConfig{Stream: cfg.Stream, DLQStream: cfg.DLQStream,
			DLQSubjects: cfg.SubjectPrefix + ".dlq.>", StuckAfter: o.stuckAfter, MaxPending: o.maxPending, MaxOldest: o.maxOldest}},
		Replayer: ops.Replayer{DeadLetters: dl, Store: st, Horizon: cfg.ReplayHorizon,
			Limits: payment.Limits{MaxAmountMinor: cfg.MaxAmountMinor, SubjectPrefix: cfg.SubjectPrefix}},
	}
	logger := zerolog.New(e.stderr).With().Timestamp().Logger()
	srv := console.New(ccfg, dep, logger)
	mode := "read-only"
	if o.allowActions {
		mode = "actions allowed"
	}
	who := "anyone who reaches it"
	switch {
	case ccfg.Users != nil:
		who = fmt.Sprintf("%d basic-auth users", len(ccfg.Users))
	case o.proxyHeader != "":
		who = "the user in header " + o.proxyHeader
	}
	fmt.Fprintf(e.stdout, "paystream console: http://%s/ (%s; %s)\n", consoleHost(ln.Addr()), mode, who)
	if err := srv.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) {
		return fail(e, err)
	}
	return exitOK
}

// consoleHost is the address to print: a wildcard listen address is shown
// as localhost.
func consoleHost(a net.Addr) string {
	s := a.String()
	for _, any := range []string{"0.0.0.0:", "[::]:"} {
		if strings.HasPrefix(s, any) {
			return "localhost:" + strings.TrimPrefix(s, any)
		}
	}
	return s
}
