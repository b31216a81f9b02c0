// Command paystreamctl answers operators' questions about a paystream fleet
// and carries out their repairs: the fleet's status, a payment's whole story,
// the dead letters and their replay, retention.
//
// Usage:
//
//	paystreamctl <command> [subcommand] [flags]
//
// Every command reads the worker's PAYSTREAM_* settings (the same flags and
// environment variables, flags winning) for what it connects to, takes
// --json to print one JSON document on standard output instead of a table,
// and exits 0 when all is well, 1 when the fleet is degraded or an action was
// refused or failed, and 2 on a usage error (docs/contract.md §9). The
// queries and actions themselves live in package ops.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/internal/cmdwire"
	"github.com/paystream/paystream/natsconn"
)

// Exit statuses (docs/contract.md §9).
const (
	exitOK       = 0
	exitDegraded = 1 // degraded fleet, refused or failed action
	exitUsage    = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &env{
		lookupEnv: os.LookupEnv,
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		terminal:  isTerminal(os.Stderr),
		user:      os.Getenv("USER"),
	})
	stop()
	os.Exit(code)
}

// env is what the process gives a command: its environment and streams.
type env struct {
	lookupEnv func(string) (string, bool)
	stdout    io.Writer
	stderr    io.Writer
	// terminal reports whether stderr is a terminal (progress bars).
	terminal bool
	// user is $USER, the default --actor of audited actions.
	user string
}

// command is one paystreamctl command. Its name may have two words
// ("dlq replay"); run gets the arguments after the name and returns the exit
// status.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) int
}

// commands is every command, in the order help lists them.
func commands() []command {
	cmds := []command{
		{name: "status", summary: "the fleet's health: consumers, rows, dead letters, workers; exit 1 when degraded", run: status},
		{name: "payment show", summary: "a payment's whole story: row, request (masked), gateway calls, leases, dead letters", run: paymentShow},
		{name: "payments ls", summary: "list payments by status, merchant, error code, time, amount (keyset pages, --all)", run: paymentsLs},
	}
	cmds = append(cmds, dlqCommands()...)
	cmds = append(cmds, retentionCommands()...)
	cmds = append(cmds, auditCommand(), consoleCommand())
	return cmds
}

func run(ctx context.Context, args []string, e *env) int {
	cmds := commands()
	for _, c := range cmds {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && equalWords(args[:len(words)], words) {
			return c.run(ctx, e, args[len(words):])
		}
	}
	if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		usage(e.stdout, cmds)
		return exitOK
	}
	if len(args) > 0 {
		fmt.Fprintf(e.stderr, "paystreamctl: unknown command %q\n", strings.Join(args, " "))
	}
	usage(e.stderr, cmds)
	return exitUsage
}

func equalWords(a, b []string) bool {
	for i := range b {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func usage(w io.Writer, cmds []command) {
	fmt.Fprintln(w, "usage: paystreamctl <command> [flags]   (--help after a command lists its flags)")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	sorted := append([]command(nil), cmds...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, c := range sorted {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	_ = tw.Flush()
}

// flags is a command's flag set: its own flags are registered on fs before
// parse, which adds the shared settings named and --json.
type flags struct {
	fs   *flag.FlagSet
	json bool
}

func newFlags(e *env, name string) *flags {
	fs := flag.NewFlagSet("paystreamctl "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	f := &flags{fs: fs}
	fs.BoolVar(&f.json, "json", false, "print one JSON document on standard output")
	return f
}

// connectionSettings are the settings every command may need to reach the
// fleet: NATS, Postgres and the names of streams and subjects.
func connectionSettings() []string {
	return append(config.NATSSettings(), "DATABASE_URL", "DB_MAX_CONNS", "STREAM", "DLQ_STREAM",
		"RESULTS_STREAM", "CONSUMER", "SUBJECT_PREFIX")
}

// parse parses args with the settings named (connectionSettings when none)
// and reports a usage error as exitUsage: ok is false when the command
// should return code.
func (f *flags) parse(e *env, args []string, settings ...string) (cfg config.Config, code int, ok bool) {
	if settings == nil {
		settings = connectionSettings()
	}
	cfg, err := config.ParseSettings(f.fs, args, e.lookupEnv, settings...)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return cfg, exitOK, false
	case err != nil:
		fmt.Fprintf(e.stderr, "paystreamctl: %v\n", err)
		return cfg, exitUsage, false
	}
	return cfg, exitOK, true
}

// fail reports err on stderr and returns exitDegraded.
func fail(e *env, err error) int {
	fmt.Fprintf(e.stderr, "paystreamctl: %v\n", err)
	return exitDegraded
}

// output prints v as one JSON document when asJSON, else calls table with a
// tabwriter on stdout.
func output(e *env, asJSON bool, v any, table func(w io.Writer)) error {
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// openDB connects to the fleet's Postgres.
func openDB(ctx context.Context, cfg config.Config) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", "PAYSTREAM_DATABASE_URL", err)
	}
	pcfg.MaxConns = 4
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		// A database that drops connections silently must not hold an
		// operator's command until Ctrl-C (connect_timeout in the URL wins).
		pcfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return pool, nil
}

// openNATS connects to the fleet's NATS and returns its JetStream handle.
func openNATS(cfg config.Config) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := natsconn.Connect(cmdwire.NATSOptions(cfg, "paystreamctl"))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
