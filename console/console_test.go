package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/console"
	psfleet "github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/ops"
)

// client is a test browser: basic auth and headers on every request, no
// redirects followed.
type client struct {
	t          *testing.T
	base       string
	user, pass string
	header     http.Header
}

func (c client) do(method, path string, form url.Values) (int, http.Header, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+path, body)
	require.NoError(c.t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	page := string(b)
	// Nothing the console sends may hold the card number a client wrongly
	// put in a request.
	require.NotContains(c.t, page, cardInDescription, "%s %s rendered a card number", method, path)
	require.NotContains(c.t, page, strings.ReplaceAll(cardInDescription, " ", ""), "%s %s rendered a card number", method, path)
	return resp.StatusCode, resp.Header, page
}

func (c client) get(path string) (int, string) {
	c.t.Helper()
	code, _, page := c.do(http.MethodGet, path, nil)
	return code, page
}

var (
	reCSRF    = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	rePreview = regexp.MustCompile(`name="preview" value="(\d+)"`)
	reSeqLink = regexp.MustCompile(`<a href="/dlq/(\d+)">`)
)

func match(t *testing.T, re *regexp.Regexp, page string) string {
	t.Helper()
	m := re.FindStringSubmatch(page)
	require.NotNil(t, m, "no %s in the page:\n%s", re, page)
	return m[1]
}

// seqOf returns the sequence of the dead letter of reason on the list page.
func seqOf(t *testing.T, c client, reason string) string {
	t.Helper()
	code, page := c.get("/dlq?reason=" + reason)
	require.Equal(t, http.StatusOK, code, page)
	return match(t, reSeqLink, page)
}

func TestPagesReadOnly(t *testing.T) {
	t.Parallel()
	b := startFleet(t)
	b.seed(t)
	b.history(t, 120)
	ts, _ := serve(t, b, console.Config{})
	c := client{t: t, base: ts.URL}

	t.Run("security headers", func(t *testing.T) {
		_, h, _ := c.do(http.MethodGet, "/", nil)
		csp := h.Get("Content-Security-Policy")
		require.Contains(t, csp, "script-src 'self'")
		require.NotContains(t, csp, "unsafe-inline")
		require.Contains(t, csp, "frame-ancestors 'none'")
		require.Equal(t, "DENY", h.Get("X-Frame-Options"))
		require.Equal(t, "nosniff", h.Get("X-Content-Type-Options"))
		require.Equal(t, "no-referrer", h.Get("Referrer-Policy"))
	})
	t.Run("overview", func(t *testing.T) {
		code, page := c.get("/")
		require.Equal(t, http.StatusOK, code)
		for _, want := range []string{"Healthy", "worker-1", "pay-node-a", "200/s", "closed", "PAYMENTS/payment-workers",
			`<svg class="chart"`, `href="/dlq?reason=exhausted"`, `data-refresh="10"`, "read-only console"} {
			require.Contains(t, page, want)
		}
		require.NotContains(t, page, "<script>", "no inline script")
		require.NotContains(t, page, `name="csrf"`, "a read-only console offers no form that acts")
	})
	t.Run("search by id", func(t *testing.T) {
		code, page := c.get("/payments?id=pay_011")
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, page, `id="matches">1 match`)
		require.Contains(t, page, `href="/payments/pay_011"`)
		require.Contains(t, page, "failed")
	})
	t.Run("search by filters and pages", func(t *testing.T) {
		code, page := c.get("/payments?status=succeeded")
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, page, `rel="next"`, "more than a page of successes")
		next := match(t, regexp.MustCompile(`href="(/payments\?[^"]+)" rel="next"`), page)
		code, page2 := c.get(strings.ReplaceAll(next, "&amp;", "&"))
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, page2, "a later page")
		code, page = c.get("/payments?merchant=m_acme&min=1000&max=1200&error=")
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, page, "m_acme")
		require.NotContains(t, page, "m_globex")
		code, page = c.get("/payments?error=card_declined")
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, page, "card_declined")
		code, page = c.get("/payments?since=" + url.QueryEscape(time.Now().UTC().Add(-2*time.Hour).Format("2006-01-02T15:04")))
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, page, `href="/payments/pay_011"`)
		code, page = c.get("/payments?min=ten")
		require.Equal(t, http.StatusBadRequest, code)
		require.Contains(t, page, "minor units")
		code, _ = c.get("/payments?cursor=nonsense")
		require.Equal(t, http.StatusBadRequest, code)
	})
	t.Run("payment timeline", func(t *testing.T) {
		code, page := c.get("/payments/pay_011")
		require.Equal(t, http.StatusOK, code)
		for _, want := range []string{"Timeline", "gateway call", "service_unavailable", "dead letter", "exhausted", "Stored request", "pm_card_visa"} {
			require.Contains(t, page, want)
		}
		code, _ = c.get("/payments/no_such_payment")
		require.Equal(t, http.StatusNotFound, code)
	})
	t.Run("dead letters", func(t *testing.T) {
		code, page := c.get("/dlq")
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, page, "4 dead letters")
		for _, r := range []string{"invalid", "conflict", "exhausted", "gateway_rejected"} {
			require.Contains(t, page, r)
		}
		seq := seqOf(t, c, "invalid")
		code, page = c.get("/dlq/" + seq)
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, page, "Paystream-Dlq-Reason")
		require.Contains(t, page, "card numbers masked")
		code, _ = c.get("/dlq/999999")
		require.Equal(t, http.StatusNotFound, code)
		code, _ = c.get("/dlq?reason=nonsense")
		require.Equal(t, http.StatusBadRequest, code)
	})
	t.Run("audit", func(t *testing.T) {
		code, page := c.get("/audit")
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, page, "No operator action recorded")
	})
	t.Run("static", func(t *testing.T) {
		code, h, page := c.do(http.MethodGet, "/static/console.js", nil)
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, h.Get("Content-Type"), "javascript")
		require.Contains(t, page, "data-refresh")
	})
	t.Run("actions refused", func(t *testing.T) {
		code, _, page := c.do(http.MethodPost, "/dlq/preview", url.Values{"seq": {"1"}, "csrf": {"x"}})
		require.Equal(t, http.StatusForbidden, code)
		require.Contains(t, page, "read-only")
		acts, err := b.dep.Audit(t.Context(), ops.AuditQuery{})
		require.NoError(t, err)
		require.Empty(t, acts.Actions, "a refused action leaves no audit row")
	})
}

