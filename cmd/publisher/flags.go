package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/publish"
)

// errUsage marks errors in the command line or environment.
var errUsage = errors.New("usage")

// usageError wraps the problems of a command line so that it matches
// errUsage and prints them all.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }

func (e *usageError) Unwrap() []error { return []error{errUsage, e.err} }

// options are the parsed command line.
type options struct {
	// cfg holds the settings shared with the worker (sharedSettings); its
	// other fields are unused.
	cfg config.Config

	count      int
	rate       float64
	duplicates float64
	invalid    float64
	merchants  int
	seed       int64
	seedSet    bool
	from       string
	maxPending int
	quiet      bool
	summaryJSN bool
}

// sharedSettings are the settings of the config package's table that the
// publisher reads as the worker does, with the same flags, PAYSTREAM_*
// environment variables and rules: the NATS connection, and where requests
// go.
func sharedSettings() []string {
	return append(config.NATSSettings(), "STREAM", "SUBJECT_PREFIX")
}

// generatorFlags make no sense with --from.
var generatorFlags = [...]string{"count", "duplicates", "invalid", "merchants", "seed"}

// parseFlags parses args and the environment (for the shared settings; flags
// win) and returns every problem at once.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("publisher", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: publisher [flags]\n       publisher outbox migrate|relay [flags]\n\nPublishes generated payment requests, or JSON lines with --from, to JetStream.\n\nFlags:\n")
		fs.PrintDefaults()
	}

	fs.IntVar(&o.count, "count", 1000, "number of generated messages")
	fs.Float64Var(&o.rate, "rate", 0, "messages per second; 0 = as fast as possible")
	fs.Float64Var(&o.duplicates, "duplicates", 0, "fraction (0..1) of generated messages re-sending an earlier request under a new Nats-Msg-Id")
	fs.Float64Var(&o.invalid, "invalid", 0, "fraction (0..1) of generated messages that are invalid")
	fs.IntVar(&o.merchants, "merchants", 10, "number of merchants (m001, m002, …) of generated requests")
	fs.Int64Var(&o.seed, "seed", 0, "seed of the generated load; default: chosen at random and printed in the summary")
	fs.StringVar(&o.from, "from", "", "publish the JSON lines of `FILE` (- for standard input) instead of generated load")
	fs.IntVar(&o.maxPending, "max-pending", publish.DefaultMaxPending, "largest number of unacknowledged publishes")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&o.summaryJSN, "summary-json", false, "print the summary as one JSON object")

	// ParseSettings parses the whole command line, our flags too. Invalid
	// shared settings come back as *config.SettingError values, reported
	// below with our own problems; anything else means the command line
	// itself did not parse.
	var errs []error
	cfg, err := config.ParseSettings(fs, args, lookupEnv(getenv), sharedSettings()...)
	var settingErr *config.SettingError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return o, err
	case errors.As(err, &settingErr):
		errs = append(errs, err)
	case err != nil:
		return o, &usageError{err}
	}
	o.cfg = cfg

	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.seedSet = set["seed"]

	// The publisher has always refused a token together with a user: its
	// own flags used to send only one of them. The worker, which may face a
	// server that wants both, accepts the pair.
	if o.cfg.NATSToken != "" && o.cfg.NATSUser != "" {
		errs = append(errs, errors.New("PAYSTREAM_NATS_TOKEN (--nats-token): cannot be combined with PAYSTREAM_NATS_USER (--nats-user) in the publisher"))
	}
	if o.maxPending < 1 {
		errs = append(errs, fmt.Errorf("--max-pending %d: the max pending publishes must be at least 1", o.maxPending))
	}
	if o.count < 0 {
		errs = append(errs, fmt.Errorf("--count %d: must not be negative", o.count))
	}
	if !(o.rate >= 0) || math.IsInf(o.rate, 0) {
		errs = append(errs, fmt.Errorf("--rate %v: must be a non-negative number (0 = unlimited)", o.rate))
	}
	if o.merchants < 1 {
		errs = append(errs, fmt.Errorf("--merchants %d: must be at least 1", o.merchants))
	}
	if err := (publish.GenOptions{Duplicates: o.duplicates, Invalid: o.invalid}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--duplicates or --invalid: %w", err))
	}
	if o.from != "" {
		var both []string
		for _, name := range generatorFlags {
			if set[name] {
				both = append(both, "--"+name)
			}
		}
		if len(both) > 0 {
			errs = append(errs, fmt.Errorf("--from cannot be combined with %s, which shape generated load", strings.Join(both, ", ")))
		}
	}
	if len(errs) > 0 {
		return o, &usageError{errors.Join(errs...)}
	}
	return o, nil
}

// lookupEnv adapts getenv to config's lookup, for which an empty variable
// counts as unset anyway.
func lookupEnv(getenv func(string) string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v := getenv(k)
		return v, v != ""
	}
}
