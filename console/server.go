package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/paystream/paystream/ops"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Backend is what the console asks of a deployment: the queries and the
// replay of package ops. *ops.Deployment implements it.
type Backend interface {
	Overview(ctx context.Context) (ops.OverviewReport, error)
	SearchPayments(ctx context.Context, q ops.SearchQuery) (ops.SearchResult, error)
	ShowPayment(ctx context.Context, idOrKey string) ([]ops.Story, error)
	DeadLetterList(ctx context.Context, f ops.DeadLetterFilter) (ops.DeadLetterList, error)
	DeadLetter(ctx context.Context, seq uint64) (ops.DeadLetter, map[string][]string, error)
	Replay(ctx context.Context, req ops.ReplayRequest) (ops.ReplayReport, error)
	Audit(ctx context.Context, q ops.AuditQuery) (ops.AuditPage, error)
}

// Config configures a Server. The zero value is a read-only console open
// to anyone who reaches it.
type Config struct {
	// AllowActions enables the actions (replay previews and replays);
	// without it every POST is refused with 403. Actions also need an
	// identity: Users or ProxyHeader.
	AllowActions bool
	// Users are the basic-auth users and their bcrypt hashes (ParseUsers).
	// When set, every page needs a user's credentials, and the user is the
	// identity audited for actions.
	Users map[string][]byte
	// ProxyHeader names the request header in which a trusted reverse proxy
	// puts the authenticated user (such as X-Forwarded-User), used when
	// Users is not set. The console must then be reachable only through
	// that proxy.
	ProxyHeader string
	// Secret keys the CSRF tokens; empty means 32 random bytes (tokens then
	// change when the process restarts).
	Secret []byte
	// Refresh is how often the overview and a running replay's page reload
	// themselves; 0 means 10 seconds.
	Refresh time.Duration
	// ReplayRate is the default publishes per second offered for a replay;
	// 0 means 50.
	ReplayRate float64
	// DeadLetterLimit caps the dead letters listed on one page; 0 means 500.
	DeadLetterLimit int
}

// Server is the console: an http.Handler and the replays it runs. Close
// stops the replays and waits for them.
type Server struct {
	cfg       Config
	backend   Backend
	logger    zerolog.Logger
	secret    []byte
	dummyHash []byte
	pages     map[string]*template.Template
	handler   http.Handler

	// ctx is the replays' context: Close cancels it and waits on wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	jobs     map[int]*job
	nextJob  int
	previews map[int64]preview
	order    []int64 // preview ids, oldest first, for eviction
	closed   bool
}

// New returns a console over backend. It panics when the embedded
// templates do not parse (a build defect).
func New(cfg Config, backend Backend, logger zerolog.Logger) *Server {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 10 * time.Second
	}
	if cfg.ReplayRate <= 0 {
		cfg.ReplayRate = 50
	}
	if cfg.DeadLetterLimit <= 0 {
		cfg.DeadLetterLimit = 500
	}
	s := &Server{cfg: cfg, backend: backend, logger: logger.With().Str("component", "console").Logger(),
		jobs: map[int]*job{}, previews: map[int64]preview{}}
	s.secret = cfg.Secret
	if len(s.secret) == 0 {
		s.secret = make([]byte, 32)
		_, _ = rand.Read(s.secret)
	}
	s.dummyHash, _ = bcrypt.GenerateFromPassword([]byte("paystream"), bcrypt.MinCost)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.pages = parsePages()
	s.handler = s.routes()
	return s
}

// ServeHTTP serves the console.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close cancels the replays in progress (each stops before its next
// publish and is audited with what it did) and waits for them. It is
// idempotent; no replay starts after it.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// Serve serves the console on ln until ctx ends, then shuts the HTTP
// server down (in-flight requests get five seconds) and closes s.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = hs.Shutdown(sctx)
		cancel()
		<-errc
	}
	s.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func parsePages() map[string]*template.Template {
	pages := map[string]*template.Template{}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	for _, n := range names {
		base := n[len("templates/"):]
		if base == "layout.html" {
			continue
		}
		pages[base] = template.Must(template.New("layout.html").Funcs(funcs()).ParseFS(templateFS, "templates/layout.html", n))
	}
	return pages
}

