package localstack

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/paystream/paystream/internal/testenv/pgcluster"
)

// Console is a running `paystreamctl console` of the stack.
type Console struct {
	*Process
	// URL is the console's base URL (http://127.0.0.1:port/).
	URL string
	// User and Password are the basic-auth credentials of its one user.
	User, Password string
}

// StartConsole starts `paystreamctl console` against the stack, with
// actions allowed for one basic-auth user ("dev", a random password written
// bcrypt-hashed to Dir/console-users), and waits until it answers /healthz.
func (s *Stack) StartConsole(ctx context.Context, args ...string) (*Console, error) {
	raw := make([]byte, 12)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("localstack: console password: %w", err)
	}
	c := &Console{User: "dev", Password: base64.RawURLEncoding.EncodeToString(raw)}
	hash, err := bcrypt.GenerateFromPassword([]byte(c.Password), bcrypt.DefaultCost)
	if err != nil {
		return nil, fmt.Errorf("localstack: console password: %w", err)
	}
	users := filepath.Join(s.dir, "console-users")
	if err := os.WriteFile(users, []byte(c.User+":"+string(hash)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("localstack: %w", err)
	}
	var lastErr error
	for range 3 {
		port, err := pgcluster.FreePort()
		if err != nil {
			return nil, fmt.Errorf("localstack: %w", err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		p, err := s.start("console", BinPaystreamctl, addr,
			append([]string{"console", "--addr", addr, "--allow-actions", "--basic-auth-file", users}, args...),
			map[string]string{"PAYSTREAM_NATS_URL": s.NATSURL(), "PAYSTREAM_DATABASE_URL": s.dbURL})
		if err != nil {
			return nil, err
		}
		if lastErr = s.waitHTTP(ctx, p, "http://"+addr+"/healthz"); lastErr == nil {
			c.Process, c.URL = p, "http://"+addr+"/"
			s.logf("console      %s", c.URL)
			return c, nil
		}
		p.stop(5 * time.Second)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("localstack: console: %w", lastErr)
}
