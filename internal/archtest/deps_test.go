// Package archtest keeps the import arrows of the README's architecture true:
// cmd/* → consumer → processing → payment; cmd/* → store → payment;
// cmd/* → config. It lists each package's non-test dependencies with
// `go list -deps` and checks them against a table.
package archtest

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const mod = "github.com/paystream/paystream/"

func TestImportDirection(t *testing.T) {
	t.Parallel()
	nonStd := func(t *testing.T, pkg string) []string {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", "-f",
			"{{if not .Standard}}{{.ImportPath}}{{end}}", mod+pkg).Output()
		require.NoError(t, err, "go list %s", pkg)
		return strings.Fields(string(out))
	}
	cases := []struct {
		pkg string
		// only, when set, lists every non-standard dependency allowed.
		only []string
		// banned lists import path prefixes the package must not reach.
		banned []string
	}{
		{pkg: "payment", only: []string{mod + "payment"}},
		{pkg: "contract", only: []string{mod + "contract"}},
		// risk fans out side-effect-free calls only: it knows no charge
		// (no payment, no gateway), and its HTTP adapter is riskhttp.
		{pkg: "risk", only: []string{mod + "risk"}},
		{pkg: "risk/riskhttp", only: []string{mod + "risk", mod + "risk/riskhttp"}},
		{pkg: "config", banned: []string{mod + "store", mod + "processing", mod + "consumer", "github.com/nats-io/nats.go"}},
		{pkg: "gateway", banned: []string{mod + "store", mod + "processing", mod + "consumer", mod + "config",
			"github.com/jackc/", "github.com/nats-io/"}},
		{pkg: "processing", banned: []string{mod + "store", mod + "consumer", mod + "config", mod + "gateway",
			mod + "risk/riskhttp", mod + "internal/", "github.com/jackc/", "github.com/nats-io/"}},
		{pkg: "store", banned: []string{mod + "processing", mod + "consumer", mod + "config", mod + "gateway",
			"github.com/nats-io/"}},
		{pkg: "consumer", banned: []string{mod + "store", mod + "config", "github.com/jackc/"}},
		{pkg: "telemetry", banned: []string{mod + "store", mod + "processing", mod + "consumer", mod + "config",
			mod + "gateway", mod + "internal/", "github.com/jackc/", "github.com/nats-io/"}},
		{pkg: "fleet", banned: []string{mod + "store", mod + "processing", mod + "consumer", mod + "config",
			mod + "gateway", mod + "internal/", "github.com/jackc/"}},
		{pkg: "natsconn", banned: []string{mod + "store", mod + "processing", mod + "consumer", mod + "config",
			mod + "gateway", mod + "publish", mod + "internal/testenv", "github.com/jackc/"}},
		{pkg: "publish", banned: []string{mod + "store", mod + "processing", mod + "consumer", mod + "config",
			mod + "gateway", "github.com/jackc/"}},
		// The outbox is the one part of publish that speaks Postgres.
		{pkg: "publish/outbox", banned: []string{mod + "store", mod + "processing", mod + "consumer", mod + "config",
			mod + "gateway", mod + "internal/testenv"}},
		// ops holds the operators' queries and actions for the CLI and the
		// console: store, fleet, the dead-letter headers of consumer and the
		// retention job that processing runs for the workers; Postgres
		// through store only; never the settings (the faces map them), the
		// gateway, a binary or the harness.
		{pkg: "ops", banned: []string{mod + "config", mod + "gateway", mod + "cmd/", mod + "internal/testenv",
			mod + "console"}},
		// The console is the web face of ops: it reaches store and the
		// streams only through ops (TestConsoleOnlyThroughOps checks its
		// own imports), never the settings, a binary or the harness.
		{pkg: "console", banned: []string{mod + "config", mod + "gateway", mod + "cmd/", mod + "internal/testenv",
			mod + "internal/cmdwire"}},
		// The example upstream uses only what an upstream needs: payment,
		// contract, publish/outbox (whose own internal/pgmigrate another
		// module reaches through it, as Go allows).
		{pkg: "examples/orders", banned: []string{mod + "store", mod + "processing", mod + "consumer", mod + "config",
			mod + "gateway", mod + "telemetry", mod + "natsconn", mod + "internal/testenv", mod + "cmd/"}},
		{pkg: "examples/orders/cmd/orders", banned: []string{mod + "store", mod + "processing", mod + "consumer", mod + "config",
			mod + "gateway", mod + "telemetry", mod + "natsconn", mod + "internal/testenv", mod + "cmd/"}},
	}
	for _, tc := range cases {
		t.Run(tc.pkg, func(t *testing.T) {
			t.Parallel()
			deps := nonStd(t, tc.pkg)
			if tc.only != nil {
				require.ElementsMatch(t, tc.only, deps)
			}
			for _, d := range deps {
				require.NotEqual(t, "github.com/rs/zerolog/log", d, "%s uses the global logger", tc.pkg)
				for _, b := range tc.banned {
					require.False(t, strings.HasPrefix(d, b), "%s depends on %s", tc.pkg, d)
				}
			}
		})
	}
}

// TestProductApartFromTools keeps the test harness (internal/testenv), the
// gateway simulator and the examples (examples/...) out of everything that
// ships: the worker and publisher binaries and every product package. Only
// the tool binaries (demo, chaos, bench, gatewaysim) may use them; the
// examples may import product packages, not the other way round.
func TestProductApartFromTools(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-f",
		"{{.ImportPath}}", mod+"...").Output()
	require.NoError(t, err, "go list")
	tools := map[string]bool{
		mod + "cmd/demo": true, mod + "cmd/chaos": true, mod + "cmd/bench": true,
		mod + "cmd/gatewaysim": true, mod + "gateway/sim": true,
	}
	var checked int
	for _, pkg := range strings.Fields(string(out)) {
		if tools[pkg] || strings.HasPrefix(pkg, mod+"internal/") || strings.HasPrefix(pkg, mod+"examples/") {
			continue
		}
		checked++
		deps, err := exec.CommandContext(t.Context(), "go", "list", "-deps", "-f",
			"{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
		require.NoError(t, err, "go list -deps %s", pkg)
		for _, d := range strings.Fields(string(deps)) {
			require.False(t, strings.HasPrefix(d, mod+"internal/testenv"), "%s depends on the test harness %s", pkg, d)
			require.NotEqual(t, mod+"gateway/sim", d, "%s depends on the gateway simulator", pkg)
			require.False(t, strings.HasPrefix(d, mod+"examples/"), "%s depends on the example %s", pkg, d)
		}
	}
	require.Greater(t, checked, 8, "too few product packages found: %s", out)
}

// TestConsoleOnlyThroughOps keeps the console a face of ops: its own
// imports (not its dependencies', which include store through ops) name
// neither store nor the drivers, so that every query and action it offers
// is an ops function the command line shares.
func TestConsoleOnlyThroughOps(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-f", `{{join .Imports " "}}`, mod+"console").Output()
	require.NoError(t, err, "go list console")
	imports := strings.Fields(string(out))
	require.Contains(t, imports, mod+"ops")
	for _, imp := range imports {
		for _, b := range []string{mod + "store", mod + "consumer", mod + "processing", mod + "fleet", mod + "natsconn",
			"github.com/jackc/", "github.com/nats-io/"} {
			require.False(t, strings.HasPrefix(imp, b), "console imports %s: go through ops", imp)
		}
	}
}
