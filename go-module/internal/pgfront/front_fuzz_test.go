package pgfront

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// scriptedConn is a client that sends fixed bytes, then nothing (reads end with EOF), and
// keeps what the front wrote back.
type scriptedConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *scriptedConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *scriptedConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *scriptedConn) Close() error                     { return nil }
func (c *scriptedConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptedConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptedConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedConn) SetWriteDeadline(time.Time) error { return nil }

var _ io.ReadWriteCloser = (*scriptedConn)(nil)

// recordingAuth refuses every login and records the tokens it was asked about.
type recordingAuth struct {
	mu     sync.Mutex
	tokens []string
}

func (a *recordingAuth) Authenticate(_ context.Context, token string, _ *Session, _ bool) (*Login, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens = append(a.tokens, token)
	return nil, &Refusal{SQLState: "28P01", Message: "token rejected"}
}

// msg frames a PostgreSQL message: a type byte (none for startup messages) and a length.
func msg(typ byte, body []byte) []byte {
	var b []byte
	if typ != 0 {
		b = append(b, typ)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(4+len(body)))
	return append(b, body...)
}

func startupBody(params ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, 196608) // protocol 3.0
	for _, p := range params {
		b = append(append(b, p...), 0)
	}
	return append(b, 0)
}

// FuzzStartup feeds arbitrary client bytes to the front (the startup and password messages
// and whatever follows) and checks what it must never do:
//   - panic, or hang past its startup deadline;
//   - ask for a password, or hand anything to the Authenticator, on a connection that is not
//     encrypted (a token must never cross the network in the clear);
//   - pass the Authenticator anything but the trimmed, non-empty password of a well-formed
//     password message.
//
// testdata/fuzz/FuzzStartup holds what a CPU-hour of `go test -fuzz` found interesting; plain
// `go test` runs it.
func FuzzStartup(f *testing.F) {
	good := append(msg(0, startupBody("user", "alice", "database", "app")), msg('p', []byte("eyJ.a.b\x00"))...)
	f.Add(good, true)
	f.Add(good, false)
	f.Add(append(msg(0, binary.BigEndian.AppendUint32(nil, 80877103)), good...), false) // SSLRequest first
	f.Add(msg(0, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 80877102), 1)), true)
	f.Add(append(msg(0, startupBody("user", "a", "replication", "true")), msg('p', []byte("t\x00"))...), true)
	f.Add(append(msg(0, startupBody("user", "a")), msg('p', []byte("  \x00"))...), true)
	f.Add([]byte{0, 0, 0, 8, 0, 0, 0, 0}, true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, true)
	// A password message declaring a 1 GiB body: refused before anything is allocated.
	f.Add(append(msg(0, startupBody("user", "a")), 'p', 0x40, 0, 0, 0), true)

	f.Fuzz(func(t *testing.T, input []byte, encrypted bool) {
		auth := &recordingAuth{}
		front := &Front{Auth: auth, Cancels: NewCancelRegistry(), StartupTimeout: 2 * time.Second}
		conn := &scriptedConn{in: bytes.NewReader(input)}
		done := make(chan struct{})
		go func() {
			_ = front.Serve(context.Background(), conn, encrypted, Hooks{})
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return once the client's bytes ran out")
		}
		out := &conn.out

		if !encrypted {
			if len(auth.tokens) != 0 {
				t.Fatalf("the Authenticator was asked on a plaintext connection: %q", auth.tokens)
			}
			// AuthenticationCleartextPassword is 'R', length 8, code 3.
			if bytes.Contains(out.Bytes(), []byte{'R', 0, 0, 0, 8, 0, 0, 0, 3}) {
				t.Fatal("a password was asked for on a plaintext connection")
			}
		}
		if len(input) < maxPasswordBody && len(auth.tokens) > 0 && len(auth.tokens[0]) > maxPasswordBody {
			t.Fatal("a token longer than the password limit was read")
		}
		for _, tok := range auth.tokens {
			if tok == "" || tok != strings.TrimSpace(tok) || strings.ContainsRune(tok, 0) {
				t.Fatalf("the Authenticator got %q", tok)
			}
		}
	})
}

// TestPasswordMessageSizeIsBounded: a client declaring a huge password message is refused
// without the front allocating it.
func TestPasswordMessageSizeIsBounded(t *testing.T) {
	input := append(msg(0, startupBody("user", "a")), 'p', 0x7f, 0xff, 0xff, 0xff)
	front := &Front{Auth: &recordingAuth{}, Cancels: NewCancelRegistry(), StartupTimeout: 2 * time.Second}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := front.Serve(context.Background(), &scriptedConn{in: bytes.NewReader(input)}, true, Hooks{})
	runtime.ReadMemStats(&after)
	if exceeded := new(pgproto3.ExceededMaxBodyLenErr); !errors.As(err, &exceeded) {
		t.Fatalf("Serve = %v, want a body-length refusal", err)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 16<<20 {
		t.Fatalf("allocated %d bytes for a refused message", grown)
	}
}
