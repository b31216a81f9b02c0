package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Files in the stack's directory that hold the demo's gateway API key: the
// simulator's keys file and the workers' key file. They are the only
// places it is meant to be.
const (
	simKeysFile   = "gatewaysim-keys"
	workerKeyFile = "gateway-api-key"
)

// writeAPIKey makes a fresh gateway API key and writes it, readable by us
// only, to the simulator's keys file and the workers' key file in dir.
func writeAPIKey(dir string) (key, simKeys, workerKey string, err error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", "", fmt.Errorf("demo: api key: %w", err)
	}
	key = "sk_demo_" + hex.EncodeToString(b[:])
	simKeys, workerKey = filepath.Join(dir, simKeysFile), filepath.Join(dir, workerKeyFile)
	for _, p := range []string{simKeys, workerKey} {
		if err := os.WriteFile(p, []byte(key+"\n"), 0o600); err != nil {
			return "", "", "", fmt.Errorf("demo: api key: %w", err)
		}
	}
	return key, simKeys, workerKey, nil
}

// leakScan searches everything a run produced for a secret and counts what
// it searched, so that an empty search cannot pass for a clean one.
type leakScan struct {
	secret []byte

	mu       sync.Mutex
	searched map[string]int // kind of source → sources searched
	found    []string       // sources that hold the secret
	errs     []error        // sources that could not be searched
}

func newLeakScan(secret string) *leakScan {
	return &leakScan{secret: []byte(secret), searched: map[string]int{}}
}

// check searches one source of kind kind named name.
func (l *leakScan) check(kind, name string, data []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.searched[kind]++
	if bytes.Contains(data, l.secret) {
		l.found = append(l.found, name)
	}
}

func (l *leakScan) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

// pages fetches each URL (a worker's /metrics and /readyz, the simulator's
// /metrics and /v1/stats) and searches its body.
func (l *leakScan) pages(ctx context.Context, urls []string) {
	client := &http.Client{Timeout: 10 * time.Second}
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			l.fail(err)
			continue
		}
		resp, err := client.Do(req)
		if err != nil {
			l.fail(fmt.Errorf("fetch %s: %w", u, err))
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			l.fail(fmt.Errorf("fetch %s: %w", u, err))
			continue
		}
		l.check("pages", u, body)
	}
}

// logs searches every *.log file under dir: each process's output.
func (l *leakScan) logs(dir string) {
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".log") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		l.check("log files", path, data)
		return nil
	})
	if err != nil {
		l.fail(fmt.Errorf("search logs: %w", err))
	}
}

// streams searches every message of every stream, headers and body.
func (l *leakScan) streams(ctx context.Context, natsURL string) {
	nc, err := nats.Connect(natsURL, nats.Name("paystream demo secret scan"))
	if err != nil {
		l.fail(fmt.Errorf("search streams: %w", err))
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		l.fail(fmt.Errorf("search streams: %w", err))
		return
	}
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		if err := l.stream(ctx, js, name); err != nil {
			l.fail(fmt.Errorf("search stream %s: %w", name, err))
		}
	}
	if err := names.Err(); err != nil {
		l.fail(fmt.Errorf("list streams: %w", err))
	}
}

func (l *leakScan) stream(ctx context.Context, js jetstream.JetStream, name string) error {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	want := info.State.Msgs
	if want == 0 {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return err
	}
	var seen uint64
	for seen < want {
		batch, err := cons.Fetch(int(min(want-seen, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var buf bytes.Buffer
			buf.WriteString(m.Subject())
			for k, vs := range m.Headers() {
				buf.WriteString("\n" + k + ": " + strings.Join(vs, ", "))
			}
			buf.WriteString("\n")
			buf.Write(m.Data())
			meta, _ := m.Metadata()
			where := name
			if meta != nil {
				where = fmt.Sprintf("%s message %d", name, meta.Sequence.Stream)
			}
			l.check("stream messages", where, buf.Bytes())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if n == 0 {
			return fmt.Errorf("read %d of %d messages", seen, want)
		}
		seen += uint64(n)
	}
	return nil
}

// rows searches every row of every table of the public schema, as text.
func (l *leakScan) rows(ctx context.Context, databaseURL string) {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		l.fail(fmt.Errorf("search tables: %w", err))
		return
	}
	defer conn.Close(ctx)
	tables, err := pgx.CollectRows(mustQuery(ctx, conn,
		`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`), pgx.RowTo[string])
	if err != nil {
		l.fail(fmt.Errorf("search tables: %w", err))
		return
	}
	for _, table := range tables {
		rows, err := conn.Query(ctx, "SELECT t::text FROM "+pgx.Identifier{table}.Sanitize()+" t")
		if err != nil {
			l.fail(fmt.Errorf("search table %s: %w", table, err))
			continue
		}
		i := 0
		var text string
		_, err = pgx.ForEachRow(rows, []any{&text}, func() error {
			i++
			l.check("table rows", fmt.Sprintf("table %s row %d", table, i), []byte(text))
			return nil
		})
		if err != nil {
			l.fail(fmt.Errorf("search table %s: %w", table, err))
		}
	}
}

// mustQuery runs a query whose error CollectRows then reports.
func mustQuery(ctx context.Context, conn *pgx.Conn, sql string) pgx.Rows {
	rows, _ := conn.Query(ctx, sql) // the error comes back from rows.Err
	return rows
}

// verdict returns the problems the scan found, and a line for the summary.
func (l *leakScan) verdict() (problems []string, summary string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for _, kind := range []string{"log files", "pages", "stream messages", "table rows", "demo output"} {
		parts = append(parts, fmt.Sprintf("%d %s", l.searched[kind], kind))
		if l.searched[kind] == 0 {
			problems = append(problems, "secret scan: no "+kind+" searched")
		}
	}
	for _, e := range l.errs {
		problems = append(problems, "secret scan: "+e.Error())
	}
	if len(l.found) > 0 {
		shown := l.found
		if len(shown) > 10 {
			shown = shown[:10]
		}
		problems = append(problems, fmt.Sprintf("the gateway API key appears in %d places: %s", len(l.found), strings.Join(shown, "; ")))
		return problems, fmt.Sprintf("FOUND in %d places", len(l.found))
	}
	return problems, "not found in " + strings.Join(parts, ", ")
}

// recorder keeps a copy of what is written through it.
type recorder struct {
	w   io.Writer
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(p)
	r.mu.Unlock()
	return r.w.Write(p)
}

func (r *recorder) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

// checkKeyRequired asks the simulator for a lookup without the API key and
// reports a problem unless it refuses with 401: the run's calls went
// through only because the workers sent the key.
func checkKeyRequired(ctx context.Context, simURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, simURL+"/v1/charges?idempotency_key=keyless-probe", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("probe the gateway simulator without a key: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("the gateway simulator answered %d to a call without an API key, not 401: it does not require one", resp.StatusCode)
	}
	return nil
}
