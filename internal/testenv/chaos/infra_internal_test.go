package chaos

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/audit"
)

func TestScenarioNames(t *testing.T) {
	t.Parallel()
	var all, ci []string
	seen := map[string]bool{}
	for _, s := range Scenarios() {
		require.False(t, seen[s.Name], "scenario %s twice", s.Name)
		seen[s.Name] = true
		require.NotEmpty(t, s.Doc, s.Name)
		require.NotNil(t, s.fault, s.Name)
		all = append(all, s.Name)
		if s.CI {
			ci = append(ci, s.Name)
		}
	}
	require.Equal(t, all, ScenarioNames("infra"))
	require.Equal(t, ci, ScenarioNames("ci"))
	require.Equal(t, slices.Concat([]string{"main"}, ci, []string{"outbox"}), ScenarioNames(" main, ci,,outbox"))
	for _, want := range []string{"pg-failover-sync", "pg-failover-async", "net-latency", "net-bandwidth", "net-reset",
		"net-blackhole", "net-cut-postgres", "net-cut-nats", "js-disk-full", "pg-conn-exhaust"} {
		_, ok := LookupScenario(want)
		require.True(t, ok, want)
	}
	_, ok := LookupScenario("main")
	require.False(t, ok, "main is not an infrastructure scenario")
}

func TestInfraFigureLine(t *testing.T) {
	t.Parallel()
	r := &InfraResult{Scenario: "net-latency", Payments: 3000, Messages: 3252, Report: &audit.Report{},
		Fault: 10 * time.Second, Recover: 1540 * time.Millisecond, Duration: 28 * time.Second,
		Figures: []string{"outcomes_during_fault=900"}, NotReady: `w1: not ready: database unreachable`}
	line := r.FigureLine()
	require.True(t, strings.HasPrefix(line, "chaos-net-latency payments=3000 messages=3252 lost=0 double_charged=0 false_failed=0 stuck=0 "), line)
	require.Contains(t, line, " fault=10s recover=1.5s worker_exits=0 duration=28s outcomes_during_fault=900 not_ready=\"w1: not ready: database unreachable\"")
	require.True(t, r.OK())
}
