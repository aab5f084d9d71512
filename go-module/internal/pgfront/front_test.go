package pgfront

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// These tests run the front against a real PostgreSQL (started here, like the e2e suite does)
// with pgconn as the client. The Authenticator stands in for the Rust gateway: it hands out a
// role the test created, so what is tested is the protocol work of this package.

const testRole, testPassword = "front_user", "front-password-1"

// postgres starts a throwaway cluster and returns its TCP port and socket directory.
func postgres(t *testing.T) (port int, socketDir string) {
	t.Helper()
	bin := ""
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			bin = dirs[i]
			break
		}
	}
	if bin == "" {
		t.Fatal("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): .ci/run installs it")
	}
	dir, err := os.MkdirTemp("", "pgfront-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// PostgreSQL refuses to run as root: then run it as the postgres user.
	asUser := func(name string, args ...string) *exec.Cmd {
		if os.Geteuid() != 0 {
			return exec.Command(name, args...)
		}
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := asUser(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"--auth-host=scram-sha-256", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := asUser(filepath.Join(bin, "postgres"), "-D", data, "-k", dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off")
	logf, _ := os.Create(filepath.Join(dir, "log"))
	srv.Stdout, srv.Stderr = logf, logf
	// Its own process group, so the stop signal reaches postgres through runuser.
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-srv.Process.Pid, syscall.SIGINT) // fast shutdown
		stop := time.AfterFunc(10*time.Second, func() { _ = syscall.Kill(-srv.Process.Pid, syscall.SIGKILL) })
		_ = srv.Wait()
		stop.Stop()
		logf.Close()
	})
	psql := func(sql string) {
		t.Helper()
		var out []byte
		var err error
		for range 100 {
			out, err = exec.Command(filepath.Join(bin, "psql"), "-h", dir, "-p", strconv.Itoa(port), "-U", "postgres",
				"-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "connect") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("psql %q: %v\n%s", sql, err, out)
		}
	}
	psql(fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", testRole, testPassword))
	return port, dir
}

// staticAuth logs every valid token in as the test role; "bad" is refused.
type staticAuth struct {
	deadline time.Duration
	calls    atomic.Int32
	password func(fresh bool) string
}

func (a *staticAuth) Authenticate(_ context.Context, token string, s *Session, fresh bool) (*Login, error) {
	a.calls.Add(1)
	if token == "bad" {
		return nil, &Refusal{SQLState: "28P01", Message: "token rejected: bad_signature"}
	}
	s.Identity = "alice"
	l := &Login{Role: testRole, Password: testPassword}
	if a.password != nil {
		l.Password = a.password(fresh)
	}
	if a.deadline > 0 {
		l.Deadline = time.Now().Add(a.deadline)
	}
	return l, nil
}

// serve runs a front on a loopback listener, terminating TLS after an SSLRequest the way
// caddy-l4's postgres_tls and tls handlers do. It returns the address and the sessions seen.
func serve(t *testing.T, f *Front) (addr string, sessions func() []*Session) {
	t.Helper()
	cert := selfSigned(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var seen []*Session
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				var conn net.Conn = c
				encrypted := false
				var head [8]byte
				if _, err := io.ReadFull(c, head[:]); err != nil {
					c.Close()
					return
				}
				if binary.BigEndian.Uint32(head[4:]) == 80877103 { // SSLRequest
					_, _ = c.Write([]byte{'S'})
					tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
					if tc.Handshake() != nil {
						c.Close()
						return
					}
					conn, encrypted = tc, true
				} else {
					conn = &prefixed{Conn: c, head: head[:]}
				}
				_ = f.Serve(context.Background(), conn, encrypted, Hooks{
					Ended: func(s *Session) { mu.Lock(); seen = append(seen, s); mu.Unlock() },
				})
			}()
		}
	}()
	return l.Addr().String(), func() []*Session { mu.Lock(); defer mu.Unlock(); return append([]*Session(nil), seen...) }
}