func TestActionsNeedIdentityAndCSRF(t *testing.T) {
	t.Parallel()
	b := startFleet(t)
	b.seed(t)
	ts, _ := serve(t, b, console.Config{AllowActions: true, Users: users(t)})
	alice := client{t: t, base: ts.URL, user: "alice", pass: "alice-pw"}
	bob := client{t: t, base: ts.URL, user: "bob", pass: "bob-pw"}

	code, _ := client{t: t, base: ts.URL}.get("/")
	require.Equal(t, http.StatusUnauthorized, code, "no credentials")
	code, _ = client{t: t, base: ts.URL, user: "alice", pass: "wrong"}.get("/")
	require.Equal(t, http.StatusUnauthorized, code, "wrong password")
	code, _ = client{t: t, base: ts.URL, user: "mallory", pass: "x"}.get("/")
	require.Equal(t, http.StatusUnauthorized, code, "unknown user")
	code, _ = client{t: t, base: ts.URL}.get("/healthz")
	require.Equal(t, http.StatusOK, code, "the health check needs no credentials")

	seq := seqOf(t, alice, "exhausted")
	_, page := alice.get("/dlq/" + seq)
	aliceToken := match(t, reCSRF, page)
	_, page = bob.get("/dlq/" + seq)
	bobToken := match(t, reCSRF, page)
	require.NotEqual(t, aliceToken, bobToken)

	code, _, page = alice.do(http.MethodPost, "/dlq/preview", url.Values{"seq": {seq}})
	require.Equal(t, http.StatusForbidden, code, "no CSRF token")
	require.Contains(t, page, "CSRF")
	code, _, _ = alice.do(http.MethodPost, "/dlq/preview", url.Values{"seq": {seq}, "csrf": {bobToken}})
	require.Equal(t, http.StatusForbidden, code, "another user's token")
	cross := alice
	cross.header = http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}}
	code, _, _ = cross.do(http.MethodPost, "/dlq/preview", url.Values{"seq": {seq}, "csrf": {aliceToken}})
	require.Equal(t, http.StatusForbidden, code, "a cross-origin POST")
	code, _, _ = client{t: t, base: ts.URL}.do(http.MethodPost, "/dlq/preview", url.Values{"seq": {seq}, "csrf": {aliceToken}})
	require.Equal(t, http.StatusUnauthorized, code, "no credentials")
	acts, err := b.dep.Audit(t.Context(), ops.AuditQuery{})
	require.NoError(t, err)
	require.Empty(t, acts.Actions, "refused actions leave no audit row")

	code, _, page = alice.do(http.MethodPost, "/dlq/preview", url.Values{"seq": {seq}, "csrf": {aliceToken}})
	require.Equal(t, http.StatusOK, code, page)
	require.Contains(t, page, "1 would be re-published")
	preview := match(t, rePreview, page)
	// bob cannot run alice's preview.
	code, _, _ = bob.do(http.MethodPost, "/dlq/replay", url.Values{"preview": {preview}, "rate": {"10"}, "csrf": {bobToken}})
	require.Equal(t, http.StatusForbidden, code)
	acts, err = b.dep.Audit(t.Context(), ops.AuditQuery{})
	require.NoError(t, err)
	require.Len(t, acts.Actions, 1)
	require.Equal(t, "alice", acts.Actions[0].Actor)
	require.True(t, acts.Actions[0].DryRun)
}

