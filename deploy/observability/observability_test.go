// Package observability_test checks the Prometheus alert rules, the Prometheus
// configuration and the Grafana dashboard of deploy/observability against the
// real thing: the rules are loaded with Prometheus's own rule parser, every
// expression (rules and dashboard panels) is parsed as PromQL, and every
// metric they name must be served on the /metrics of a running worker or
// outbox relay. Every alert must name the paystreamctl command that
// diagnoses it and a section of docs/operations.md that exists.
package observability_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/internal/testenv/pgcluster"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	alertsFile    = "alerts.yml"
	dashboardFile = "grafana/dashboards/paystream.json"
	operationsDoc = "../../docs/operations.md"
)

var promql = parser.NewParser(parser.Options{})

// TestAlertRules loads alerts.yml as Prometheus does and checks each rule's
// annotations.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	require.Empty(t, errs, "alerts.yml")
	anchors := docAnchors(t)
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n++
			require.NotEmpty(t, r.Alert, "every rule is an alert (no recording rules)")
			require.Contains(t, []string{"critical", "warning", "info"}, r.Labels["severity"], r.Alert)
			require.NotEmpty(t, r.Annotations["summary"], r.Alert)
			diagnose := r.Annotations["diagnose"]
			require.True(t, strings.HasPrefix(diagnose, "paystreamctl ") || strings.HasPrefix(diagnose, "curl "),
				"%s: diagnose names the command that diagnoses it: %q", r.Alert, diagnose)
			runbook, found := strings.CutPrefix(r.Annotations["runbook"], "docs/operations.md#")
			require.True(t, found, "%s: runbook is a section of docs/operations.md", r.Alert)
			require.Contains(t, anchors, runbook, "%s: docs/operations.md has no section #%s", r.Alert, runbook)
		}
	}
	require.GreaterOrEqual(t, n, 13)
}

// alerted are metrics that some alert rule must watch: the gauges of a
// failing dependency and of a gateway down for the fleet or on the
// fallback budget share are easy to add to /metrics and forget here.
var alerted = []string{
	"paystream_worker_ready", "paystream_consumer_pending_messages", "paystream_breaker_state",
	"paystream_dependency_up", "paystream_gateway_fleet_breaker", "paystream_gateway_budget_fallback",
}

// TestAlertRulesCover: each metric of alerted is watched by a rule that
// waits (for: > 0) before it fires, and every rule waits.
func TestAlertRulesCover(t *testing.T) {
	t.Parallel()
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	require.Empty(t, errs, "alerts.yml")
	watched := map[string][]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			require.Positive(t, r.For, "%s: a for: duration, so that one bad scrape does not page", r.Alert)
			for _, m := range metricNames(t, r.Expr) {
				watched[m] = append(watched[m], r.Alert)
			}
		}
	}
	for _, m := range alerted {
		require.NotEmpty(t, watched[m], "no alert rule watches %s", m)
	}
}

// TestMetricsExist starts a worker and an outbox relay and checks that every
// metric the alert rules and the dashboard name is on their /metrics.
func TestMetricsExist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs real processes")
	}
	if _, err := pgcluster.FindBinDir(); errors.Is(err, pgcluster.ErrNoBinaries) {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	bin := t.TempDir()
	require.NoError(t, localstack.Build(ctx, bin))
	stack, err := localstack.Start(ctx, localstack.Config{BinDir: bin})
	require.NoError(t, err)
	defer func() { require.NoError(t, stack.Close()) }()
	worker, err := stack.StartWorker(ctx, "w1", map[string]string{"PAYSTREAM_GATEWAY_URL": "fake"})
	require.NoError(t, err)
	relay, err := stack.StartOutboxRelay(ctx, "relay1")
	require.NoError(t, err)

	served := map[string]bool{}
	for _, p := range []*localstack.Process{worker, relay} {
		for name := range scrape(ctx, t, "http://"+p.HTTPAddr()+"/metrics") {
			served[name] = true
		}
	}
	// The labels the rules group by are on the worker's series: every
	// dependency, and a gateway on the guards' gauges.
	labels := scrapeLabels(ctx, t, "http://"+worker.HTTPAddr()+"/metrics")
	require.ElementsMatch(t, []string{"nats", "database", "jetstream", "gateway"}, labels["paystream_dependency_up"]["dependency"])
	for _, m := range []string{"paystream_gateway_fleet_breaker", "paystream_gateway_budget_fallback"} {
		require.NotEmpty(t, labels[m]["gateway"], "%s has no gateway label", m)
	}

	used := map[string][]string{} // metric → where it is used
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	require.Empty(t, errs)
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			for _, m := range metricNames(t, r.Expr) {
				used[m] = append(used[m], "alert "+r.Alert)
			}
		}
	}
	for title, expr := range dashboardExprs(t) {
		for _, m := range metricNames(t, expr) {
			used[m] = append(used[m], "panel "+title)
		}
	}
	require.NotEmpty(t, used)
	for m, where := range used {
		require.True(t, served[m], "%s (used by %v) is on no /metrics", m, where)
	}
}

// scrape returns the metric family names of a /metrics page, with a
// histogram's _bucket, _sum and _count series under their family's name
// as well.
func scrape(ctx context.Context, t *testing.T, url string) map[string]bool {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(strings.NewReader(string(body)))
	require.NoError(t, err, "parse %s", url)
	names := map[string]bool{}
	for name, f := range families {
		names[name] = true
		if f.GetType().String() == "HISTOGRAM" || f.GetType().String() == "SUMMARY" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[name+suffix] = true
			}
		}
	}
	return names
}

// scrapeLabels returns, per metric family of a /metrics page, the values
// each label takes.
func scrapeLabels(ctx context.Context, t *testing.T, url string) map[string]map[string][]string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(resp.Body)
	require.NoError(t, err, "parse %s", url)
	out := map[string]map[string][]string{}
	for name, f := range families {
		out[name] = map[string][]string{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				out[name][l.GetName()] = append(out[name][l.GetName()], l.GetValue())
			}
		}
	}
	return out
}

// metricNames parses expr as PromQL and returns the metric names its
// selectors name.
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	e, err := promql.ParseExpr(expr)
	require.NoError(t, err, "PromQL %q", expr)
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	require.NotEmpty(t, names, "%q names no metric", expr)
	return names
}

// dashboardExprs returns each panel's expressions by panel title.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	require.NoError(t, dec.Decode(&dash))
	require.Equal(t, "paystream", dash.UID)
	exprs := map[string]string{}
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for i, tg := range p.Targets {
			exprs[p.Title+"#"+string(rune('A'+i))] = tg.Expr
		}
	}
	return exprs
}

var heading = regexp.MustCompile(`(?m)^#{2,4} +(.+?) *$`)

// docAnchors returns the anchors of docs/operations.md's headings as GitHub
// makes them: lower case, spaces to hyphens, punctuation dropped.
func docAnchors(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(operationsDoc)
	require.NoError(t, err)
	var anchors []string
	for _, m := range heading.FindAllStringSubmatch(string(b), -1) {
		var sb strings.Builder
		for _, r := range strings.ToLower(m[1]) {
			switch {
			case r == ' ':
				sb.WriteRune('-')
			case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
				sb.WriteRune(r)
			}
		}
		anchors = append(anchors, sb.String())
	}
	return anchors
}