// prefixed replays bytes already read from a connection.
type prefixed struct {
	net.Conn
	head []byte
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		p.head = p.head[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

func newFront(t *testing.T, auth Authenticator) *Front {
	port, _ := postgres(t)
	up, err := pgconn.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres sslmode=disable", port))
	if err != nil {
		t.Fatal(err)
	}
	return &Front{Upstream: up, Auth: auth, Cancels: NewCancelRegistry(), StartupTimeout: 10 * time.Second}
}

func clientConfig(t *testing.T, addr, token, sslmode string) *pgconn.Config {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s user=alice dbname=postgres sslmode=%s connect_timeout=10", host, port, sslmode))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = token
	return cfg
}

func TestFront(t *testing.T) {
	auth := &staticAuth{}
	f := newFront(t, auth)
	addr, sessions := serve(t, f)
	ctx := context.Background()

	t.Run("login relays a session as the minted role", func(t *testing.T) {
		conn, err := pgconn.ConnectConfig(ctx, clientConfig(t, addr, "good", "require"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := conn.Exec(ctx, "SELECT current_user, session_user").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if got := string(res[0].Rows[0][0]) + "," + string(res[0].Rows[0][1]); got != testRole+","+testRole {
			t.Fatalf("current_user, session_user = %s", got)
		}
		// The cancel key the client holds is the front's, not the server's.
		if conn.PID() == 0 {
			t.Fatal("no BackendKeyData")
		}
		conn.Close(ctx)
		waitFor(t, func() bool { return len(sessions()) == 1 })
		s := sessions()[0]
		if s.BytesIn == 0 || s.BytesOut == 0 || s.EndReason != "client closed" {
			t.Fatalf("session record: %+v", s)
		}
	})

	t.Run("cancel reaches the right backend", func(t *testing.T) {
		conn, err := pgconn.ConnectConfig(ctx, clientConfig(t, addr, "good", "require"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		go func() {
			time.Sleep(500 * time.Millisecond)
			_ = conn.CancelRequest(ctx)
		}()
		start := time.Now()
		_, err = conn.Exec(ctx, "SELECT pg_sleep(20)").ReadAll()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
			t.Fatalf("want query_canceled, got %v", err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("cancel took %s", took)
		}
	})

	t.Run("refusals reach the client as ErrorResponses", func(t *testing.T) {
		for _, tc := range []struct{ token, sslmode, code, text string }{
			{"bad", "require", "28P01", "bad_signature"},
			{"good", "disable", "28000", "requires an encrypted connection"},
			{"", "require", "28P01", "no token"},
		} {
			calls := auth.calls.Load()
			_, err := pgconn.ConnectConfig(ctx, clientConfig(t, addr, tc.token, tc.sslmode))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != tc.code || !strings.Contains(pgErr.Message, tc.text) {
				t.Errorf("token %q sslmode %s: want %s %q, got %v", tc.token, tc.sslmode, tc.code, tc.text, err)
			}
			if tc.sslmode == "disable" && auth.calls.Load() != calls {
				t.Error("a plaintext client was asked for its password")
			}
		}
	})
}

func TestFrontEndsSessionAtDeadline(t *testing.T) {
	f := newFront(t, &staticAuth{deadline: 1500 * time.Millisecond})
	addr, sessions := serve(t, f)
	ctx := context.Background()
	conn, err := pgconn.ConnectConfig(ctx, clientConfig(t, addr, "good", "require"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if _, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err == nil {
		t.Fatal("session still usable after its deadline")
	}
	waitFor(t, func() bool { return len(sessions()) == 1 && sessions()[0].EndReason == "deadline" })
}

func TestFrontRetriesOnceWithFreshCredential(t *testing.T) {
	// The first (cached) password is stale, as when another gateway re-minted the role's.
	auth := &staticAuth{password: func(fresh bool) string {
		if fresh {
			return testPassword
		}
		return "stale"
	}}
	f := newFront(t, auth)
	addr, _ := serve(t, f)
	ctx := context.Background()
	conn, err := pgconn.ConnectConfig(ctx, clientConfig(t, addr, "good", "require"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if n := auth.calls.Load(); n != 2 {
		t.Fatalf("Authenticate called %d times, want 2", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 100 {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("condition not met in 5s")
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTerminateWatcherSeesTheLastMessageOnly(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes [][]byte
		want   bool
	}{
		{"one write", [][]byte{{'Q', 0, 0, 0, 5, 0}, {'X', 0, 0, 0, 4}}, true},
		{"split across writes", [][]byte{{'Q', 0, 0, 0, 5, 0, 'X', 0}, {0}, {0, 4}}, true},
		{"query after terminate-like bytes", [][]byte{{'X', 0, 0, 0, 4}, {'Q', 0, 0, 0, 5, 0}}, false},
		{"no terminate", [][]byte{{'Q', 0, 0, 0, 5, 0}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &terminateWatcher{Writer: io.Discard}
			for _, p := range tc.writes {
				if _, err := w.Write(p); err != nil {
					t.Fatal(err)
				}
			}
			if got := w.sawTerminate.Load(); got != tc.want {
				t.Fatalf("sawTerminate = %v, want %v", got, tc.want)
			}
		})
	}
}
