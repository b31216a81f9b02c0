package processing_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDependencies keeps the import arrows of the README's architecture true: processing knows
// neither Postgres nor NATS, and nothing above it.
func TestDependencies(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.CommandContext(t.Context(), goBin, "list", "-deps", ".").Output()
	require.NoError(t, err)
	forbidden := []string{
		"github.com/jackc/",
		"github.com/nats-io/",
		"github.com/paystream/paystream/store",
		"github.com/paystream/paystream/consumer",
		"github.com/paystream/paystream/config",
		"github.com/paystream/paystream/cmd/",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			require.False(t, strings.HasPrefix(dep, f), "processing depends on %s", dep)
		}
	}
}