func TestReplayFromTheConsole(t *testing.T) {
	t.Parallel()
	b := startFleet(t)
	b.seed(t)
	ts, srv := serve(t, b, console.Config{AllowActions: true, ProxyHeader: "X-Forwarded-User"})
	anon := client{t: t, base: ts.URL}
	carol := client{t: t, base: ts.URL, header: http.Header{"X-Forwarded-User": {"carol"}}}

	// Without the proxy's header there is no identity: no form, no action.
	_, page := anon.get("/dlq")
	require.NotContains(t, page, `name="csrf"`)
	require.Contains(t, page, "actions need an identity")
	code, _, _ := anon.do(http.MethodPost, "/dlq/preview", url.Values{"reason": {"exhausted"}})
	require.Equal(t, http.StatusUnauthorized, code)

	_, page = carol.get("/dlq?reason=exhausted&reason=conflict&reason=invalid")
	token := match(t, reCSRF, page)

	// A filtered preview: the exhausted one would charge; the conflict and
	// the invalid one are refused, and the page says why.
	form := url.Values{"csrf": {token}, "reason": {"exhausted", "conflict", "invalid"}}
	code, _, page = carol.do(http.MethodPost, "/dlq/preview", form)
	require.Equal(t, http.StatusOK, code, page)
	require.Contains(t, page, "3 dead letters: <strong>1 would be re-published</strong>, 2 refused")
	require.Contains(t, page, "conflict: the key belongs to another request")
	require.Contains(t, page, "invalid request: a replay would only be dead-lettered again")
	preview := match(t, rePreview, page)

	// A filtered preview needs reasons, like `dlq replay --reason`.
	code, _, _ = carol.do(http.MethodPost, "/dlq/preview", url.Values{"csrf": {token}, "merchant": {"m_acme"}})
	require.Equal(t, http.StatusBadRequest, code)

	// The gateway works again; the replay runs in the background.
	b.gw.Heal()
	code, _, _ = carol.do(http.MethodPost, "/dlq/replay", url.Values{"preview": {preview}, "rate": {"0"}, "csrf": {token}})
	require.Equal(t, http.StatusBadRequest, code, "a rate of zero")
	code, h, _ := carol.do(http.MethodPost, "/dlq/replay", url.Values{"preview": {preview}, "rate": {"20"}, "csrf": {token}})
	require.Equal(t, http.StatusSeeOther, code)
	jobURL := h.Get("Location")
	require.Equal(t, "/jobs/1", jobURL)
	code, _, _ = carol.do(http.MethodPost, "/dlq/replay", url.Values{"preview": {preview}, "rate": {"20"}, "csrf": {token}})
	require.Equal(t, http.StatusConflict, code, "a preview runs once")

	require.Eventually(t, func() bool {
		_, page = carol.get(jobURL)
		return strings.Contains(page, `id="job-summary"`)
	}, 20*time.Second, 20*time.Millisecond)
	require.Contains(t, page, "published 1, duplicates 0, refused 2, failed 0")
	require.Contains(t, page, `data-refresh="0"`, "a finished replay's page stops reloading")

	// The payment goes through; its timeline shows the take-over.
	require.Eventually(t, func() bool {
		_, page = carol.get("/payments?id=pay_011")
		return strings.Contains(page, "succeeded")
	}, 20*time.Second, 20*time.Millisecond)

	// Both actions are in the audit, under carol.
	_, page = carol.get("/audit?actor=carol")
	require.Contains(t, page, "dlq_replay")
	acts, err := b.dep.Audit(t.Context(), ops.AuditQuery{Actor: "carol"})
	require.NoError(t, err)
	require.Len(t, acts.Actions, 2)
	require.False(t, acts.Actions[0].DryRun)
	require.Equal(t, 1, acts.Actions[0].Published)
	require.True(t, acts.Actions[1].DryRun)

	// Close waits for the replays and refuses new ones.
	srv.Close()
}

