package main

import (
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRunArguments(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--nope"}, "flag provided but not defined"},
		{"extra argument", []string{"now"}, "unexpected arguments"},
		{"bad duration", []string{"--load-duration", "long"}, "invalid value"},
		{"missing binaries", []string{"--bin", "/nonexistent"}, "make build nats-server"},
		{"unknown scenario", []string{"--scenarios", "main,nope"}, `unknown scenario "nope"`},
		{"missing binaries, infrastructure scenario", []string{"--bin", "/nonexistent", "--scenarios", "net-latency"}, "make build nats-server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := run(t.Context(), tc.args, io.Discard, io.Discard)
			require.ErrorContains(t, err, tc.want)
		})
	}
	require.ErrorIs(t, run(t.Context(), []string{"-h"}, io.Discard, io.Discard), flag.ErrHelp)
}
