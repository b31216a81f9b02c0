package pgtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/paystream/paystream/internal/testenv/pgcluster"
)

// TLSFiles are the PEM files of a throwaway certificate authority and of a
// server certificate for localhost and 127.0.0.1 that it signed.
type TLSFiles struct {
	// CA is the CA certificate: sslrootcert= of a client that verifies
	// the server.
	CA string
	// Cert and Key are the server's certificate and private key (key
	// mode 0600).
	Cert, Key string
}

// NewTLSFiles writes a fresh CA and server certificate, valid for a day,
// into dir (created if missing).
func NewTLSFiles(dir string) (TLSFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return TLSFiles{}, err
	}
	write := func(name, typ string, der []byte, mode os.FileMode) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return TLSFiles{}, err
	}
	serial := func() *big.Int {
		n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62)) // crypto/rand does not fail
		return n
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "paystream pgtest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return TLSFiles{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return TLSFiles{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return TLSFiles{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return TLSFiles{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return TLSFiles{}, err
	}
	var f TLSFiles
	if f.CA, err = write("ca.crt", "CERTIFICATE", caDER, 0o644); err != nil {
		return TLSFiles{}, err
	}
	if f.Cert, err = write("server.crt", "CERTIFICATE", certDER, 0o644); err != nil {
		return TLSFiles{}, err
	}
	if f.Key, err = write("server.key", "PRIVATE KEY", keyDER, 0o600); err != nil {
		return TLSFiles{}, err
	}
	return f, nil
}

// TLSServer is a throwaway cluster of a test's own that accepts TCP
// connections over TLS only (pg_hba.conf has hostssl lines and no host
// line), with a server certificate for localhost and 127.0.0.1 from a
// throwaway CA. Unlike the shared server of NewDatabase it is started per
// call, and it has no template database.
type TLSServer struct {
	// Files are the CA and the server's certificate and key.
	Files   TLSFiles
	cluster *pgcluster.Cluster
}

// StartTLS starts a TLSServer for tb and stops it when tb ends. It fails
// tb when the PostgreSQL binaries are missing.
func StartTLS(tb testing.TB) *TLSServer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := startTLS(ctx)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() { _ = s.cluster.Stop() })
	return s
}

// hbaTLSOnly admits TCP clients over TLS only; the Unix socket stays open
// to the server's own tools.
const hbaTLSOnly = `# pgtest.StartTLS: TLS only
local    all all              trust
hostssl  all all 127.0.0.1/32 trust
hostssl  all all ::1/128      trust
`

func startTLS(ctx context.Context) (*TLSServer, error) {
	c, err := pgcluster.Start(ctx, pgcluster.Config{DirPrefix: dirPrefix + "tls-"})
	if err != nil {
		return nil, err
	}
	s := &TLSServer{cluster: c}
	if err := s.enableTLS(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return s, nil
}

// enableTLS writes the certificates where the server's user can read them,
// turns ssl on, replaces pg_hba.conf by hbaTLSOnly, reloads the
// configuration, and waits until a verify-full connection succeeds.
func (s *TLSServer) enableTLS(ctx context.Context) error {
	dir := filepath.Join(s.cluster.Dir(), "tls")
	f, err := NewTLSFiles(dir)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	s.Files = f
	// The server runs as the owner of its directory (user postgres when
	// the tests run as root), and refuses a key that another user owns
	// with mode 0600.
	fi, err := os.Stat(s.cluster.Dir())
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no owner of the cluster directory")
	}
	for _, p := range []string{dir, f.CA, f.Cert, f.Key} {
		if err := os.Chown(p, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}

	conn, err := pgconn.Connect(ctx, s.cluster.URL())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, stmt := range []string{
		"ALTER SYSTEM SET ssl_cert_file = " + quote(f.Cert),
		"ALTER SYSTEM SET ssl_key_file = " + quote(f.Key),
		"ALTER SYSTEM SET ssl = on",
	} {
		// One statement per query: ALTER SYSTEM refuses a transaction.
		if _, err := conn.Exec(ctx, stmt).ReadAll(); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	// Written as root the file keeps its owner (the server's user).
	if err := os.WriteFile(filepath.Join(s.cluster.Dir(), "data", "pg_hba.conf"), []byte(hbaTLSOnly), 0o600); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()").ReadAll(); err != nil {
		return err
	}

	// The postmaster reloads asynchronously: poll until TLS answers.
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := pgconn.Connect(cctx, s.URL("localhost", "postgres", "sslmode=verify-full"))
		cancel()
		if err == nil {
			return c.Close(ctx)
		}
		select {
		case <-t.C:
		case <-deadline:
			log, _ := os.ReadFile(s.cluster.LogPath())
			return fmt.Errorf("the server does not serve TLS after a reload: %w\n%s", err, log)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func quote(s string) string { return "'" + s + "'" } // paths of our own: no quote inside

// URL returns the URL of database db on host (localhost, 127.0.0.1 or any
// name a custom resolver maps to the server) as the superuser postgres.
// query holds the connection parameters, e.g. "sslmode=verify-full";
// sslrootcert is set to the CA unless query names one.
func (s *TLSServer) URL(host, db, query string) string {
	q, _ := url.ParseQuery(query)
	if q.Get("sslrootcert") == "" {
		q.Set("sslrootcert", s.Files.CA)
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort(host, strconv.Itoa(s.cluster.Port())),
		Path:     "/" + db,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// Port returns the server's TCP port.
func (s *TLSServer) Port() int { return s.cluster.Port() }

// NewDatabase creates an empty database (no migrations) and returns its
// verify-full URL on localhost. It is dropped when tb ends.
func (s *TLSServer) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := "test_" + randomHex(8)
	admin := s.URL("localhost", "postgres", "sslmode=verify-full")
	exec := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgconn.Connect(ctx, admin)
		if err != nil {
			return err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		_, err = conn.Exec(ctx, sql).ReadAll()
		return err
	}
	if err := exec("CREATE DATABASE " + pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if err := exec("DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return s.URL("localhost", name, "sslmode=verify-full")
}