// slowBackend is a backend whose overview could not chart the outcomes in
// time (a small fake beside the real one).
type slowBackend struct{ console.Backend }

func (slowBackend) Overview(context.Context) (ops.OverviewReport, error) {
	return ops.OverviewReport{Healthy: true, Reasons: []string{}, OutcomesError: "too many payments completed in the last 1h0m0s to count them within 2s"}, nil
}

func TestOverviewWithoutChart(t *testing.T) {
	t.Parallel()
	srv := console.New(console.Config{}, slowBackend{}, zerolog.Nop())
	defer srv.Close()
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, rec.Body.String(), "too many payments completed")
	require.NotContains(t, rec.Body.String(), `<svg class="chart"`)
}

// silentBackend reports one worker ready and one whose record is stale.
type silentBackend struct{ console.Backend }

func (silentBackend) Overview(context.Context) (ops.OverviewReport, error) {
	return ops.OverviewReport{Reasons: []string{"worker w2 silent for 25s"},
		Workers: []psfleet.Heartbeat{{WorkerID: "w1", Ready: true, Breaker: "closed"}, {WorkerID: "w2", Ready: true, Breaker: "closed"}},
		Silent:  map[string]float64{"w2": 25}}, nil
}

// TestOverviewSilentWorker: a silent worker's row says so before the
// "ready" its stale record still claims.
func TestOverviewSilentWorker(t *testing.T) {
	t.Parallel()
	srv := console.New(console.Config{}, silentBackend{}, zerolog.Nop())
	defer srv.Close()
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	page := rec.Body.String()
	require.Regexp(t, `<td>w2</td>\s*<td><span class="pill bad">silent</span> for 25s, last said <span class="pill ok">ready</span>`, page)
	require.Regexp(t, `<td>w1</td>\s*<td><span class="pill ok">ready</span>`, page)
}

// TestCloseStopsAReplay starts a slow replay and closes the console: Close
// cancels the replay before its next publish, waits for it, and the replay
// is audited with what it did.
func TestCloseStopsAReplay(t *testing.T) {
	t.Parallel()
	b := startFleet(t)
	for i := range 3 {
		b.publish(t, "slow_"+strconv.Itoa(i), "m_acme", 2044+int64(i)*100, "") // exhausted
	}
	require.Eventually(t, func() bool {
		l, err := b.dep.DeadLetterList(t.Context(), ops.DeadLetterFilter{Reasons: []string{"exhausted"}})
		return err == nil && l.Total == 3
	}, 30*time.Second, 20*time.Millisecond)
	ts, srv := serve(t, b, console.Config{AllowActions: true, ProxyHeader: "X-Forwarded-User"})
	dave := client{t: t, base: ts.URL, header: http.Header{"X-Forwarded-User": {"dave"}}}
	_, page := dave.get("/dlq?reason=exhausted")
	token := match(t, reCSRF, page)
	_, _, page = dave.do(http.MethodPost, "/dlq/preview", url.Values{"csrf": {token}, "reason": {"exhausted"}})
	require.Contains(t, page, "3 dead letters: <strong>3 would be re-published</strong>")
	preview := match(t, rePreview, page)
	// One publish every 100 s: the first goes at once, the second waits.
	code, h, _ := dave.do(http.MethodPost, "/dlq/replay", url.Values{"preview": {preview}, "rate": {"0.01"}, "csrf": {token}})
	require.Equal(t, http.StatusSeeOther, code)
	require.Eventually(t, func() bool {
		_, page = dave.get(h.Get("Location"))
		return strings.Contains(page, "1 of 3")
	}, 20*time.Second, 20*time.Millisecond)

	closed := make(chan struct{})
	go func() {
		srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not stop the replay")
	}
	acts, err := b.dep.Audit(t.Context(), ops.AuditQuery{Actor: "dave"})
	require.NoError(t, err)
	require.Len(t, acts.Actions, 2)
	run := acts.Actions[0]
	require.False(t, run.DryRun)
	require.Equal(t, 1, run.Published)
	require.Equal(t, 2, run.Failed, "the rest were cancelled before publishing")
	// No replay starts after Close.
	code, _, _ = dave.do(http.MethodPost, "/dlq/replay", url.Values{"preview": {preview}, "rate": {"1"}, "csrf": {token}})
	require.NotEqual(t, http.StatusSeeOther, code)
}
