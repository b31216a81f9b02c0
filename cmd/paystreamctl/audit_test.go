package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/ops"
)

// TestAudit lists the operator actions that replays and retention runs
// wrote, filtered and paged.
func TestAudit(t *testing.T) {
	f := startFleet(t)
	code, _, errOut := f.ctl(t, "retention", "run", "--dry-run", "--actor", "alice")
	require.Equal(t, exitOK, code, errOut)
	code, _, errOut = f.ctl(t, "retention", "run", "--dry-run", "--actor", "bob")
	require.Equal(t, exitOK, code, errOut)

	code, out, errOut := f.ctl(t, "audit", "--json")
	require.Equal(t, exitOK, code, errOut)
	var page ops.AuditPage
	require.NoError(t, json.Unmarshal([]byte(out), &page))
	require.Len(t, page.Actions, 2)
	require.Equal(t, "bob", page.Actions[0].Actor, "newest first")
	require.Equal(t, ops.ActionRetention, page.Actions[0].Action)
	require.Zero(t, page.Next)

	code, out, _ = f.ctl(t, "audit", "--json", "--actor", "alice")
	require.Equal(t, exitOK, code)
	require.NoError(t, json.Unmarshal([]byte(out), &page))
	require.Len(t, page.Actions, 1)

	code, out, _ = f.ctl(t, "audit", "--limit", "1")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "bob")
	require.Contains(t, out, "more: --before")

	code, _, _ = f.ctl(t, "audit", "--limit", "0")
	require.Equal(t, exitUsage, code)
}
