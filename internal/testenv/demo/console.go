package demo

import (
	"context"
	"fmt"
	"net/url"
)

// consoleLine starts the operator console on the dev stack and returns the
// line `make dev` prints for it: its URL, with the local user's
// credentials (actions allowed: replays are audited as "dev").
func consoleLine(ctx context.Context, s *stack) string {
	c, err := s.StartConsole(ctx)
	if err != nil {
		return fmt.Sprintf("  console:  not started: %v\n", err)
	}
	u, _ := url.Parse(c.URL)
	u.User = url.UserPassword(c.User, c.Password)
	return fmt.Sprintf("  console:  %s   (user %s, password %s; actions allowed; or open %s)\n", c.URL, c.User, c.Password, u)
}