// routes is every URL of the console.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /{$}", s.overview)
	mux.HandleFunc("GET /payments", s.payments)
	mux.HandleFunc("GET /payments/{id}", s.paymentPage)
	mux.HandleFunc("GET /dlq", s.deadLetters)
	mux.HandleFunc("GET /dlq/{seq}", s.deadLetter)
	mux.HandleFunc("POST /dlq/preview", s.action(s.replayPreview))
	mux.HandleFunc("POST /dlq/replay", s.action(s.replayRun))
	mux.HandleFunc("GET /jobs/{id}", s.jobPage)
	mux.HandleFunc("GET /audit", s.audit)
	cop := http.NewCrossOriginProtection()
	return s.headers(s.authenticate(cop.Handler(mux)))
}

// headers sets the security headers of every response.
func (s *Server) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// whoKey is the request context key of the identity.
type whoKey struct{}

// authenticate asks for basic-auth credentials when users are configured
// (every page but /healthz), and puts the identity in the request context.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		who, ok := s.identify(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="paystream console", charset="UTF-8"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), whoKey{}, who)))
	})
}

func identity(r *http.Request) string {
	who, _ := r.Context().Value(whoKey{}).(string)
	return who
}

// action guards a POST handler: refused with 403 when the console is
// read-only or the CSRF token is wrong, 401 without an identity. The
// handler gets the identity.
func (s *Server) action(h func(w http.ResponseWriter, r *http.Request, who string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who := identity(r)
		switch {
		case !s.cfg.AllowActions:
			s.refuse(w, r, http.StatusForbidden, "The console is read-only: actions need `paystreamctl console --allow-actions`.")
			return
		case who == "":
			s.refuse(w, r, http.StatusUnauthorized, "Actions need an identity for the audit: start the console with "+
				"--basic-auth-file or behind a proxy that sets the header named by --proxy-user-header.")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			s.refuse(w, r, http.StatusBadRequest, "The form could not be read.")
			return
		}
		if !s.validCSRF(who, r.PostForm.Get("csrf")) {
			s.refuse(w, r, http.StatusForbidden, "The form's CSRF token is missing or wrong: reload the page and try again.")
			return
		}
		h(w, r, who)
	}
}

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	Who     string
	CSRF    string
	Actions bool // actions allowed and an identity present
	// ReadOnlyWhy says why actions are not offered.
	ReadOnlyWhy string
	Refresh     int // seconds; 0: no reload
	Data        any
}

func (s *Server) newPage(r *http.Request, title, nav string, data any) page {
	who := identity(r)
	p := page{Title: title, Nav: nav, Who: who, Data: data}
	switch {
	case !s.cfg.AllowActions:
		p.ReadOnlyWhy = "read-only console (start it with --allow-actions to replay)"
	case who == "":
		p.ReadOnlyWhy = "actions need an identity (--basic-auth-file or --proxy-user-header)"
	default:
		p.Actions, p.CSRF = true, s.csrfToken(who)
	}
	return p
}

// render executes the page template name into a buffer first, so that a
// failing template sends a clean 500 rather than half a page.
func (s *Server) render(w http.ResponseWriter, status int, name string, p page) {
	var b bytes.Buffer
	if err := s.pages[name].ExecuteTemplate(&b, "layout.html", p); err != nil {
		s.logger.Error().Err(err).Str("template", name).Msg("render")
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// refuse renders an error page with status and a message for the operator.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, status, "error.html", s.newPage(r, http.StatusText(status), "", errorData{Status: status, Message: msg}))
}

type errorData struct {
	Status  int
	Message string
}

// fail renders err as a 500 (or 404 for not-found errors) without
// details that could hold data: the error text of ops is written for
// operators and holds ids, never card data, but is masked all the same.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	if errors.Is(err, ops.ErrNotFound) || errors.Is(err, ops.ErrDeadLetterNotFound) {
		status = http.StatusNotFound
	} else if r.Context().Err() == nil {
		s.logger.Error().Err(err).Str("path", r.URL.Path).Msg("request failed")
	}
	s.refuse(w, r, status, mask(err.Error()))
}

func (s *Server) now() time.Time { return time.Now() }
