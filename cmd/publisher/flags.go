package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"strings"

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
	natsURL       string
	natsCreds     string
	natsUser      string
	natsPassword  string
	natsToken     string
	subjectPrefix string
	stream        string

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

// sharedEnv maps the flags shared with the worker to their environment
// variables (docs/contract.md §8).
var sharedEnv = [...]struct{ flag, env string }{
	{"nats-url", "PAYSTREAM_NATS_URL"},
	{"nats-creds", "PAYSTREAM_NATS_CREDS"},
	{"nats-user", "PAYSTREAM_NATS_USER"},
	{"nats-password", "PAYSTREAM_NATS_PASSWORD"},
	{"nats-token", "PAYSTREAM_NATS_TOKEN"},
	{"subject-prefix", "PAYSTREAM_SUBJECT_PREFIX"},
	{"stream", "PAYSTREAM_STREAM"},
}

// generatorFlags make no sense with --from.
var generatorFlags = [...]string{"count", "duplicates", "invalid", "merchants", "seed"}

// parseFlags parses args, then the environment for shared flags not given,
// and returns every problem at once.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("publisher", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: publisher [flags]\n\nPublishes generated payment requests, or JSON lines with --from, to JetStream.\n\nFlags:\n")
		fs.PrintDefaults()
	}

	fs.StringVar(&o.natsURL, "nats-url", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated (PAYSTREAM_NATS_URL)")
	fs.StringVar(&o.natsCreds, "nats-creds", "", "NATS credentials file (PAYSTREAM_NATS_CREDS)")
	fs.StringVar(&o.natsUser, "nats-user", "", "NATS user (PAYSTREAM_NATS_USER)")
	fs.StringVar(&o.natsPassword, "nats-password", "", "NATS password; prefer the environment (PAYSTREAM_NATS_PASSWORD)")
	fs.StringVar(&o.natsToken, "nats-token", "", "NATS token; prefer the environment (PAYSTREAM_NATS_TOKEN)")
	fs.StringVar(&o.subjectPrefix, "subject-prefix", publish.DefaultSubjectPrefix, "requests go to <prefix>.requests.<merchant_id> (PAYSTREAM_SUBJECT_PREFIX)")
	fs.StringVar(&o.stream, "stream", publish.DefaultStream, "JetStream stream of the requests (PAYSTREAM_STREAM)")

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

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, &usageError{err}
	}

	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, e := range sharedEnv {
		if set[e.flag] {
			continue
		}
		if v := getenv(e.env); v != "" {
			if err := fs.Set(e.flag, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", e.env, err))
			}
		}
	}
	o.seedSet = set["seed"]

	if o.natsURL == "" {
		errs = append(errs, errors.New("--nats-url (PAYSTREAM_NATS_URL): must not be empty"))
	}
	if o.natsToken != "" && (o.natsUser != "" || o.natsPassword != "") {
		errs = append(errs, errors.New("--nats-token (PAYSTREAM_NATS_TOKEN): cannot be combined with a user and password"))
	}
	if o.natsPassword != "" && o.natsUser == "" {
		errs = append(errs, errors.New("--nats-password (PAYSTREAM_NATS_PASSWORD): needs --nats-user (PAYSTREAM_NATS_USER)"))
	}
	if err := (publish.Config{SubjectPrefix: o.subjectPrefix, Stream: o.stream, MaxPending: o.maxPending}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--subject-prefix, --stream or --max-pending: %w", err))
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

// redactURLs returns the comma-separated URLs of s with any password
// replaced, for messages.
func redactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := url.Parse(p); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				p = u.Redacted()
			} else {
				// A bare token as user name is a secret too.
				u.User = url.User("xxxxx")
				p = u.String()
			}
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}
